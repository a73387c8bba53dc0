"""The settings a command runs with, built once for every command: the layers of :mod:`recsys.config` (defaults <
user file < remembered library < environment < flags) plus the one rule that joins the library flags.

The rule: ``--library DIR`` without ``--db`` means the folders alone (the player database is then not looked for),
whatever the config file or environment name as ``library.db``; ``--subsonic URL`` without either means the
server alone, and ``--db`` or ``--library`` without ``--subsonic`` no server. The library flags a command was given are
remembered in the home (:mod:`recsys.home.remembered`) once the command succeeded, so later commands need none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recsys.config import Settings, load_settings, remembered_origins
from recsys.guard import Inputs
from recsys.home.remembered import describe, forget, given_library, remember
from recsys.library.filters import HELP as WHERE_HELP  # the --where flag's help, for the commands that take it

__all__ = ["WHERE_HELP", "command_settings", "forget_library", "library_inputs", "remember_library",
           "remembered_note"]


def command_settings(config_file: str | None, home: str | None, *, db: str | None = None,
                     folders: Sequence[str] = (), subsonic: str | None = None, subsonic_user: str | None = None,
                     **overrides: dict[str, Any]) -> Settings:
    """Settings for one command: ``home`` and ``config_file`` from the global options, ``db``, ``folders`` and
    ``subsonic`` (URL, user) from ``--db``/``--library``/``--subsonic``/``--subsonic-user``, ``overrides`` as
    ``{"section": {"key": flag value or None}}``."""
    if subsonic:
        from recsys.servers.subsonic import normalise_url

        subsonic = normalise_url(subsonic)
    library = {"db": db, "folders": list(folders) or None, "subsonic": subsonic}
    server = {**overrides.pop("subsonic", {}), "user": subsonic_user}
    settings = load_settings(config_file, overrides={"home": home, "library": library, "subsonic": server,
                                                     **overrides})
    if folders and not db:
        settings.library.db = None
        settings.origins["library.db"] = "--library without --db (the folders alone)"
    if subsonic and not db:
        settings.library.db = None
        settings.library.folders = list(folders)
    elif (db or folders) and not subsonic:
        settings.library.subsonic = None
    return settings


def library_inputs(settings: Settings) -> Inputs:
    """The library's database (given, or the one found at its usual place) and folders: what the home and every file
    recsys writes must keep clear of (:mod:`recsys.guard`, :mod:`recsys.home.claim`)."""
    from recsys.library.sources import library_db

    return Inputs(library_db(settings.library.db, settings.library.folders), tuple(settings.library.folders or ()))


def remembered_note(settings: Settings) -> str | None:
    """The line saying which library values come from an earlier command (None when none do)."""
    origins = remembered_origins(settings)
    if not origins:
        return None
    server = settings.library.subsonic  # with a server, an empty db or folders goes without saying
    keys = [k for k in ("db", "folders", "subsonic") if f"library.{k}" in origins
            and (not server or getattr(settings.library, k))]
    shown = ", ".join(describe(k, getattr(settings.library, k)) for k in keys)
    where = next(iter(origins.values())).removeprefix("remembered in ")
    return f"using the library remembered from an earlier command: {shown} ({where}; give --db, --library or " \
           "--subsonic to replace it)"


def remember_library(settings: Settings, db: str | None, folders: Sequence[str], subsonic: str | None = None
                     ) -> str | None:
    """Remember the ``--db``/``--library``/``--subsonic`` a command succeeded with (and the Subsonic user in force
    with it); the line to show, or None when unchanged."""
    server = settings.library.subsonic if subsonic else None
    return remember(settings.home_path, given_library(db, tuple(folders), server),
                    settings.subsonic.user if server else None)


def forget_library(config_file: str | None, home: str | None) -> str:
    """Forget the remembered ``--db``/``--library`` (``recsys config --forget``); the line saying what was forgotten.

    The settings are built without the remembered layer: a remembered value that stops every command (a database
    that is a FIFO) must not stop the one command that removes it."""
    return forget(load_settings(config_file, overrides={"home": home}, remembered=False).home_path)


def mpd_library(address: str) -> str:
    """The ``library.db`` value naming the MPD server at ``address`` (``--mpd``): ``mpd://HOST:PORT``."""
    from recsys.servers.mpd import parse_address

    return parse_address(address).url
