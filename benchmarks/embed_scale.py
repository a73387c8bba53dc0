"""Embedding beyond one machine: the local engine against `recsys embed --engine ray` (issue 24, item 5), side by side
in one run (the machine is shared: compare the ratios of one run, each line carries the load average it ran under).

(a) tracks/s of the local engine (``embed_tracks``, N decode worker processes) and of the Ray engine (a local Ray of
    N CPUs: N decode tasks, one encoder actor), N = 1 and 2, same library, each into a fresh table on local disk;
    with ``--s3`` also into a table in a bucket of a moto S3 server started here (``--table s3://...``);
(b) the Ray engine with K encoder actors and K decode slots (K GPUs and K CPUs declared to a local Ray; the actors run
    on the CPU) when every file costs ``--latency-ms`` of storage latency before it is decoded (a file server, a
    bucket): latency-bound work scales with K until the machine's cores are busy;
(c) the cost of one chunk's commit (``--chunk`` rows): ``lance_ray.write_lance`` (Ray tasks write the fragments, one
    Append) against the driver's ``merge_insert`` (``TrackStore.upsert``, what stale keys take), into tables of
    ``--table-rows`` rows.

    python benchmarks/embed_scale.py [--tracks 48] [--seconds 20] [--encoder dsp] [--latency-ms 250]
                                     [--actors 1 2 4] [--chunk 512] [--table-rows 10000 100000 1000000] [--s3]
                                     [--dir /tmp/recsys-bench-scale] [--skip a b c]

Run from the repository root with the ray extra installed (``pip install -e '.[ray]'``; ``--s3`` also needs
``moto[server]`` and a checkout whose store opens ``s3://`` tables).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from embed_throughput import build  # noqa: E402 - the mixed-format synthetic library, written once and reused

from recsys.app.settings import command_settings  # noqa: E402
from recsys.embedder.active import resolve_encoder  # noqa: E402
from recsys.embedder.decoding import decode_spec  # noqa: E402
from recsys.index.store import TrackRow, TrackStore, track_batch  # noqa: E402
from recsys.library.sources import load_configured_library  # noqa: E402
from recsys.pipeline import ray_engine  # noqa: E402
from recsys.pipeline.run import embed_tracks  # noqa: E402

LATENCY_S = 0.0  # per file, slept by the decode tasks of part (b) (set in main before Ray starts)


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


@contextmanager
def _ray(cpus: int, gpus: int = 0):
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="recsys-bench-ray-"))
    try:
        yield time.perf_counter() - started
    finally:
        ray.shutdown()


def _slow_decode_part(jobs, spec):
    """The engine's decode task after the storage latency of each file (defined here, so Ray ships it by value)."""
    time.sleep(LATENCY_S * len(jobs))
    return _ORIGINAL_DECODE(jobs, spec)


_ORIGINAL_DECODE = ray_engine._decode_part


