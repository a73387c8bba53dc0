"""The notes a command prints say what is true: the remembered library is named only when it is the one used."""

from __future__ import annotations

from recsys.app.settings import command_settings, remembered_note
from recsys.home.remembered import given_library, remember


def test_library_given_alone_is_not_called_the_remembered_one(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    music = tmp_path / "music"
    music.mkdir()
    db = tmp_path / "clementine.db"
    db.write_bytes(b"")
    remember(home, given_library(str(db), ()))  # an earlier command's --db
    remembered = command_settings(None, str(home))
    assert remembered.library.db == str(db) and "remembered" in (remembered_note(remembered) or "")
    # `embed --library DIR`: the folders alone; on main the note said 'using the library remembered ...: no database'
    given = command_settings(None, str(home), folders=[str(music)])
    assert given.library.db is None
    assert remembered_note(given) is None
