"""Integrity round 3 (issue 21), hostile settings and unbounded work: a remembered.json or config file built to break
recsys, a FIFO where a file should be, counts of 2**40, NaN, control characters in labels, a player whose MPRIS
metadata has the wrong D-Bus types. Each gets one short line and a non-zero exit (or is made harmless), never an
internal error, a hang or minutes of work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from recsys.cli import main
from recsys.config import ConfigError, load_settings
from recsys.library.filters import FilterError, parse
from recsys.playlists import PlaylistEntry
from recsys.playlists.m3u8 import encode
from recsys.recommender.neighbours import exact_search
from recsys.recommender.path import PathError, TrackFacts, song_path

SHORT = 400  # an error line a person can read


def _cli(home, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["--home", str(home), *args], env=env)


def _error_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    return lines[-1]


def test_a_hostile_remembered_json_disables_nothing_and_forget_removes_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    remembered = home / "remembered.json"
    remembered.write_text('{"library": ' + "[" * 100_000 + "]" * 100_000 + "}")  # RecursionError in json
    shown = _cli(home, "config")
    assert shown.exit_code == 0 and "internal error" not in shown.output, shown.output
    forgot = _cli(home, "config", "--forget")
    assert forgot.exit_code == 0 and "removed" in forgot.output and not remembered.exists(), forgot.output
    remembered.write_bytes(b'{"library": {"db": "' + b"x" * (2 << 20) + b'"}}')  # larger than any recsys writes
    assert _cli(home, "config").exit_code == 0
    assert _cli(home, "config", "--forget").exit_code == 0 and not remembered.exists()
    remembered.write_text(json.dumps({"library": {"folders": [f"/m/{i}" for i in range(5000)]}}))
    line = _error_line(_cli(home, "status"))
    assert "library.folders has 5000 items, more than the 1000 it takes (remembered in " in line, line
    assert line.endswith("`recsys config --forget` forgets it") and len(line) < SHORT
    assert _cli(home, "config", "--forget").exit_code == 0 and not remembered.exists()


def test_a_fifo_as_config_file_remembered_database_or_seed_playlist_is_refused_not_waited_on(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: recsys must refuse it unopened. Run in a child process
    so that a hang fails the test instead of stopping the suite."""
    home = tmp_path / "home"
    home.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (home / "remembered.json").write_text(json.dumps({"library": {"db": str(fifo)}}))
    code = textwrap.dedent("""
        import sys
        from recsys.cli import main
        from recsys.errors import RecsysError
        from recsys.playlists.read import read_playlist
        try:
            read_playlist(sys.argv[2])
        except RecsysError as exc:
            print(exc, flush=True)
        for args in (["--config", sys.argv[2], "config"], ["status"], ["config", "--forget"], ["status"]):
            try:
                main(["--home", sys.argv[1], *args])
            except SystemExit as exc:
                print("EXIT", exc.code, flush=True)
    """)
    started = time.monotonic()
    try:
        run = subprocess.run([sys.executable, "-c", code, str(home), str(fifo)], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    except subprocess.TimeoutExpired:
        pytest.fail("recsys waited on a FIFO")
    assert time.monotonic() - started < 60
    out = run.stdout + run.stderr
    assert "internal error" not in out, out
    assert f"cannot read playlist {fifo} (not a regular file but a pipe, socket or device)" in out, out
    assert f"config file {fifo} cannot be read: not a regular file" in out, out
    assert f"library.db = '{fifo}' is not a regular file" in out and "`recsys config --forget` forgets it" in out
    assert "forgot the remembered library" in out and not (home / "remembered.json").exists(), out


BILLION_LAUGHS = """\
recommend:
  top_n: [&a [lol,lol,lol,lol,lol,lol,lol,lol,lol], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a],
    &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d],
    &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]]
"""  # 269 bytes; on main: a 39,011,177-character error line after 69 s


@pytest.mark.parametrize(("text", "said"), [
    (BILLION_LAUGHS, "alias *a is not allowed in a settings file"),
    ("embed:\n  workers: " + "9" * 5000 + "\n", "is longer than 40 characters"),
    ("embed: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 8 deep"),
    ("recommend:\n  out_dir: !!binary L3RtcA==\n", "recommend.out_dir: expected text, got b'/tmp'"),
    ("library:\n  db: !!binary L3RtcA==\n", "library.db: expected text, got b'/tmp'"),
    ("recommend:\n  name: 2024-01-01\n", "recommend.name: expected text, got datetime.date(2024, 1, 1) (put it in"),
    ("embed:\n  workers: !!binary MQ==\n", "embed.workers: expected a whole number, got b'1'"),
    ("recommend:\n  name: " + "x" * 300 + "\n", "allowed: text of 1 to 100 characters"),
])
def test_hostile_yaml_is_one_short_line_in_little_time_and_memory(tmp_path, text, said):
    config = tmp_path / "hostile.yaml"
    config.write_text(text)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError) as err:
            load_settings(config, environ={})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert said in message and len(message) < SHORT and "\n" not in message, message[:1000]
    assert peak < 20 << 20 and time.monotonic() - started < 5  # the billion laughs took 400 MB and a 39 MB line


