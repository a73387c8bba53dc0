"""`recsys embed --engine ray` (recsys/pipeline/ray_engine.py) on a real local Ray: the same vectors as the local
engine, one table version per chunk, a crash in a later chunk keeps the earlier ones and the rerun does only the rest,
the encoder actor placed on the (declared) GPU, nothing written to the user's home.

One Ray session for the whole module (starting Ray costs seconds): ``num_cpus=2`` and ``num_gpus=1`` declared, so the
encoder actor's GPU placement is exercised on a machine without one (CUDA itself is not).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'recsys[ray]')")
lance = pytest.importorskip("lance", reason="the ray extra is not installed (pip install 'recsys[ray]')")

from conftest import SR  # noqa: E402

from recsys.app.embed import embed_library  # noqa: E402
from recsys.app.settings import command_settings  # noqa: E402
from recsys.cli import main  # noqa: E402
from recsys.embedder.active import resolve_encoder  # noqa: E402
from recsys.embedder.decoding import decode_spec  # noqa: E402
from recsys.home import read_stamp  # noqa: E402
from recsys.index.store import TrackStore  # noqa: E402
from recsys.library.sources import load_configured_library  # noqa: E402
from recsys.pipeline import ray_engine  # noqa: E402
from recsys.pipeline.ray_engine import _decode_part, embed_tracks_ray, ray_session  # noqa: E402
from recsys.synth.audio import synth_track, write_audio  # noqa: E402

# dsp is deterministic arithmetic on the same decoded samples: the two engines agree to float32 rounding
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory):
    """The Ray session; yields the fake user home it was started under (checked empty at the end)."""
    user_home = tmp_path_factory.mktemp("ray-user-home")
    saved = {name: os.environ.get(name) for name in ("HOME", "RAY_AUTH_MODE")}
    os.environ["HOME"] = str(user_home)  # Ray's workers inherit it: anything written to '~' lands here
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    try:
        yield user_home
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert not list(user_home.rglob("*")), "Ray wrote into the user's home"


def _settings(lib, home: Path):
    return command_settings(None, str(home), db=str(lib.db), embed={"encoder": "dsp", "device": "cpu", "workers": 1})


def _ray_run(lib, home: Path, chunk_size: int, before_commit=None, encoder: str = "dsp"):
    settings = _settings(lib, home)
    resolved = resolve_encoder(encoder, home, "cpu")
    spec = decode_spec(settings.audio, resolved.encoder.sample_rate)
    eid = spec.vector_id(resolved.encoder_id)
    tracks = load_configured_library(settings).tracks
    store = TrackStore.open(home)
    report = embed_tracks_ray(tracks, store, encoder, "cpu", eid, int(resolved.encoder.dim), spec,
                              label=resolved.label, built_id=resolved.encoder_id,
                              chunk_size=chunk_size, before_commit=before_commit)
    return report, store


def _vectors(home: Path) -> dict[str, np.ndarray]:
    table, vectors = TrackStore.open(home, writable=False).read_all()
    return dict(zip(table.column("key").to_pylist(), vectors, strict=True))


def _assert_same_vectors(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert ours.keys() == theirs.keys()
    worst = max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours)
    assert worst <= TOLERANCE, worst


def test_same_vectors_as_the_local_engine_one_version_per_chunk_on_the_gpu_slot(small_library, ray_home, tmp_path):
    local = embed_library(_settings(small_library, tmp_path / "local"))
    assert local.embedded == 12

    report, _ = _ray_run(small_library, tmp_path / "ray", 5)
    assert report.embedded == 12 and report.failed == 0 and not report.interrupted
    assert report.device == "ray: 1 encoder actor(s), GPU [0]", report.device  # it held the declared GPU slot
    _assert_same_vectors(_vectors(tmp_path / "ray"), _vectors(tmp_path / "local"))

    # changed files: their keys are in the table, so their new rows replace the old ones (an Append would add twice)
    changed = sorted(small_library.music.glob("*.wav"))[:2]
    for n, path in enumerate(changed):
        write_audio(path, synth_track("drum_loop", 6.0, sample_rate=SR, seed=90 + n), SR, "wav")
    before = _vectors(tmp_path / "ray")
    again, store = _ray_run(small_library, tmp_path / "ray", 5)
    assert (again.embedded, again.up_to_date, store.count) == (2, 10, 12)
    after = _vectors(tmp_path / "ray")
    assert len(after) == 12  # one row per key
    replaced = {k for k in after if not np.array_equal(after[k], before[k])}
    assert replaced == {str(path) for path in changed}, replaced  # the two rows replaced, the ten others untouched


def test_one_commit_per_chunk_a_crash_keeps_the_committed_chunks_a_new_encoder_replaces_all(small_library, ray_home,
                                                                                             tmp_path):
    home = tmp_path / "home"
    seen: list[int] = []

    def crash_in_third_chunk(i: int) -> None:
        seen.append(TrackStore.open(home, writable=False).version)
        if i == 2:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        _ray_run(small_library, home, 4, crash_in_third_chunk)
    assert TrackStore.open(home, writable=False).count == 8  # chunks 0 and 1 committed, chunk 2 not
    assert seen[2] - seen[1] == 1  # the second chunk was exactly one commit of the tracks table
    commits = lance.dataset(str(home / "tracks.lance")).get_transactions(2)
    assert [type(c.operation).__name__ for c in commits] == ["Append", "Append"]  # workers' fragments, not a merge

    rerun, store = _ray_run(small_library, home, 4)
    assert (rerun.embedded, rerun.up_to_date) == (4, 8)
    assert store.count == 12
    again, _ = _ray_run(small_library, home, 4)
    assert (again.embedded, again.up_to_date, again.failed) == (0, 12, 0)

    # an encoder of another dimension: the first commit empties the table (as the local engine does), every row goes
    # in again by Append, none twice
    other, store = _ray_run(small_library, home, 6, encoder="cnn")
    assert (other.embedded, other.stale, store.count, store.dim) == (12, 12, 12, 256)
    assert set(store.read_all()[0].column("encoder_id").to_pylist()) == {other.encoder_id}
    commits = lance.dataset(str(home / "tracks.lance")).get_transactions(3)
    assert [type(c.operation).__name__ for c in commits] == ["Append", "Append", "Overwrite"]


def test_an_undecodable_file_is_recorded_as_the_local_engine_records_it(small_library, ray_home, tmp_path):
    bad = sorted(small_library.music.iterdir())[3]
    bad.write_bytes(b"not audio at all" * 100)
    report, store = _ray_run(small_library, tmp_path / "home", 5)
    assert (report.embedded, report.failed) == (11, 1)
    assert [f.path for f in store.failures()] == [str(bad)]
    again, _ = _ray_run(small_library, tmp_path / "home", 5)
    assert (again.embedded, again.known_failed) == (0, 1)


def test_a_running_session_is_reused_and_the_cli_counts_as_after_a_local_run(small_library, ray_home, tmp_path,
                                                                             monkeypatch):
    """`recsys embed --engine ray` and `recsys status` after it print what they print after a local run (an
    undecodable file included), but for the device and the timing."""
    with ray_session(None):  # already running: used as it is, and left running
        pass
    assert ray.is_initialized()
    monkeypatch.setenv("RECSYS_EMBED__ENCODER", "dsp")
    sorted(small_library.music.iterdir())[3].write_bytes(b"not audio at all" * 100)
    printed = {}
    for engine in ("local", "ray"):
        home = tmp_path / engine
        lines = []
        for args in (("embed", "--engine", engine), ("status",)):
            r = CliRunner().invoke(main, ["--home", str(home), *args, "--db", str(small_library.db)],
                                   catch_exceptions=False)
            assert r.exit_code == 0, r.output
            lines += [line.replace(str(home), "HOME") for line in r.output.splitlines()
                      if not line.startswith(("encoder: ", "decoded "))]
        printed[engine] = lines
    assert "embedded 11, up to date 0, failed 1 new + 0 known" in printed["ray"], printed["ray"]
    assert "failed: 1" in printed["ray"], printed["ray"]
    assert printed["ray"] == printed["local"]


def test_address_without_the_ray_engine_is_refused_in_one_line(small_library):
    r = small_library.run("embed", "--db", str(small_library.db), "--address", "auto", "-q")
    assert r.exit_code == 2 and "--address joins a Ray cluster: give it with --engine ray" in r.output, r.output


def test_an_actor_that_builds_another_encoder_stops_the_run_in_one_line(small_library, ray_home, tmp_path):
    """A node that sees another checkpoint under the driver's name would store other vectors under this id."""
    from recsys.errors import RecsysError

    settings = _settings(small_library, tmp_path / "home")
    resolved = resolve_encoder("dsp", tmp_path / "home", "cpu")
    spec = decode_spec(settings.audio, resolved.encoder.sample_rate)
    store = TrackStore.open(tmp_path / "home")
    with pytest.raises(RecsysError, match="is not the driver's"):
        embed_tracks_ray(load_configured_library(settings).tracks, store, "dsp", "cpu", "eid", 32, spec,
                         label="dsp", built_id="another-encoder")
    assert store.count == 0


