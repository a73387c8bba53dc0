"""Integrity under faults (issue 11): no wrong vector, no lost work, no reader left with a broken index.

In-process tests patch one function to stage the fault at an exact moment (a file rewritten between planning and
decoding, Ctrl-C with clips waiting for a batch); process faults (a decoder crash, a hang in C code, SIGTERM, kill -9)
run the real command, with the fault planted in the worker processes through a ``sitecustomize`` module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from recsys.embedder import decoding
from recsys.index.ann import load_snapshot
from recsys.index.store import TrackRow, TrackStore
from recsys.library.content_id import track_content_id
from recsys.pipeline import run as pipeline
from recsys.synth.player_db import SynthSong


def _embed(lib, *extra: str):
    return lib.run("embed", "--db", str(lib.db), "--workers", "1", "-q", *extra)


def _rows(home: Path) -> dict[str, tuple[str, np.ndarray]]:
    """key -> (content id, vector) of every row."""
    meta, vectors = TrackStore.open(home).read_all()
    return {k: (c, v) for k, c, v in zip(meta.column("key").to_pylist(), meta.column("content_id").to_pylist(),
                                         vectors, strict=True)}


# ---- no wrong vector ------------------------------------------------------------------------------------------------


def test_a_file_rewritten_during_embed_never_stores_another_contents_vector(small_library, monkeypatch):
    """A file rewritten between planning and decoding was stored with the new audio's vector under the old content
    id, and a copy of the old audio then reused that wrong vector. The row records what was actually decoded."""
    lib = small_library
    victim = Path(lib.songs[0].path)
    donor = next(Path(s.path) for s in lib.songs[1:] if Path(s.path).suffix == victim.suffix)
    original = victim.read_bytes()
    real = decoding.load_crop
    rewritten = []

    def rewrite_first(path, *args, **kwargs):
        if Path(path) == victim and not rewritten:
            rewritten.append(True)
            victim.write_bytes(donor.read_bytes())  # the planned content id is the original audio's
            st = victim.stat()
            os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(decoding, "load_crop", rewrite_first)
    assert _embed(lib).exit_code == 0
    assert rewritten
    rows = _rows(lib.home)
    cid, vector = rows[str(victim)]
    assert cid == track_content_id(victim, victim.stat().st_size)  # the bytes it holds now
    np.testing.assert_allclose(vector, rows[str(donor)][1], atol=1e-5)  # and their vector
    state = TrackStore.open(lib.home).states()[str(victim)]
    assert (state.size, state.mtime_ns) == (victim.stat().st_size, victim.stat().st_mtime_ns)

    copy = lib.music / f"copy of the original{victim.suffix}"  # the original audio comes back under another name
    copy.write_bytes(original)
    lib.songs.append(SynthSong(path=str(copy), title="copy"))
    lib.rewrite_db()
    r = _embed(lib)
    assert r.exit_code == 0 and "embedded 1," in r.output and "reused" not in r.output, r.output
    assert float(_rows(lib.home)[str(copy)][1] @ rows[str(donor)][1]) < 0.9999  # not the donor's vector


PLUGIN = '''
import torch
import torch.nn.functional as F


class _Base:
    name = "bad"
    sample_rate = 22050
    dim = 4

    def __init__(self):
        self.device = torch.device("cpu")

    def identity(self):
        return {"class": type(self).__name__}

    def to(self, device):
        return self

    def good(self, waves):
        x = torch.stack([waves.mean(1), waves.std(1), waves.abs().amax(1), torch.ones(len(waves))], dim=1)
        return F.normalize(x, dim=1)


class WrongDim(_Base):
    def encode(self, waves):
        return self.good(waves)[:, :3]


class NaNs(_Base):
    def encode(self, waves):
        out = self.good(waves)
        out[0, 0] = float("nan")
        return out


class NotUnit(_Base):
    def encode(self, waves):
        return self.good(waves) * 3


class Zeros(_Base):
    def encode(self, waves):
        return torch.zeros(len(waves), 4)


class Raises(_Base):
    def encode(self, waves):
        raise RuntimeError("CUDA error: device-side assert")
'''


@pytest.mark.parametrize("bad", ["WrongDim", "NaNs", "NotUnit", "Zeros", "Raises"])
def test_bad_encoder_output_is_one_line_and_stores_nothing(small_library, tmp_path, monkeypatch, bad):
    """A `module:Class` encoder's wrong-dim, NaN, zero or non-unit output was stored (or wiped the table, or
    aborted with Arrow's text): a one-line error naming the encoder, and the table is as it was."""
    lib = small_library
    assert _embed(lib).exit_code == 0
    before = _rows(lib.home)
    (tmp_path / "bad_encoders.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    r = _embed(lib, "--encoder", f"bad_encoders:{bad}")
    assert r.exit_code == 1, r.output
    assert r.output.startswith("recsys: error: encoder bad_encoders:") and len(r.output.strip().splitlines()) == 1, \
        r.output
    after = _rows(lib.home)
    assert after.keys() == before.keys()
    for key, (cid, vector) in before.items():
        assert after[key][0] == cid and np.array_equal(after[key][1], vector)


# ---- no lost work ---------------------------------------------------------------------------------------------------


def test_ctrl_c_saves_the_clips_waiting_for_a_batch(small_library, monkeypatch):
    """Ctrl-C with decoded clips waiting for a full batch said "embedded 0 ... everything finished so far is saved":
    they are encoded and saved, and the count printed is the count in the table."""
    lib = small_library
    real = pipeline.decoded

    def interrupted_after_five(jobs, spec, workers):
        for n, outcome in enumerate(real(jobs, spec, workers)):
            if n == 5:
                raise KeyboardInterrupt
            yield outcome

    monkeypatch.setattr(pipeline, "decoded", interrupted_after_five)
    r = _embed(lib)  # batch size 32: the five clips never made a batch
    assert r.exit_code == 130 and "embedded 5," in r.output, r.output
    assert len(_rows(lib.home)) == 5


def test_missing_files_keep_their_rows_and_come_back_without_decoding(small_library):
    """Rows were deleted as soon as their file was missing (an unmounted share, a subset run), and decoded again
    when the files came back. They are kept, left out of the index, and back in it without decoding."""
    lib = small_library
    assert _embed(lib).exit_code == 0
    before = _rows(lib.home)
    away = lib.root / "away"
    away.mkdir()
    gone = [Path(s.path) for s in lib.songs[:4]]
    for path in gone:
        shutil.move(path, away / path.name)
    r = _embed(lib)
    assert r.exit_code == 0 and "missing 4" in r.output, r.output
    assert _rows(lib.home).keys() == before.keys()  # kept
    assert set(load_snapshot(lib.home).keys) == set(before) - {str(p) for p in gone}  # out of the results
    sim = lib.run("similar", str(lib.songs[5].path), "--json", "-k", "20")
    assert sim.exit_code == 0 and not any(str(p) in sim.stdout for p in gone)

    subset = lib.run("embed", "--library", str(lib.music), "--workers", "1", "-q")  # the other tracks unlisted
    assert subset.exit_code == 0, subset.output
    assert _rows(lib.home).keys() == before.keys()

    for path in gone:
        shutil.move(away / path.name, path)
    r = _embed(lib)
    assert r.exit_code == 0 and "embedded 0," in r.output and "up to date 12" in r.output, r.output
    assert set(load_snapshot(lib.home).keys) == set(before)
    after = _rows(lib.home)
    for key, (_cid, vector) in before.items():
        assert np.array_equal(after[key][1], vector)


def test_an_empty_music_folder_is_reported_and_touches_nothing(small_library, tmp_path):
    """A music folder unmounted (its mount point left empty) next to one that is there: reported, its rows and
    their place in the index kept, and nothing decoded again once it is back."""
    lib = small_library
    second = tmp_path / "share"
    second.mkdir()
    for song in lib.songs[:3]:
        shutil.move(song.path, second / Path(song.path).name)
    folders = ["--library", str(lib.music), "--library", str(second)]
    assert lib.run("embed", *folders, "--workers", "1", "-q").exit_code == 0
    index_before = sorted(load_snapshot(lib.home).keys)
    mounted = tmp_path / "unmounted"
    second.rename(mounted)
    second.mkdir()  # the empty mount point
    r = lib.run("embed", *folders, "--workers", "1", "-q")
    assert r.exit_code == 0 and f"music folder {second} holds nothing now" in r.output, r.output
    assert sorted(load_snapshot(lib.home).keys) == index_before
    second.rmdir()
    mounted.rename(second)
    r = lib.run("embed", *folders, "--workers", "1", "-q")
    assert r.exit_code == 0 and "embedded 0," in r.output and "up to date 12" in r.output, r.output


# ---- process faults -------------------------------------------------------------------------------------------------

FAULTS = '''
import os, signal, time
import recsys.embedder.decoding as d

_real = d.load_crop


def _faulty(path, *args, **kwargs):
    name = os.path.basename(str(path))
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    if name.startswith("hang"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # stuck in C code: the alarm cannot interrupt
        time.sleep(3600)
    if name.startswith("slow"):
        time.sleep(1.0)
    return _real(path, *args, **kwargs)


d.load_crop = _faulty
'''


def _faulty_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    folder = tmp_path / "faults"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(FAULTS)
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), root]), **extra}


