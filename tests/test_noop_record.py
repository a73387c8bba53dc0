"""The record of a no-op plan (recsys/pipeline/noop.py): a no-op embed and status skip the table, say exactly what
planning from the table says, and every change it must not miss sends them back to the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recsys.pipeline.noop import RECORD
from recsys.synth.player_db import write_clementine_db


@pytest.fixture
def lib(small_library, monkeypatch):
    monkeypatch.setenv("RECSYS_EMBED__ENCODER", "dsp")  # the encoder is not the subject: the cheapest one
    return small_library


def _embed(lib, db=None):
    r = lib.run("embed", "--db", str(db or lib.db), "--workers", "1", "-q")
    assert r.exit_code == 0, r.output
    return r.output


def _status(lib, db=None) -> dict:
    r = lib.run("status", "--db", str(db or lib.db), "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _planned(lib, run):
    """What ``run()`` gives when planning reads the table: the record set aside for that one call."""
    record = lib.home / RECORD
    kept = record.read_bytes()
    record.unlink()
    try:
        return run()
    finally:
        record.write_bytes(kept)


def _fast_path(lib, db=None) -> str:
    """A no-op embed then status in a fresh process; asserts neither imported the table's library (nor torch)."""
    code = ("import sys\nfrom recsys.cli import main\n"
            "for args in (['embed', '--db', sys.argv[2], '-q'], ['status', '--db', sys.argv[2]]):\n"
            "    try:\n        main(['--home', sys.argv[1], *args])\n    except SystemExit:\n        pass\n"
            "print('HEAVY', [m for m in ('lancedb', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, str(lib.home), str(db or lib.db)], capture_output=True,
                         text=True, check=True, env={**os.environ, "RECSYS_EMBED__ENCODER": "dsp"}).stdout
    assert "HEAVY []" in out, out
    return out


def test_the_first_noop_run_after_a_working_embed_reads_no_table(lib):
    assert "embedded 12" in _embed(lib)  # did work, and left nothing to do: the record is written all the same
    out = _fast_path(lib)
    assert "up to date 12" in out and "embedded: 12 current" in out, out
    assert _embed(lib) == _planned(lib, lambda: _embed(lib))
    assert _status(lib) == _planned(lib, lambda: _status(lib))

    # a run that reused a vector (a file touched) and one that recorded a failure (a file broken) leave it true
    touched = lib.songs[0].path
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert "reused 1 (moved/copied)" in _embed(lib)
    assert "up to date 12" in _fast_path(lib)
    with open(lib.songs[3].path, "r+b") as f:
        f.write(b"\0" * 4096)  # its header gone: this file fails to decode
    out = _embed(lib)
    assert "failed 1 new + 0 known" in out, out
    assert "up to date 11" in _fast_path(lib)
    assert _embed(lib) == _planned(lib, lambda: _embed(lib))
    assert _status(lib) == _planned(lib, lambda: _status(lib))


def test_the_record_says_what_the_table_says_and_no_change_goes_unnoticed(lib):
    _embed(lib)
    assert (lib.home / RECORD).is_file()  # written by the run that embedded (and left nothing to do)
    out = _fast_path(lib)
    assert "up to date 12" in out and "embedded: 12 current" in out, out

    # same output and the same status, every field, as planning from the table
    assert _embed(lib) == _planned(lib, lambda: _embed(lib))
    assert _status(lib) == _planned(lib, lambda: _status(lib))
    assert lib.run("status", "--db", str(lib.db)).output == _planned(lib, lambda: lib.run("status", "--db",
                                                                                            str(lib.db)).output)

    # a file touched (same size, new mtime): planned again, its vector reused by content id
    touched = lib.songs[0].path
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _status(lib)["embedded"] == 11
    out = _embed(lib)
    assert "reused 1 (moved/copied), up to date 11" in out, out
    _embed(lib)  # record again

    # a listed file deleted: missing, its row kept out of the index
    os.unlink(lib.songs[1].path)
    st = _status(lib)
    assert (st["embedded"], st["missing"], st["missing_kept"]) == (11, 1, 1), st
    out = _embed(lib)
    assert "missing 1" in out and "1 track(s) whose file is missing" in out, out
    assert _embed(lib) == _planned(lib, lambda: _embed(lib))
    assert _status(lib) == _planned(lib, lambda: _status(lib))

    # a file the library no longer lists, deleted: its row becomes a missing one (kept until `recsys prune`)
    fewer = lib.root / "fewer.db"
    write_clementine_db(fewer, [s for i, s in enumerate(lib.songs) if i != 2])
    _embed(lib, fewer)
    assert "1 track(s) whose file is missing" in _embed(lib, fewer)  # record written with the unlisted row's file
    os.unlink(lib.songs[2].path)
    st = _status(lib, fewer)
    assert (st["missing_kept"], st["index"]["state"]) == (2, "out of date: run `recsys embed`"), st
    # the text says so too (by hand: a folder moved away, the player marked its songs unavailable, and status said
    # "0 missing files" and nothing of the 5 rows kept)
    assert "2 track(s) whose file is missing are kept" in lib.run("status", "--db", str(fewer)).output
    out = _embed(lib, fewer)
    assert "2 track(s) whose file is missing" in out, out
    assert _status(lib, fewer) == _planned(lib, lambda: _status(lib, fewer))

    # the table changed behind the record's back (damaged): noticed, one line, a way out
    data = sorted((lib.home / "tracks.lance" / "data").glob("*.lance"))
    for path in data:
        path.write_bytes(path.read_bytes()[:100])
    r = lib.run("status", "--db", str(fewer))
    assert r.exit_code == 1 and "damaged" in r.output and "recsys repair" in r.output, r.output
