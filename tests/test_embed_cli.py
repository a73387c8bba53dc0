"""`recsys embed`, `recsys similar` and `recsys status` end to end, through the real CLI, on synthesised audio."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys.index.ann import load_snapshot
from recsys.index.store import TrackStore
from recsys.synth.audio import FORMATS, STYLES, synth_track, write_audio
from recsys.synth.player_db import write_clementine_db


def _embed(lib, *extra):
    return lib.run("embed", "--db", str(lib.db), "--workers", "2", "-q", *extra)


def _rows(lib) -> dict:
    store = TrackStore.open(lib.home)
    return store.states()


def test_embed_then_incremental_runs(small_library):
    lib = small_library
    r = _embed(lib)
    assert r.exit_code == 0, r.output
    assert "embedded 12," in r.output
    states = _rows(lib)
    assert set(states) == {s.path for s in lib.songs}
    snap = load_snapshot(lib.home)
    assert len(snap.keys) == 12
    assert np.allclose(np.linalg.norm(snap.vectors, axis=1), 1.0, atol=1e-4)
    assert len({tuple(np.round(v, 4)) for v in snap.vectors}) == 12  # no placeholder or repeated vectors

    # unchanged library: nothing decoded
    r = _embed(lib)
    assert r.exit_code == 0, r.output
    assert "embedded 0," in r.output and "up to date 12" in r.output
    assert " 0," not in r.output.split("up to date 12")[1].splitlines()[0]  # no line of zero counters
    assert "not loaded: nothing to encode" in r.output and "on none" not in r.output

    # a changed file is re-embedded; a deleted one dropped; a moved one keeps its vector
    changed, deleted, moved = lib.songs[0], lib.songs[1], lib.songs[2]
    changed_fmt = next(f for f, ext in FORMATS.items() if changed.path.endswith("." + ext))
    write_audio(Path(changed.path), synth_track(STYLES[0], 8.0, sample_rate=22050, seed=99), 22050, changed_fmt)
    old_vector = load_snapshot(lib.home)
    old_moved = old_vector.vectors[old_vector.keys.index(moved.path)].copy()
    Path(deleted.path).unlink()
    lib.songs.remove(deleted)
    new_path = str(lib.music / "renamed track.x")
    shutil.move(moved.path, new_path)
    moved.path = new_path
    lib.rewrite_db()
    r = _embed(lib)
    assert r.exit_code == 0, r.output
    assert "embedded 1," in r.output, r.output
    assert "reused 1 " in r.output and "dropped 1 (moved)" in r.output  # the moved file's old key
    assert "1 track(s) whose file is missing are kept" in r.output  # the deleted file: kept, out of the index
    snap = load_snapshot(lib.home)
    assert len(snap.keys) == 11 and deleted.path not in snap.keys
    assert deleted.path in TrackStore.open(lib.home).states()
    assert np.allclose(snap.vectors[snap.keys.index(new_path)], old_moved)


def test_player_db_and_music_are_never_written(small_library):
    lib = small_library
    files = [lib.db, *sorted(lib.music.iterdir())]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    assert _embed(lib).exit_code == 0
    assert lib.run("similar", lib.songs[0].path).exit_code == 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    assert sorted(p.name for p in lib.db.parent.iterdir() if p.name.startswith("clementine")) == ["clementine.db"]


def test_failures_are_recorded_skipped_and_retried(small_library):
    lib = small_library
    bad = lib.music / "broken.flac"
    bad.write_bytes(b"fLaC" + os.urandom(3000))
    text = lib.music / "notes.mp3"
    text.write_text("this is not audio\n" * 50)
    from recsys.synth.player_db import SynthSong

    lib.songs += [SynthSong(path=str(bad), title="broken"), SynthSong(path=str(text), title="notes")]
    lib.rewrite_db()
    r = _embed(lib)
    assert r.exit_code == 0, r.output
    assert "failed 2 new" in r.output and "broken.flac" in r.output
    status = json.loads(lib.run("status", "--db", str(lib.db), "--json").output)
    assert {Path(f["path"]).name for f in status["failures"]} == {"broken.flac", "notes.mp3"}
    assert status["embedded"] == 12

    r = _embed(lib)
    assert "failed 0 new + 2 known" in r.output and "embedded 0," in r.output
    r = _embed(lib, "--retry-failed")
    assert "failed 2 new" in r.output
    assert len(load_snapshot(lib.home).keys) == 12  # a failed track never gets a vector


def test_changing_encoder_reembeds_everything(small_library):
    lib = small_library
    assert _embed(lib).exit_code == 0
    dsp_id = load_snapshot(lib.home).encoder_id
    r = _embed(lib, "--encoder", "cnn")
    assert r.exit_code == 0, r.output
    assert "embedded 12," in r.output
    snap = load_snapshot(lib.home)
    assert snap.encoder_id != dsp_id and len(snap.keys) == 12


def test_changing_the_clip_policy_reembeds_everything(small_library, monkeypatch):
    """A vector depends on the clip it heard as much as on the encoder: rows of another excerpt policy are stale."""
    lib = small_library
    assert _embed(lib).exit_code == 0
    before = load_snapshot(lib.home).encoder_id
    monkeypatch.setenv("RECSYS_AUDIO__CROP_SECONDS", "2")
    monkeypatch.setenv("RECSYS_AUDIO__CROP_COUNT", "3")
    r = _embed(lib)
    assert r.exit_code == 0, r.output
    assert "embedded 12," in r.output
    assert "12 track(s) were embedded by another encoder or clip policy" in r.output
    assert load_snapshot(lib.home).encoder_id != before
    assert "embedded 0," in _embed(lib).output  # and the new policy's rows are then up to date


def test_similar_by_path_uri_and_text(small_library):
    lib = small_library
    assert _embed(lib).exit_code == 0
    query = lib.songs[3]
    r = lib.run("similar", query.path, "-k", "5", "--json")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)
    assert len(hits) == 5
    assert set(hits[0]) == {"key", "path", "start_s", "score", "artist", "title", "album"}
    assert query.path not in {h["path"] for h in hits}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    from recsys.synth.player_db import file_uri

    by_uri = json.loads(lib.run("similar", file_uri(query.path), "-k", "5", "--json").output)
    by_text = json.loads(lib.run("similar", f"{query.artist} - {query.title}", "-k", "5", "--json").output)
    assert by_uri == hits == by_text

    table = lib.run("similar", query.path, "-k", "3")
    assert table.exit_code == 0 and len(table.output.strip().splitlines()) == 4


def test_similar_excludes_exact_copies(small_library):
    lib = small_library
    original = lib.songs[0]
    assert _embed(lib).exit_code == 0
    copy = lib.music / "copy of first.flac"
    shutil.copy(original.path, copy)
    from recsys.synth.player_db import SynthSong

    lib.songs.append(SynthSong(path=str(copy), title="copy"))
    lib.rewrite_db()
    r = _embed(lib)
    assert "reused 1" in r.output  # the copy reused the original's vector (same content id)
    hits = json.loads(lib.run("similar", original.path, "-k", "20", "--json").output)
    assert str(copy) not in {h["path"] for h in hits} and len(hits) == 11


def test_similar_ambiguous_and_unknown(small_library):
    lib = small_library
    assert _embed(lib).exit_code == 0
    r = lib.run("similar", "artist")  # every track's artist starts with it
    assert r.exit_code == 2 and "matches" in r.output
    r = lib.run("similar", "no such song anywhere")
    assert r.exit_code == 1 and "no embedded track matches" in r.output


def test_similar_does_not_import_torch_or_lancedb(small_library):
    lib = small_library
    assert _embed(lib).exit_code == 0
    code = (
        "import sys\nfrom recsys.cli import main\n"
        f"try:\n    main(['--home', {str(lib.home)!r}, 'similar', {lib.songs[0].path!r}, '-k', '3'])\n"
        "except SystemExit:\n    pass\n"
        "print('HEAVY', [m for m in ('torch', 'lancedb') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out


def test_cue_segments_are_separate_tracks(small_library, tmp_path):
    lib = small_library
    whole = lib.split_first_into_cue_parts()
    assert _embed(lib).exit_code == 0, "embed failed"
    snap = load_snapshot(lib.home)
    parts = [i for i, k in enumerate(snap.keys) if k.startswith(whole + "@")]
    assert len(parts) == 2
    assert not np.allclose(snap.vectors[parts[0]], snap.vectors[parts[1]])


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing_db", "does not exist"),
        ("not_sqlite", "database"),
        ("unknown_shape", "songs"),
        ("empty", "no playable tracks"),
        ("no_library", "no music library found"),
        ("home_is_file", "home"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(small_library, setup, message):
    lib = small_library
    args = ["embed", "--db", str(lib.db), "-q"]
    if setup == "missing_db":
        args[2] = str(lib.root / "nope.db")
    elif setup == "not_sqlite":
        lib.db.write_text("hello")
    elif setup == "unknown_shape":
        import sqlite3

        lib.db.unlink()
        con = sqlite3.connect(lib.db)
        con.execute("create table tracks (x)")
        con.commit()
        con.close()
    elif setup == "empty":
        lib.db.unlink()
        write_clementine_db(lib.db, [])
    elif setup == "no_library":
        args = ["embed", "-q"]
    elif setup == "home_is_file":
        lib.home.parent.mkdir(parents=True, exist_ok=True)
        lib.home.write_text("not a folder")
    r = lib.run(*args)
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recsys: error:"), r.output
    assert message in lines[0]
    assert "Traceback" not in r.output


def test_second_embed_reports_lock_holder(small_library):
    lib = small_library
    lib.home.mkdir(parents=True)
    from recsys.home.lock import HomeLock

    with HomeLock(lib.home, "recsys embed"):
        code = (
            "from recsys.cli import main\n"
            f"main(['--home', {str(lib.home)!r}, 'embed', '--db', {str(lib.db)!r}, '-q'])"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"pid {os.getpid()}" in proc.stderr and "Traceback" not in proc.stderr


def test_help_teaches_every_command(small_library):
    lib = small_library
    top = lib.run("--help")
    assert top.exit_code == 0
    for command in ("embed", "similar", "status", "demo"):
        assert command in top.output
        sub = lib.run(command, "--help")
        assert sub.exit_code == 0 and len(sub.output.splitlines()) > 5