def _command(home: Path, db: Path, workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "recsys.cli", "--home", str(home), "embed", "--db", str(db), "--workers",
            str(workers), "-q"]


def _add(lib, prefix: str, n: int = 1) -> list[Path]:
    added = []
    for i in range(n):
        source = Path(lib.songs[i].path)
        target = lib.music / f"{prefix} {i}{source.suffix}"
        shutil.copy(source, target)
        with open(target, "ab") as f:  # other bytes than the source: no vector to reuse
            f.write(b"\0" * (i + 1))
        lib.songs.append(SynthSong(path=str(target), title=f"{prefix} {i}"))
        added.append(target)
    lib.rewrite_db()
    return added


def test_a_crashed_and_a_hung_worker_cost_only_their_file(small_library, tmp_path):
    """A worker killed mid-decode (BrokenProcessPool) ended the whole run, the file never recorded, so every later
    run died on it again; a hang inside C code was never interrupted. Each is recorded as that file's failure, a
    fresh worker takes over, every other track is embedded, and the next run skips them."""
    lib = small_library
    crash, hang = _add(lib, "crash")[0], _add(lib, "hang")[0]
    env = _faulty_env(tmp_path, RECSYS_AUDIO__DECODE_TIMEOUT_S="1")
    run = subprocess.run(_command(lib.home, lib.db), env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "embedded 12," in run.stdout and "failed 2 new" in run.stdout, run.stdout
    failures = {f.path: f.error for f in TrackStore.open(lib.home).failures()}
    assert set(failures) == {str(crash), str(hang)}
    assert "crashed" in failures[str(crash)] and "SIGKILL" in failures[str(crash)]
    assert "did not stop: its worker was killed" in failures[str(hang)]
    again = subprocess.run(_command(lib.home, lib.db), env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "failed 0 new + 2 known" in again.stdout, again.stdout + again.stderr


def _children(pid: int) -> set[int]:
    """Every process descended from ``pid`` (workers and the multiprocessing resource tracker)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_sigterm_saves_like_ctrl_c_and_no_worker_outlives_the_run(small_library, tmp_path, sig):
    """SIGTERM (systemd, `kill`) did not save like Ctrl-C, and SIGTERM or SIGKILL of `embed --workers 2` left the
    decode workers and the resource tracker alive. SIGTERM saves and says so; after either, no process of the run is
    left, and a rerun ends where a clean run does."""
    lib = small_library
    _add(lib, "slow", 8)  # decoded slowly: the signal lands mid-run
    env = _faulty_env(tmp_path, RECSYS_EMBED__BATCH_SIZE="2", RECSYS_EMBED__WRITE_BATCH="2")
    proc = subprocess.Popen(_command(lib.home, lib.db), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 90
    spawned: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        spawned |= _children(proc.pid)
        if (lib.home / "tracks.stamp").exists() and len(spawned) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal: make it longer"
    spawned |= _children(proc.pid)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while _alive(spawned) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert spawned and not _alive(spawned), f"left running: {_alive(spawned)}"
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "interrupted: everything finished so far is saved" in out, out + err
        embedded = int(out.split("embedded ", 1)[1].split(",", 1)[0])
        reused = int(out.split("reused ", 1)[1].split(" ", 1)[0]) if "reused " in out else 0  # shown when not 0
        assert len(_rows(lib.home)) == embedded + reused
    final = subprocess.run(_command(lib.home, lib.db), env=env, capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stderr
    assert set(_rows(lib.home)) == {s.path for s in lib.songs}
    assert TrackStore.open(lib.home).failures() == []



# ---- readers never see a broken index; a damaged home has a way out ----------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_damaged_snapshot_is_rebuilt_by_embed_and_by_repair(small_library):
    lib = small_library
    assert _embed(lib).exit_code == 0
    _truncate((lib.home / "ann").resolve() / "vectors.npy")
    sim = lib.run("similar", lib.songs[0].path)
    assert sim.exit_code == 1 and "damaged" in sim.output and "recsys repair" in sim.output, sim.output
    # status says the same, not "out of date: run `recsys embed`" (by hand, an index file deleted)
    st = lib.run("status", "--db", str(lib.db))
    assert "index: damaged (vectors.npy " in st.output and "run `recsys repair` to rebuild it" in st.output, st.output
    r = _embed(lib)
    assert r.exit_code == 0 and "index: flat over 12 tracks" in r.output, r.output  # was "up to date", not rebuilt
    assert lib.run("similar", lib.songs[0].path).exit_code == 0
    ((lib.home / "ann").resolve() / "meta.parquet").unlink()
    r = lib.run("repair")
    assert r.exit_code == 0 and "index: rebuilt (flat, 12 tracks)" in r.output, r.output
    assert lib.run("similar", lib.songs[0].path).exit_code == 0


def _data_files(home: Path) -> list[Path]:
    return sorted((home / "tracks.lance" / "data").glob("*.lance"), key=lambda p: p.stat().st_mtime_ns)


def test_damaged_table_data_is_one_line_and_repair_restores_it(small_library, monkeypatch):
    """A truncated tracks.lance data file failed every run with Lance's internal text. It is named in one line, and
    `recsys repair` restores the last readable version (or rebuilds from the index) and says what must be decoded
    again; after it, embed decodes only that."""
    lib = small_library
    monkeypatch.setenv("RECSYS_EMBED__WRITE_BATCH", "4")  # several versions, each adding data files
    assert _embed(lib).exit_code == 0
    before = _rows(lib.home)
    for path in _data_files(lib.home):  # every version damaged: only the index snapshot can give the rows back
        _truncate(path)
    r = _embed(lib)
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "tracks.lance is damaged" in r.output and "`recsys repair`" in r.output
    r = lib.run("repair")
    assert r.exit_code == 0, r.output
    assert "table: damaged;" in r.output and "12 track(s) recovered from the index snapshot\n" in r.output, r.output
    after = _rows(lib.home)
    assert after.keys() == before.keys()
    for key, (cid, vector) in before.items():
        assert after[key][0] == cid and np.array_equal(after[key][1], vector)
    r = _embed(lib)
    assert r.exit_code == 0 and "embedded 0," in r.output and "up to date 12" in r.output, r.output


def test_repair_restores_the_last_readable_version(small_library):
    """Only the newest commit's data is damaged: the table goes back to the version before it, and repair says how
    many tracks that costs."""
    lib = small_library
    assert _embed(lib).exit_code == 0
    before = _rows(lib.home)
    store = TrackStore.open(lib.home)
    meta, vectors = store.read_all()
    row = {name: meta.column(name)[0].as_py() for name in meta.column_names}
    row.update(key="/m/late.flac", path="/m/late.flac", content_id="late")
    store.upsert([TrackRow(**row, vector=vectors[0])])  # one more commit, with a data file of its own
    _truncate(_data_files(lib.home)[-1])
    assert TrackStore.open(lib.home).damage() is not None
    r = lib.run("repair")
    assert r.exit_code == 0, r.output
    assert "table: damaged; restored its last readable version" in r.output, r.output
    assert "0 track(s) recovered from the index snapshot: 1 track(s) must be decoded again" in r.output
    assert _rows(lib.home).keys() == before.keys()
    assert lib.run("similar", lib.songs[0].path).exit_code == 0


def test_prune_removes_only_the_rows_of_missing_files(small_library):
    lib = small_library
    assert _embed(lib).exit_code == 0
    gone = Path(lib.songs[0].path)
    gone.unlink()
    assert _embed(lib).exit_code == 0
    assert str(gone) in _rows(lib.home)  # kept by embed
    r = lib.run("prune")
    assert r.exit_code == 0 and "removed 1 track(s)" in r.output and str(gone) in r.output, r.output
    assert set(_rows(lib.home)) == {s.path for s in lib.songs[1:]}
    assert set(load_snapshot(lib.home).keys) == {s.path for s in lib.songs[1:]}


def test_damaged_classifier_and_mlflow_store_have_a_way_out(small_library):
    """A damaged classifier.npz or mlflow.db gave an internal error: the playlist names the damage and ranks by
    similarity, and `recsys repair` moves both aside (kept) so training starts afresh."""
    lib = small_library
    assert _embed(lib).exit_code == 0
    models = lib.home / "models"
    models.mkdir(exist_ok=True)  # embed may have made it (encoder facts)
    (models / "classifier.json").write_text('{"kind": "mlp", "encoder_id": "x"}')
    (models / "classifier.npz").write_bytes(b"PK\x03\x04 truncated")
    (lib.home / "mlflow.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    r = lib.run("playlist", "--db", str(lib.db), "--out", str(lib.root / "p.xspf"), "--include-rated")
    assert r.exit_code == 0 and "classifier in" in r.output and "is damaged" in r.output, r.output
    r = lib.run("repair")
    assert r.exit_code == 0, r.output
    assert "mlflow.db: damaged" in r.output and "classifier: damaged" in r.output, r.output
    assert not (lib.home / "mlflow.db").exists() and not (models / "classifier.npz").exists()
    assert len(list(lib.home.glob("mlflow.db.damaged-*"))) == 1
    r = lib.run("repair")
    assert r.exit_code == 0 and "damaged" not in r.output, r.output
