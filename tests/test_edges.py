"""The rough edges a new user meets on a real library (issue 14): long tracks, left-out tracks, permissions,
telemetry, pipes, untagged tracks, messages, help."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from recsys.synth.player_db import SynthSong


def _embed(lib, *extra):
    return lib.run("embed", "--db", str(lib.db), "--workers", "1", "-q", *extra)


def test_long_tracks_are_embedded_and_left_out_tracks_are_named(small_library):
    lib = small_library
    long_path = lib.music / "dj mix.wav"
    rate, minutes = 4000, 16
    t = np.arange(rate * 60 * minutes, dtype=np.float32) / rate
    sf.write(long_path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    lib.songs.append(SynthSong(path=str(long_path), title="mix", artist="dj", length_ns=minutes * 60 * 10**9))
    podcast = lib.songs[1]
    podcast.genre = "News; Podcast"
    lib.rewrite_db()
    config = lib.root / "my.yaml"
    config.write_text("library:\n  exclude_genres: [podcast, Audiobook]\n")

    r = lib.run("--config", str(config), "embed", "--db", str(lib.db), "--workers", "1", "-q")
    assert r.exit_code == 0, r.output
    assert "embedded 12," in r.output, r.output  # 11 short + the 16-minute mix; the podcast is left out
    assert f"{podcast.path}: genre 'News; Podcast' is excluded (library.exclude_genres)" in r.output

    r = lib.run("--config", str(config), "status", "--db", str(lib.db))
    assert r.exit_code == 0, r.output
    assert "embedded: 12 current, 0 stale" in r.output and "0 not yet" in r.output
    assert "left out by your settings: 1" in r.output and podcast.path in r.output
    assert "run `recsys embed`" not in r.output
    st = json.loads(lib.run("--config", str(config), "status", "--db", str(lib.db), "--json").output)
    assert st["left_out"] == [{"key": podcast.path, "reason": "genre 'News; Podcast' is excluded "
                                                              "(library.exclude_genres)"}]

    # a length limit is the user's choice, and named too
    config.write_text("audio:\n  max_track_minutes: 15\n")
    st = json.loads(lib.run("--config", str(config), "status", "--db", str(lib.db), "--json").output)
    assert [t["key"] for t in st["left_out"]] == [str(long_path)]
    assert "16.0 min is longer than audio.max_track_minutes = 15" in st["left_out"][0]["reason"]


def test_written_files_honour_the_umask_also_when_replacing(tmp_path):
    import os

    from recsys.atomic import write_bytes_atomic, write_json_atomic

    target = tmp_path / "list.xspf"
    target.write_text("old")
    os.chmod(target, 0o600)
    old = os.umask(0o022)
    try:
        write_bytes_atomic(target, b"new")
        assert (target.stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        write_json_atomic(tmp_path / "stamp.json", {"a": 1})
        assert ((tmp_path / "stamp.json").stat().st_mode & 0o777) == 0o600
        os.umask(0o002)
        target.chmod(0o644)
        write_bytes_atomic(target, b"newer")
        assert (target.stat().st_mode & 0o777) == 0o664
    finally:
        os.umask(old)
    assert target.read_bytes() == b"newer"


def test_playlist_stamp_and_models_are_readable_by_other_users(small_library):
    import os

    from recsys.index.store import STAMP

    lib = small_library
    out = lib.root / "lists" / "mine.xspf"
    out.parent.mkdir()
    out.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<playlist version="1" xmlns="http://xspf.org/ns/0/">'
                   "<trackList/></playlist>\n")
    out.chmod(0o644)
    old = os.umask(0o022)
    try:
        assert _embed(lib).exit_code == 0
        r = lib.run("playlist", "--db", str(lib.db), "--out", str(out), "--force", "--top-n", "3")
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert (out.stat().st_mode & 0o777) == 0o644
    assert ((lib.home / STAMP).stat().st_mode & 0o777) == 0o644


def test_mlflow_writes_nothing_outside_the_home(tmp_path):
    """MLflow's telemetry writes ~/.config/mlflow/telemetry.json (an installation id) unless it is turned off. It
    turns itself off under pytest and CI, so the run happens in a child without those variables."""
    import os
    import subprocess
    import sys

    user_home = tmp_path / "user"
    user_home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_CURRENT_TEST", "CI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
           and not k.startswith(("XDG_", "GITHUB_"))}
    env["HOME"] = str(user_home)
    code = (
        "from pathlib import Path\nfrom recsys.tracking import mlflow_run\n"
        f"with mlflow_run(Path({str(tmp_path / 'home')!r}), 'exp', 'run', {{'a': 1}}) as run:\n"
        "    run.log_metrics({'m': 1.0})\n    run.log_text('hi', 'note.txt')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [str(p.relative_to(user_home)) for p in user_home.rglob("*")] == []
    assert (tmp_path / "home" / "mlflow.db").exists()


def test_a_closed_pipe_ends_quietly(small_library):
    import subprocess
    import sys

    lib = small_library
    assert _embed(lib).exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "recsys.cli", "--home", str(lib.home), "status", "--db",
                             str(lib.db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first.startswith(b"home: ")
    assert err == "", err


def test_untagged_tracks_show_their_file_name_everywhere(small_library, monkeypatch):
    from recsys.library.track import display_label

    assert display_label("", "", "/m/a/01 intro.flac") == "01 intro.flac"
    assert display_label("Band", "", "/m/a/01 intro.flac") == "Band - 01 intro.flac"
    assert display_label("", "Intro", "/m/a/01 intro.flac") == "Intro"
    assert display_label("", "", "/m/medley.flac", 80.0) == "medley.flac @ 1:20"
    lib = small_library
    for song in lib.songs:
        song.artist = song.title = song.album = ""
    lib.rewrite_db()
    assert _embed(lib).exit_code == 0
    r = lib.run("similar", lib.songs[0].path, "-k", "3")
    assert r.exit_code == 0, r.output
    assert "?" not in r.output.replace(lib.songs[0].path, "")
    assert r.output.splitlines()[0].startswith(f"like: {lib.songs[0].path.rsplit('/', 1)[-1]}  [")
    out = lib.root / "p.m3u8"
    # every track of this tiny library gets more votes from ratings below 4 stars than from liked ones: without
    # this the evidence rule (rightly) leaves nothing to recommend
    monkeypatch.setenv("RECSYS_RECOMMEND__MIN_LIKED_SHARE", "0")
    r = lib.run("playlist", "--db", str(lib.db), "--out", str(out), "--top-n", "3")
    assert r.exit_code == 0, r.output
    assert "? - ?" not in r.output and "? - ?" not in out.read_text()


def test_decoder_messages_are_one_clean_line_each(tmp_path):
    """The path once, no errno, no decoder chatter on stderr, and the non-audio file named by status too."""
    import errno
    import os
    import subprocess
    import sys

    import av

    from recsys.embedder.audio import _first_line
    from recsys.synth.audio import synth_track, write_audio

    assert _first_line(av.error.PermissionError(errno.EPERM, "Operation not permitted", "x.flac")) == \
        "the decoder rejected the data"
    music = tmp_path / "music"
    music.mkdir()
    write_audio(music / "good.flac", synth_track("ambient_pad", 6.0, sample_rate=22050, seed=1), 22050, "flac")
    (music / "bad.mp3").write_bytes(b"\xff\xfb\x90\x00" + b"\x13" * 20000)
    (music / "notes.mp3").write_text("hello")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    base = [sys.executable, "-m", "recsys.cli", "--home", str(tmp_path / "home")]
    embed = subprocess.run([*base, "embed", "--library", str(music), "-q", "--workers", "1"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert embed.returncode == 0, embed.stderr
    chatter = [line for line in embed.stderr.splitlines() if not line.startswith("note: remembered for the next")]
    assert chatter == [], embed.stderr  # libmpg123's "Note: Illegal Audio-MPEG-Header" lines are gone
    failed = [line for line in embed.stdout.splitlines() if "failed:" in line]
    assert len(failed) == 1 and failed[0].count(str(music / "bad.mp3")) == 1, failed
    assert "Errno" not in failed[0]
    status = subprocess.run([*base, "status", "--library", str(music)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert f"{music / 'notes.mp3'}: not audio" in status.stdout
    assert status.stdout.count(str(music / "bad.mp3")) == 1


def test_home_that_is_a_file_and_unknown_encoder_are_named_at_load(small_library):
    lib = small_library
    lib.home.write_text("not a folder")
    for args in (["status", "--db", str(lib.db)], ["similar", "x"]):
        r = lib.run(*args)
        assert r.exit_code == 1
        assert r.output.strip() == (f"recsys: error: home {lib.home} is a file, not a folder (from --home or "
                                    "RECSYS_HOME): give a folder with --home or RECSYS_HOME")
    lib.home.unlink()
    r = lib.run("embed", "--db", str(lib.db), "--encoder", "foo", "-q")
    assert r.exit_code == 1
    assert r.output.strip() == ("recsys: error: embed.encoder = 'foo' is not allowed (allowed: auto, dsp, cnn, "
                                "musicnn, a checkpoint file .pt, or module:Class; from the command line, --encoder)")


def test_a_track_listed_twice_in_the_database_is_counted_not_silent(small_library):
    lib = small_library
    lib.songs.append(SynthSong(path=lib.songs[0].path, title="again"))  # a second row for the same file
    lib.rewrite_db()
    r = lib.run("status", "--db", str(lib.db))
    assert r.exit_code == 0, r.output
    assert "library: 12 tracks" in r.output
    assert "1 database row(s) name a track another row already lists" in r.output
    st = json.loads(lib.run("status", "--db", str(lib.db), "--json").output)
    assert st["duplicate_rows"] == 1 and st["library_tracks"] == 12


def test_status_is_read_only(small_library, monkeypatch):
    """status writes nothing: a home not yet made stays unmade, and a home that cannot be written is still read."""
    import tempfile

    lib = small_library
    r = lib.run("status", "--db", str(lib.db))
    assert r.exit_code == 0, r.output
    assert "0 current" in r.output and not lib.home.exists()
    assert _embed(lib).exit_code == 0

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # what a write probe meets in a read-only home
    before = sorted((p, p.stat().st_mtime_ns) for p in lib.home.rglob("*"))
    r = lib.run("status", "--db", str(lib.db))
    assert r.exit_code == 0, r.output
    assert "embedded: 12 current" in r.output
    assert sorted((p, p.stat().st_mtime_ns) for p in lib.home.rglob("*")) == before


def test_full_disk_is_one_line_without_lance_internals(tmp_path):
    import pytest

    from recsys.index.store import StoreError, TrackStore

    store = TrackStore.open(tmp_path / "home")
    lance_text = ("lance error: LanceError(IO): Generic LocalFileSystem error: Unable to copy data to file: No space "
                  "left on device (os error 28), /root/.cargo/registry/src/lance-table-13.0.0/src/io/commit.rs:1663:50")

    def full():
        raise RuntimeError(lance_text)

    with pytest.raises(StoreError) as err:
        store._guard(full)
    assert str(err.value) == (f"the disk holding {tmp_path / 'home'} is full (No space left on device): free some "
                              "space and run the command again (everything committed before is kept)")

    def bug():
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        store._guard(bug)


def test_help_states_real_defaults_and_config_prints_the_packaged_yaml(small_library):
    import yaml

    from recsys.config import as_dict, load_settings

    lib = small_library
    embed_help = " ".join(lib.run("embed", "--help").output.split())
    assert "auto (the encoder `recsys train-encoder` activated, else musicnn)" in embed_help
    assert "musicnn" in embed_help and ".pt" in embed_help
    assert "[default: embed.encoder, auto]" in embed_help
    assert "[default: embed.workers, 0]" in embed_help and "[default: embed.batch_size, 32]" in embed_help
    top = " ".join(lib.run("--help").output.split())
    assert "RECSYS_HOME" in top and "$XDG_DATA_HOME/recsys" in top and "configs/default.yaml" not in top
    assert "_RECSYS_COMPLETE=bash_source recsys" in top
    defaults = lib.run("config", "--defaults")
    assert defaults.exit_code == 0 and defaults.output.startswith("# recsys default settings")
    assert yaml.safe_load(defaults.output) == as_dict(load_settings(environ={}))
    shown = lib.run("config")
    assert shown.exit_code == 0
    assert yaml.safe_load(shown.output)["home"] == str(lib.home)


def test_default_yaml_is_installed_with_the_package():
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parent.parent
    data = tomllib.loads((root / "pyproject.toml").read_text())
    assert "default.yaml" in data["tool"]["setuptools"]["package-data"]["recsys"]
    assert (root / "recsys" / "default.yaml").is_file()


def test_cue_tracks_are_addressed_as_players_read_them(tmp_path):
    """VLC: the range (XSPF option, M3U8 #EXTVLCOPT), also for the sheet's first track; Strawberry: trackNum."""
    from xml.etree import ElementTree as ET

    from recsys.playlists import PlaylistEntry, write_playlist

    whole = str(tmp_path / "medley.flac")
    parts = [PlaylistEntry(key=f"{whole}@{start:.3f}", path=whole, start_s=start, artist="A", title=f"part {n}",
                           album="M", track_number=n, duration_s=80.0)
             for n, start in ((1, 0.0), (2, 80.0), (3, 160.0))]
    xspf = write_playlist(tmp_path / "p.xspf", parts, "p")
    ns = {"x": "http://xspf.org/ns/0/", "vlc": "http://www.videolan.org/vlc/playlist/ns/0/"}
    tracks = ET.parse(xspf).getroot().findall("x:trackList/x:track", ns)
    assert [t.find("x:trackNum", ns).text for t in tracks] == ["1", "2", "3"]
    assert [[o.text for o in t.findall("x:extension/vlc:option", ns)] for t in tracks] == [
        ["start-time=0.000", "stop-time=80.000"], ["start-time=80.000", "stop-time=160.000"],
        ["start-time=160.000", "stop-time=240.000"]]
    m3u = write_playlist(tmp_path / "p.m3u8", parts, "p", fmt="m3u8").read_text().splitlines()
    assert m3u[1] == "#PLAYLIST:p"
    assert m3u[2:6] == ["#EXTINF:80,A - part 1", "#EXTVLCOPT:start-time=0.000", "#EXTVLCOPT:stop-time=80.000", whole]
    assert m3u.count("#EXTVLCOPT:start-time=80.000") == 1


def test_every_key_recsys_prints_is_a_query(small_library):
    lib = small_library
    whole = lib.split_first_into_cue_parts()
    assert _embed(lib).exit_code == 0
    r = lib.run("similar", whole)
    assert r.exit_code == 2 and f"[{whole}@0.000]" in r.output and f"[{whole}@4.000]" in r.output, r.output
    r = lib.run("similar", f"{whole}@4.000", "-k", "3")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == f"like: part two  [{whole}@4.000]"
    printed = json.loads(lib.run("similar", lib.songs[3].path, "--json", "-k", "20").output)
    for hit in printed:
        again = lib.run("similar", hit["key"], "-k", "1")
        assert again.exit_code == 0, (hit["key"], again.output)
        assert again.output.splitlines()[0].endswith(f"[{hit['key']}]")


def test_noop_embed_and_status_do_not_import_torch_and_a_change_still_embeds(small_library, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    from recsys.synth.audio import synth_track, write_audio

    lib = small_library
    monkeypatch.setenv("RECSYS_EMBED__ENCODER", "dsp")  # a torch encoder too, and the cheapest
    assert _embed(lib).exit_code == 0

    def run(*args: str) -> list[str]:
        code = ("import sys\nfrom recsys.cli import main\n"
                f"try:\n    main(['--home', {str(lib.home)!r}, *{list(args)!r}])\nexcept SystemExit:\n    pass\n"
                "print('HEAVY', [m for m in ('torch',) if m in sys.modules])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        return out.splitlines()

    noop = run("embed", "--db", str(lib.db), "-q", "--workers", "2")
    assert "HEAVY []" in noop and any(line.startswith("embedded 0,") for line in noop), noop
    assert "HEAVY []" in run("status", "--db", str(lib.db))
    changed = Path(lib.songs[0].path)
    assert changed.suffix == ".wav"
    write_audio(changed, synth_track("drum_loop", 8.0, sample_rate=22050, seed=7), 22050, "wav")
    again = run("embed", "--db", str(lib.db), "-q", "--workers", "1")
    assert any(line.startswith("embedded 1,") for line in again), again
    assert "HEAVY ['torch']" in again  # built on first use, its id checked against the remembered one