class Bench:
    def __init__(self, args: argparse.Namespace, music: Path) -> None:
        self.args, self.music = args, music
        self.settings = command_settings(None, str(args.dir / "home-unused"), folders=[str(music)],
                                         embed={"encoder": args.encoder, "device": "cpu"})
        self.tracks = load_configured_library(self.settings).tracks
        self.resolved = resolve_encoder(args.encoder, args.dir, "cpu")
        self.spec = decode_spec(self.settings.audio, self.resolved.encoder.sample_rate)
        self.eid = self.spec.vector_id(self.resolved.encoder_id)
        self.runs = 0

    def fresh_store(self, table: str | None = None):
        self.runs += 1
        home = Path(tempfile.mkdtemp(prefix=f"home{self.runs}-", dir=self.args.dir))
        if table is None:
            return TrackStore.open(home), home
        from recsys.index.store import TableLocation  # the store of a checkout that opens tables in buckets

        location = TableLocation(f"{table}/run{self.runs}", dict(self.args.storage_options))
        lease = location.lease("benchmarks/embed_scale.py")
        lease.__enter__()  # held until the process ends: one run per table
        return TrackStore.open(home, location=location), home

    def local(self, workers: int, table: str | None = None) -> tuple[int, float, float]:
        """(tracks embedded, seconds of the whole run, tracks/s once running: :meth:`_Commits.steady`)."""
        store, _ = self.fresh_store(table)
        clock = _Commits()
        report = embed_tracks(self.tracks, store, self.resolved.encoder, self.eid, self.spec, workers=workers,
                              label=self.resolved.label, progress=clock)
        return report.embedded, report.seconds, clock.steady()

    def ray(self, table: str | None = None, chunks: int = 6) -> tuple[int, float, float]:
        """(tracks embedded, seconds of the whole run, tracks/s once running: :meth:`_Commits.steady`, the actors'
        start and the first write tasks' imports left out, what a long run sees)."""
        store, _ = self.fresh_store(table)
        clock = _Commits()
        report = ray_engine.embed_tracks_ray(
            self.tracks, store, self.args.encoder, "cpu", self.eid, int(self.resolved.encoder.dim), self.spec,
            label=self.resolved.label, built_id=self.resolved.encoder_id,
            chunk_size=-(-len(self.tracks) // chunks), progress=clock)
        return report.embedded, report.seconds, clock.steady()


class _Commits:
    """A progress bar that notes when its tracks were done (the Ray engine advances it once per commit, the local
    engine once per track)."""

    def __init__(self) -> None:
        self.done: list[tuple[float, int]] = []

    def __call__(self, total: int) -> _Commits:
        return self

    def update(self, n: int) -> None:
        self.done.append((time.perf_counter(), n))

    def close(self) -> None:
        pass

    def steady(self) -> float:
        """Tracks/s over the last two thirds of the run: what a long run sees, once the workers, the actors and
        Ray's write tasks have started (with 6 chunks: from the second commit on; the Ray engine's next chunk is
        always in flight while one commits, so the first interval after the start would overlap it)."""
        total, done = sum(n for _, n in self.done), 0
        for i, (at, n) in enumerate(self.done):
            done += n
            if done >= total / 3 and i + 1 < len(self.done):
                return (total - done) / (self.done[-1][0] - at)
        return float("nan")


def part_a(bench: Bench) -> None:
    print("\n(a) tracks/s, local engine (N decode processes; N=1: decoding in the encoding process) against Ray (a "
          "local Ray of N CPUs: N decode tasks beside the encoder actor, which claims none); ray.init not counted")
    targets = [("local disk", None)] + ([("S3 (moto)", bench.args.s3_table)] if bench.args.s3_table else [])
    print("| table | N | local tracks/s, whole run | Ray tracks/s, whole run | Ray / local | local, once running | "
          "Ray, once running | Ray / local | ray.init s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for where, table in targets:
        for n in (1, 2):
            load = _load()
            done, local_s, local_steady = bench.local(n, table)
            with _ray(n) as start_s:
                done_ray, ray_s, steady = bench.ray(table)
            assert done == done_ray == len(bench.tracks), (done, done_ray)
            print(f"| {where} | {n} | {done / local_s:.2f} | {done_ray / ray_s:.2f} | {local_s / ray_s:.2f} | "
                  f"{local_steady:.2f} | {steady:.2f} | {steady / local_steady:.2f} | {start_s:.1f} | "
                  f"{load}-{_load()} |", flush=True)


def part_b(bench: Bench) -> None:
    global LATENCY_S
    LATENCY_S = bench.args.latency_ms / 1000
    ray_engine._decode_part = _slow_decode_part
    ideal_one = None
    print(f"\n(b) Ray with K encoder actors and K decode slots, {bench.args.latency_ms:g} ms of storage latency a file "
          f"({os.cpu_count()} cores here)")
    print("| K | tracks/s, whole run | tracks/s once running | speed-up over K=1 (once running) "
          "| latency-bound ceiling (K / latency) | load |")
    print("|---|---|---|---|---|---|")
    try:
        for k in bench.args.actors:
            load = _load()
            with _ray(k, gpus=k):
                done, seconds, steady = bench.ray()
            ideal_one = ideal_one or steady
            print(f"| {k} | {done / seconds:.2f} | {steady:.2f} | {steady / ideal_one:.2f} | {k / LATENCY_S:.1f} | "
                  f"{load}-{_load()} |", flush=True)
    finally:
        ray_engine._decode_part = _ORIGINAL_DECODE


def _rows(n: int, start: int, dim: int, rng: np.random.Generator) -> list[TrackRow]:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [TrackRow(key=f"/music/{i:08d}.flac", path=f"/music/{i:08d}.flac", start_s=0.0, content_id=f"c{i:08d}",
                     size=i, mtime_ns=i, duration_s=200.0, artist=f"artist {i % 2000}", album=f"album {i % 9000}",
                     title=f"title {i}", genre="", year=None, track_number=None, encoder_id="bench",
                     vector=vectors[j]) for j, i in enumerate(range(start, start + n))]


def part_c(bench: Bench) -> None:
    import lance
    import lance_ray
    import ray

    dim, chunk, rng = int(bench.resolved.encoder.dim), bench.args.chunk, np.random.default_rng(0)
    print(f"\n(c) one chunk's commit: {chunk} rows of {dim}-d vectors (seconds, median of 3; write_lance after two "
          "calls that start Ray's write workers)")
    print("| rows in the table | write_lance Append (new keys) | merge_insert, new keys | merge_insert, stale keys "
          "| load |")
    print("|---|---|---|---|---|")
    ray_engine._quiet_data()
    with _ray(2):
        for size in bench.args.table_rows:
            store, _ = bench.fresh_store()
            store.upsert(_rows(1, 0, dim, rng))
            for start in range(1, size, 50_000):  # built by plain appends (fast), as a long first run leaves it
                batch = track_batch(_rows(min(50_000, size - start), start, dim, rng), dim, None)
                store.append_with(lambda uri, schema, _o, b=batch: lance.write_dataset(b, uri, schema=schema,
                                                                                      mode="append"), dim, None)
            store.compact()
            load, next_key = _load(), size
            append_s, new_s, stale_s = [], [], []
            for rep in range(5):  # the first two write_lance calls of a Ray session start its write workers
                refs = [ray.put(track_batch(part, dim, None)) for part in _halves(_rows(chunk, next_key, dim, rng))]
                next_key += chunk
                started = time.perf_counter()
                store.append_with(lambda uri, schema, o, r=refs: lance_ray.write_lance(
                    ray.data.from_arrow_refs(r), uri, schema=schema, mode="append", storage_options=o,
                    ray_remote_args={"num_cpus": 0}), dim, None)
                if rep < 2:
                    continue
                append_s.append(time.perf_counter() - started)
                rows = _rows(chunk, next_key, dim, rng)
                next_key += chunk
                started = time.perf_counter()
                store.upsert(rows)
                new_s.append(time.perf_counter() - started)
                rows = _rows(chunk, int(rng.integers(0, size - chunk)), dim, rng)
                started = time.perf_counter()
                store.upsert(rows)
                stale_s.append(time.perf_counter() - started)
            print(f"| {size:,} | {statistics.median(append_s):.3f} | {statistics.median(new_s):.3f} | "
                  f"{statistics.median(stale_s):.3f} | {load}-{_load()} |", flush=True)


def _halves(rows: list) -> list[list]:
    return [rows[0::2], rows[1::2]]  # two encoder calls' tables, as one chunk of a 2-CPU run leaves them


@contextmanager
def _moto_bucket(args: argparse.Namespace):
    """A moto S3 server on 127.0.0.1 with one bucket; credentials in AWS_* only (as a user sets them)."""
    import recsys.index.store as store_module

    if not hasattr(store_module, "TableLocation"):
        sys.exit("--s3: TrackStore in this checkout cannot open a table in a bucket yet (it comes with `--table "
                 "s3://...`, branch s3table): run this after that is merged, or leave out --s3")
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        sys.exit("--s3 needs moto[server] (pip install -e '.[dev]')")
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"})
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    args.s3_table = "s3://bench/scale"
    args.storage_options = {"endpoint": endpoint, "region": "us-east-1", "allow_http": "true"}
    try:
        yield
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each synthetic track")
    parser.add_argument("--encoder", default="dsp")
    parser.add_argument("--latency-ms", type=float, default=250.0)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--chunk", type=int, default=ray_engine.DEFAULT_CHUNK)
    parser.add_argument("--table-rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--s3", action="store_true", help="also into a table in a moto S3 server's bucket")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench-scale")
    parser.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # fork() beside Ray's threads, Ray Data's own
    args.s3_table, args.storage_options = None, {}
    args.dir.mkdir(parents=True, exist_ok=True)
    os.environ["HOME"] = str(args.dir)  # Ray's and the encoder's caches stay out of the user's home
    music = args.dir / f"music-{args.tracks}x{args.seconds:g}s"
    build(music, args.tracks, args.seconds / 60)
    bench = Bench(args, music)
    print(f"{len(bench.tracks)} tracks of {args.seconds:g} s (mixed formats), encoder {bench.resolved.label}, "
          f"{os.cpu_count()} cores, load average at start {_load()}")
    with _moto_bucket(args) if args.s3 else _nothing():
        if "a" not in args.skip:
            part_a(bench)
        if "b" not in args.skip:
            part_b(bench)
        if "c" not in args.skip:
            part_c(bench)


@contextmanager
def _nothing():
    yield


if __name__ == "__main__":
    main()