def _encoder_actors() -> list[dict]:
    """The GCS's record of every encoder actor of this Ray session (its pid, state and restarts)."""
    from ray._private import state

    return [a for a in state.actors().values() if a["ActorClassName"] == "_EncoderActor"]


def test_a_killed_encoder_worker_is_restarted_and_no_chunk_is_lost(small_library, ray_home, tmp_path):
    """kill -9 of the encoder actor's process after the first commit, with the next chunk in flight: Ray starts the
    actor again and retries its call; every track is embedded once, nothing is recorded as failed."""
    before = {a["ActorID"] for a in _encoder_actors()}
    killed: list[int] = []

    def kill_the_encoder(i: int) -> None:
        if i == 0:
            (actor,) = [a for a in _encoder_actors() if a["ActorID"] not in before and a["State"] == "ALIVE"]
            os.kill(actor["Pid"], signal.SIGKILL)
            killed.append(actor["Pid"])

    report, store = _ray_run(small_library, tmp_path / "home", 6, kill_the_encoder)
    assert killed and (report.embedded, report.failed, store.count) == (12, 0, 12)
    (actor,) = [a for a in _encoder_actors() if a["ActorID"] not in before]
    assert actor["NumRestarts"] >= 1  # it was started again, not replaced by luck
    again, _ = _ray_run(small_library, tmp_path / "home", 6)
    assert (again.embedded, again.up_to_date) == (0, 12)