def test_an_oversized_config_file_is_refused_unread(tmp_path):
    config = tmp_path / "big.yaml"
    config.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ConfigError, match=r"big.yaml cannot be read: larger than the 1048576 bytes"):
        load_settings(config, environ={})


def test_every_count_flag_is_bounded_in_help_and_says_what_it_wants(tmp_path):
    home = tmp_path / "home"
    for args, flag, bounds in [
        (["path", "a", "b", "--steps", "1000000"], "--steps", "from 2 to 1000"),
        (["path", "a", "b", "--steps", str(2**40)], "--steps", "from 2 to 1000"),
        (["playlist", "--top-n", "abc"], "--top-n", "'abc': give a whole number from 1 to 10000"),
        (["playlist", "--top-n", "9" * 5000], "--top-n", "give a whole number from 1 to 10000"),
        (["radio", "--top-n", "0"], "--top-n", "from 1 to 10000"),
        (["similar", "x", "-k", str(2**40)], "-k", "from 1 to 10000"),
        (["embed", "--workers", "100000"], "--workers", "from 0 to 1024"),
        (["eval", "--playlist", "--splits", "1000"], "--splits", "from 1 to 100"),
        (["train-classifier", "--seed", str(2**40)], "--seed", "from 0 to 4294967295"),
    ]:
        r = _cli(home, *args)
        assert r.exit_code == 2 and f"Invalid value for '{flag}'" in r.output and bounds in r.output, (args, r.output)
        assert len(r.output.splitlines()[-1]) < SHORT
    assert "2<=x<=1000" in _cli(home, "path", "--help").output
    assert "1<=x<=10000" in _cli(home, "playlist", "--help").output
    with pytest.raises(ConfigError, match=r"recommend.top_n = 1000000000 is not allowed \(allowed: from 1 up to "
                                          r"10000; from environment variable RECSYS_RECOMMEND__TOP_N\)"):
        load_settings(environ={"RECSYS_RECOMMEND__TOP_N": str(10**9)})
    with pytest.raises(ConfigError, match=r"train.channels has 17 items, more than the 16 it takes"):
        load_settings(environ={"RECSYS_TRAIN__CHANNELS": ":".join(["8"] * 17)})
    v = np.eye(4, dtype=np.float32)
    with pytest.raises(PathError, match="at most 1000 tracks"):
        song_path(v, exact_search(v), 0, 1, 10**6, lambda r: TrackFacts(f"a{r}", "", f"t{r}", f"/m/{r}"))


