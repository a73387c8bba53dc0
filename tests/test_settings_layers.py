"""The user's config file found automatically, the remembered library, and where every value came from."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from recsys.cli import main
from recsys.config import as_dict, as_yaml, load_settings, remembered_origins
from recsys.home.claim import MARKER, claim_home
from recsys.home.remembered import given_library, read_remembered, remember


def test_user_config_file_is_found_and_config_replaces_it(tmp_path):
    xdg = tmp_path / "xdg"
    (xdg / "recsys").mkdir(parents=True)
    (xdg / "recsys" / "config.yaml").write_text("embed:\n  workers: 3\n")
    s = load_settings(environ={"XDG_CONFIG_HOME": str(xdg)})
    assert s.embed.workers == 3 and s.origins["embed.workers"].endswith("config.yaml, line 2")
    home_style = tmp_path / "home"
    (home_style / ".config" / "recsys").mkdir(parents=True)
    (home_style / ".config" / "recsys" / "config.yaml").write_text("embed:\n  workers: 5\n")
    assert load_settings(environ={"HOME": str(home_style)}).embed.workers == 5
    other = tmp_path / "other.yaml"
    other.write_text("embed:\n  batch_size: 7\n")
    s = load_settings(other, environ={"XDG_CONFIG_HOME": str(xdg)})
    assert (s.embed.workers, s.embed.batch_size) == (0, 7)  # --config is read instead, not as well
    assert load_settings(environ={}).embed.workers == 0


def test_remembered_library_is_a_layer_between_the_file_and_the_environment(tmp_path):
    home = tmp_path / "home"
    assert remember(home, given_library(None, ("~/m",))) is None and not home.exists()  # never creates the home
    home.mkdir()
    line = remember(home, given_library(None, (str(tmp_path / "music"),)))
    assert line == (f"remembered for the next commands: no database, --library {tmp_path / 'music'} "
                    f"(in {home / 'remembered.json'})")
    assert remember(home, given_library(None, (str(tmp_path / "music"),))) is None  # unchanged: nothing to say
    user = tmp_path / "user.yaml"
    user.write_text("library:\n  folders: [/from/file]\n  db: /file.db\n")
    s = load_settings(user, overrides={"home": str(home)}, environ={})
    assert s.library.folders == [str(tmp_path / "music")] and s.library.db is None
    assert set(remembered_origins(s)) == {"library.db", "library.folders"}
    s = load_settings(user, overrides={"home": str(home)}, environ={"RECSYS_LIBRARY__FOLDERS": "/env"})
    assert s.library.folders == ["/env"] and list(remembered_origins(s)) == ["library.db"]
    s = load_settings(overrides={"home": str(home), "library": {"db": "/flag.db"}}, environ={})
    assert s.library.db == "/flag.db" and s.library.folders == [str(tmp_path / "music")]
    line = remember(home, given_library(str(tmp_path / "x.db"), ()))
    assert line.startswith(f"remembered for the next commands: --db {tmp_path / 'x.db'} (was no database)")
    assert f", --library {tmp_path / 'music'} (kept) (in " in line  # the whole library the next commands read
    assert read_remembered(home) == {"db": str(tmp_path / "x.db"), "folders": [str(tmp_path / "music")]}
    (home / "remembered.json").write_text("{broken")
    assert read_remembered(home) == {} and load_settings(overrides={"home": str(home)}, environ={}).library.db is None


def test_config_shows_where_each_value_came_from(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("recommend:\n  top_n: 30\n")
    s = load_settings(user, overrides={"home": str(tmp_path), "embed": {"workers": 2}},
                      environ={"RECSYS_INDEX__HNSW_M": "16"})
    text = as_yaml(s)
    assert f"  top_n: 30  # config file {user}, line 2\n" in text
    assert "  workers: 2  # the command line, --workers\n" in text
    assert "  hnsw_m: 16  # environment variable RECSYS_INDEX__HNSW_M\n" in text
    assert "  max_per_album: 3  # default\n" in text and f"home: {tmp_path}  # --home or RECSYS_HOME\n" in text
    assert yaml.safe_load(text) == {**as_dict(s), "home": str(tmp_path)}  # still a config file to copy


def test_config_forget_removes_only_the_remembered_library(tmp_path, monkeypatch):
    for name in ("RECSYS_LIBRARY__DB", "RECSYS_LIBRARY__FOLDERS", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/recsys/config.yaml of the user running the tests
    home, music = tmp_path / "home", tmp_path / "music"
    claim_home(home)  # remembered only in a home recsys made (recsys.home.claim)
    (home / "other.json").write_text("{}")
    user = tmp_path / "user.yaml"
    user.write_text("library:\n  folders: [/from/file]\n")

    def config(*args: str):
        return CliRunner().invoke(main, ["--home", str(home), "--config", str(user), "config", *args],
                                  catch_exceptions=False)

    remember(home, given_library(str(tmp_path / "x.db"), (str(music),)))
    shown = config().output
    assert f"  folders: [{music}]  # remembered in {home / 'remembered.json'}" in shown
    r = config("--forget")
    assert r.exit_code == 0 and r.output.splitlines() == [
        f"forgot the remembered library: --db {tmp_path / 'x.db'}, --library {music} (removed "
        f"{home / 'remembered.json'}); the next commands read the library of your config file, the environment or "
        "the defaults, or the --db/--library they are given"]
    assert sorted(p.name for p in home.iterdir()) == [MARKER, "other.json"]  # that file only: no lock, nothing else
    shown = config().output
    assert "remembered" not in shown and f"  folders: [/from/file]  # config file {user}, line 2" in shown
    assert "  db: null  # default" in shown
    assert config("--defaults", "--forget").exit_code == 2  # a usage error: one or the other
    r = config("--forget")
    assert r.exit_code == 0 and r.output == f"nothing was remembered ({home / 'remembered.json'} does not exist)\n"
    (home / "remembered.json").write_text("{broken")
    assert "held nothing readable" in config("--forget").output and not (home / "remembered.json").exists()
    r = CliRunner().invoke(main, ["--home", str(tmp_path / "none"), "config", "--forget"], catch_exceptions=False)
    assert r.exit_code == 0 and "nothing was remembered" in r.output and not (tmp_path / "none").exists()
    (home / "remembered.json").mkdir()
    r = config("--forget")
    assert r.exit_code == 1 and r.output.startswith("recsys: error: ") and "is a folder" in r.output
    assert r.output.count("\n") == 1 and (home / "remembered.json").is_dir()


def test_a_remembered_subsonic_server_and_user_and_what_replaces_them(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    line = remember(home, given_library(None, (), "http://music.local:4533"), "me")
    assert line == ("remembered for the next commands: no database, no folders, --subsonic http://music.local:4533, "
                    f"--subsonic-user me (in {home / 'remembered.json'})")
    s = load_settings(overrides={"home": str(home)}, environ={})
    assert (s.library.subsonic, s.subsonic.user, s.library.db, s.library.folders) == \
        ("http://music.local:4533", "me", None, [])
    assert s.origins["subsonic.user"].startswith("remembered in ")
    line = remember(home, given_library(None, (str(tmp_path / "music"),)))
    assert "no Subsonic server (was --subsonic http://music.local:4533)" in line
    s = load_settings(overrides={"home": str(home)}, environ={})
    assert (s.library.subsonic, s.subsonic.user, s.library.folders) == (None, None, [str(tmp_path / "music")])
    assert "password" not in (home / "remembered.json").read_text()