def test_a_driver_killed_after_a_commit_keeps_every_committed_chunk(small_library, ray_home, tmp_path):
    """`recsys embed --engine ray` (the CLI, joining this session's cluster) killed with SIGKILL once its first chunk
    is committed: the table opens with whole chunks only, the rerun embeds only the rest, a second rerun nothing."""
    home = tmp_path / "home"
    env = {**os.environ, "RECSYS_EMBED__ENCODER": "dsp", "RECSYS_EMBED__RAY_CHUNK": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-m", "recsys.cli", "--home", str(home), "embed", "--db",
                               str(small_library.db), "--engine", "ray", "--address", address, "-q"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while (read_stamp(home) or {}).get("count", 0) < 2:
            assert driver.poll() is None, driver.stderr.read().decode()
            assert time.monotonic() < deadline, "no chunk was committed in two minutes"
            time.sleep(0.01)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    committed = TrackStore.open(home).count
    assert committed % 2 == 0 and 2 <= committed < 12, committed  # whole chunks only, and not all of them
    rerun, store = _ray_run(small_library, home, 12)
    assert (rerun.embedded, rerun.up_to_date, rerun.failed) == (12 - committed, committed, 0)
    assert store.count == 12
    again, _ = _ray_run(small_library, home, 12)
    assert (again.embedded, again.up_to_date) == (0, 12)


CRASHING_FILE = ""  # set by the test below before the engine ships _crashing_decode to Ray (by value)


def _crashing_decode(jobs, spec):
    """The engine's decode task, but its worker process dies (SIGKILL, as from the OOM killer or a decoder's
    segfault) whenever its part holds CRASHING_FILE."""
    if any(job.track.path == CRASHING_FILE for job in jobs):
        os.kill(os.getpid(), signal.SIGKILL)
    return _decode_part(jobs, spec)


def test_a_file_that_kills_its_decode_worker_every_time_is_that_files_failure(small_library, ray_home, tmp_path,
                                                                              monkeypatch):
    """Ray retries the part, then decodes its files one per task: only the file whose worker dies is lost, recorded
    as a failure (as the local engine records a decoder crash); the rest of its part is embedded."""
    global CRASHING_FILE
    CRASHING_FILE = str(sorted(small_library.music.iterdir())[5])
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    monkeypatch.setattr(ray_engine, "_decode_part", _crashing_decode)
    try:
        report, store = _ray_run(small_library, tmp_path / "home", 12)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (report.embedded, report.failed, store.count) == (11, 1, 11)
    (failure,) = store.failures()
    assert failure.path == CRASHING_FILE and "the decoder crashed on this file" in failure.error, failure.error