def test_nan_and_infinity_are_refused_by_every_float_flag_setting_and_filter(tmp_path):
    home = tmp_path / "home"
    for args, flag in [(["playlist", "--min-rating", "nan"], "--min-rating"),
                       (["playlist", "--min-rating", "-inf"], "--min-rating"),
                       (["train-encoder", "--lr", "nan"], "--lr"), (["train-encoder", "--lr", "inf"], "--lr")]:
        r = _cli(home, *args)
        assert r.exit_code == 2 and f"Invalid value for '{flag}'" in r.output and "give a finite number" in r.output, \
            (args, r.output)
    with pytest.raises(ConfigError, match="recommend.mmr_lambda = nan is not allowed"):
        load_settings(environ={"RECSYS_RECOMMEND__MMR_LAMBDA": "nan"})
    for term in ("year:nan", "rating:nan..", "played:..inf"):
        with pytest.raises(FilterError, match="takes a number or a range"):
            parse(term)
    assert [t.field for t in parse("GENRE:x Year:1990..").terms] == ["genre", "year"]  # field names: any case
    with pytest.raises(FilterError, match="unknown filter field 'genra' .*valid fields are artist, album"):
        parse("genra:x")


def test_an_unknown_recsys_variable_is_an_error_and_the_documented_ones_work(tmp_path):
    for var in ("RECSYS_FOO", "RECSYS_EMBED__WORKERS__X", "RECSYS_"):
        with pytest.raises(ConfigError, match=f"environment variable '{var}' names no setting: .*unset it"):
            load_settings(environ={var: "1"})
    with pytest.raises(ConfigError, match=r"unknown setting 'embed.nope' \(from environment variable "
                                          r"RECSYS_EMBED__NOPE\)"):
        load_settings(environ={"RECSYS_EMBED__NOPE": "1"})
    s = load_settings(environ={"RECSYS_HOME": str(tmp_path), "RECSYS_DEBUG": "1", "RECSYS_EMBED__WORKERS": "2"})
    assert (s.home_path, s.embed.workers) == (tmp_path, 2)
    r = _cli(tmp_path / "home", "config", env={"RECSYS_FOO": "1"})
    assert "environment variable 'RECSYS_FOO' names no setting" in _error_line(r)


def _ranked(label_title: str) -> PlaylistEntry:
    return PlaylistEntry(key="/m/a.flac", path="/m/a.flac", start_s=0.0, artist="Ann", title=label_title, album="",
                         track_number=None, duration_s=60.0)


def test_m3u8_labels_hold_no_line_break_of_any_reader():
    breaks = "\u2028\u2029\u0085\v\f\x1c\x1d\x1e\r\n\t\x7f"
    data = encode([_ranked(f"one{breaks}two")], title=f"list{breaks}name").decode("utf-8")
    lines = data.splitlines()  # Python's splitlines breaks at every one of them
    assert lines == ["#EXTM3U", "#PLAYLIST:list name", "#EXTINF:60,Ann - one two", "/m/a.flac"], lines


def test_mpris_metadata_of_the_wrong_dbus_types_means_nothing_playing():
    from recsys.player.mpris import MprisError, now_playing
    from recsys.synth.mpris import PLAYER_IFACE, FakePlayer, have_dbus_daemon, private_session_bus

    if not have_dbus_daemon():
        pytest.skip("dbus-daemon is not installed")

    class OddPlayer(FakePlayer):
        """A player whose properties have other D-Bus types than MPRIS says."""

        def __init__(self, address: str, props: dict) -> None:
            super().__init__(address, name="odd")
            self.props = props

        def _properties(self, iface: str) -> dict:
            return {**super()._properties(iface), **self.props} if iface == PLAYER_IFACE else \
                super()._properties(iface)

    with private_session_bus() as bus:
        for props in ({"Metadata": ("s", "not a dict")}, {"Metadata": ("as", ["a", "b"])},
                      {"Metadata": ("a{sv}", {"xesam:url": ("i", 7), "xesam:title": ("ai", [1, 2])})},
                      {"Metadata": ("a{sv}", {"xesam:title": ("ay", b"x")}), "PlaybackStatus": ("i", 1)}):
            with OddPlayer(bus, props), pytest.raises(MprisError, match="Fake Player is playing nothing"):
                now_playing(address=bus)
        with OddPlayer(bus, {"Metadata": ("a{sv}", {"xesam:url": ("s", "file:///m/a.flac"),
                                                    "xesam:artist": ("av", [("s", "Ann"), ("i", 3)])})}):
            track = now_playing(address=bus)
        assert (track.path, track.artist) == ("/m/a.flac", "Ann")
