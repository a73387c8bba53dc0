"""Playlist and similar latency on a large synthetic library, end to end (process start to file written).

A --tracks table (one empty file per track so the "exists on disk" check is real, tags, vectors, its index
snapshot) with a Clementine database holding --ratings ratings. The default library is realistic (``realistic``):
albums of about 12 tracks with album artists and "Various Artists" compilations, play history on a third of the
unrated tracks, non-ASCII paths, 200-d vectors from overlapping styles. ``--library simple`` is the earlier one
(every track its own album, history only on the rated tracks, 90-d well-separated clusters).

Measures, in one run: `recsys train-classifier` (wall time), then --repeat times `recsys playlist --top-n 100` and
`recsys similar` (fresh processes: wall time and the process's own peak RSS), warm and with --cold also after
evicting the home's files and the database from the page cache (one untimed playlist of each checkout first: what
a first run stores, the classifier's scores, is stored); with --before CHECKOUT the same commands of another
checkout alternate with this one's, and their playlists are compared. Goals (issue 26): playlist < 2 s at 1 M
tracks, < 1 s at 100 k; similar < 0.5 s at 1 M; cold < 5 s and < 1.5 s.

    python benchmarks/playlist_latency.py [--tracks 100000] [--ratings 5000] [--library realistic|simple]
        [--cold] [--before /path/to/other/checkout] [--dir /tmp/recsys-bench-playlist]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _synthetic_home import Song, build_home

DIM = 90  # the dsp encoder's dimension
ENCODER_ID = "bench-clustered"
CLUSTERS = 200


def library(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``CLUSTERS`` centres, and each track's cluster (its 'style')."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    cluster = rng.integers(0, CLUSTERS, n)
    vectors = centres[cluster] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, cluster


def build(root: Path, n: int, n_ratings: int) -> Path:
    """The table, the snapshot, the files and the database under ``root``; returns the database path."""
    vectors, cluster = library(n)
    liked_clusters = set(range(0, CLUSTERS, 10))
    rng = np.random.default_rng(1)
    rated = set(rng.choice(n, n_ratings, replace=False).tolist())
    stars = {i: 5 if cluster[i] in liked_clusters else int(rng.integers(1, 4)) for i in sorted(rated)}
    return build_home(root, vectors, ENCODER_ID, artists=20000, stars=lambda i: stars.get(i, 0))


# Artist names: plain, Latin with diacritics, and not Latin at all, so paths and URIs are percent-encoded.
NAMES = ("Artist {}", "Björk Guðmundsdóttir {}", "Sigur Rós {}", "Motörhead {}", "東京事変 {}", "Анна {}",
         "Beyoncé {}", "The Band {}")
SHARED_TITLES = ("Greatest Hits", "Live", "Untitled", "Best Of", "Demos")  # album titles many artists use
VARIOUS = "Various Artists"


def realistic(n: int, n_ratings: int, dim: int, seed: int = 0) -> tuple[np.ndarray, list[Song]]:
    """A library as owners have them: albums of about 12 tracks in ``Artist/Album/NN Title.flac`` folders, album
    artists on most albums (none on some), compilations by "Various Artists" with a different performer per track,
    album titles that several artists share, non-ASCII names (percent-encoded URIs), vectors from overlapping
    styles (each album a blend of two of ``CLUSTERS`` style centres), ``n_ratings`` ratings that lean toward a
    tenth of the styles without following them exactly (whole albums rated as well as single tracks), and play
    history on a third of the unrated tracks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim)).astype(np.float32)
    liked_styles = set(range(0, CLUSTERS, 10))
    artists = max(1, n // 60)  # about five albums each
    vectors = np.empty((n, dim), np.float32)
    songs: list[Song] = []
    style_of: list[int] = []
    album_starts: list[int] = []
    k = 0
    while len(songs) < n:
        size = min(int(rng.integers(8, 17)), n - len(songs))
        a, b = rng.integers(0, CLUSTERS, 2)
        w = rng.uniform(0.5, 1.0)
        centre = w * centres[a] + (1 - w) * centres[b] + 0.5 * rng.standard_normal(dim).astype(np.float32)
        compilation = rng.random() < 0.08
        artist_no = int(rng.integers(0, artists))
        owner = VARIOUS if compilation else NAMES[artist_no % len(NAMES)].format(artist_no)
        title = (f"{SHARED_TITLES[k % len(SHARED_TITLES)]}" if rng.random() < 0.1 else f"Album {k}")
        folder = f"{owner}/{title} ({k})" if compilation or title in SHARED_TITLES else f"{owner}/{title}"
        tagged_owner = owner if compilation or rng.random() < 0.7 else ""
        album_starts.append(len(songs))
        for t in range(size):
            performer = NAMES[(p := int(rng.integers(0, artists))) % len(NAMES)].format(p) if compilation else owner
            name = f"Song {len(songs)} ½" if rng.random() < 0.05 else f"Song {len(songs)}"
            vectors[len(songs)] = centre + 0.8 * rng.standard_normal(dim).astype(np.float32)
            songs.append(Song(f"{folder}/{t + 1:02d} {name}.flac", name, performer, title, tagged_owner, t + 1))
            style_of.append(int(a))
        k += 1
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # ratings: half on whole albums, half on single tracks; liked more often in the liked styles
    rated: list[int] = []
    for start in rng.permutation(album_starts).tolist():
        if len(rated) >= n_ratings // 2:
            break
        rated += range(start, min(start + 12, n))
    rated = list(dict.fromkeys(rated[: n_ratings // 2] + rng.choice(n, n_ratings, replace=False).tolist()))
    for i in rated[:n_ratings]:
        liked = rng.random() < (0.8 if style_of[i] in liked_styles else 0.12)
        songs[i].stars = int(rng.integers(4, 6)) if liked else int(rng.integers(1, 4))
        songs[i].playcount = int(rng.integers(0, 20))
    unrated = np.flatnonzero([s.stars == 0 for s in songs])
    for i in rng.choice(unrated, len(unrated) // 3, replace=False).tolist():
        songs[i].playcount = int(rng.geometric(0.3))
        songs[i].skipcount = int(rng.integers(0, 3))
        songs[i].lastplayed = 1_700_000_000 + int(rng.integers(0, 10**8))
    return vectors, songs


def build_realistic(root: Path, n: int, n_ratings: int, dim: int) -> Path:
    """The realistic library (:func:`realistic`) under ``root``; returns the database path."""
    vectors, songs = realistic(n, n_ratings, dim)
    return build_home(root, vectors, ENCODER_ID, songs=songs)


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (``posix_fadvise`` DONTNEED: no root needed, clean pages only),
    so the next command reads them from the disk as after a reboot."""
    for top in paths:
        for path in [top] if top.is_file() else (p for p in top.rglob("*") if p.is_file()):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


PEAK = """import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as f:
        hwm = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(hwm)
atexit.register(peak)
sys.argv[0] = "recsys"
runpy.run_module("recsys.cli", run_name="__main__")
"""


def run(args: list[str], code: str | None = None) -> tuple[float, str, int, float]:
    """(seconds, stdout, peak RSS in MiB, CPU seconds) of one fresh ``recsys`` process, with the checkout ``code``
    first on PYTHONPATH when given (the side-by-side "before"). The peak is the process's own high-water mark after
    its ``exec`` (VmHWM, read as it exits): ``wait4``'s ``ru_maxrss`` would count the forking parent's memory too.
    The CPU time (user + system) is what a loaded machine distorts least."""
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = code
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        env["BENCH_PEAK_FILE"] = peak.name
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        # -P: no current folder first on sys.path, where a checkout would shadow ``code`` (the "before" ran this
        # checkout's code whenever the benchmark was started from a checkout's root)
        done = subprocess.run([sys.executable, "-P", "-c", PEAK, *args], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()}")
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return seconds, done.stdout, int(peak.read() or 0) // 1024, cpu


def same_playlist(a: Path, b: Path) -> bool:
    """Whether two XSPF files are the same playlist (everything but the date line)."""
    def body(p: Path) -> list[str]:
        return [line for line in p.read_text(encoding="utf-8").splitlines() if "<date>" not in line]
    return body(a) == body(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--ratings", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--library", choices=("realistic", "simple"), default="realistic",
                        help="realistic (default): albums, compilations, history, non-ASCII paths, 200-d; "
                             "simple: the earlier benchmark's clustered library (one album per track, 90-d)")
    parser.add_argument("--dim", type=int, default=200, help="vector dimension of the realistic library")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/recsys-bench-playlist"))
    parser.add_argument("--cold", action="store_true", help="also time each command with the home's files and the "
                        "database evicted from the page cache first")
    parser.add_argument("--before", metavar="CHECKOUT", help="another recsys checkout to time side by side (its "
                        "runs alternate with this one's) and whose playlist must be the same file")
    parser.add_argument("--skip-train", action="store_true", help="keep the classifier already trained")
    a = parser.parse_args()
    name = f"{a.tracks}-{a.ratings}" if a.library == "simple" else f"{a.library}-{a.tracks}-{a.ratings}-{a.dim}"
    root = a.dir / name
    if not (root / "clementine.db").is_file():
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        if a.library == "simple":
            build(root, a.tracks, a.ratings)
        else:
            build_realistic(root, a.tracks, a.ratings, a.dim)
        print(f"built {a.tracks} tracks with {a.ratings} ratings in {time.perf_counter() - started:.0f} s")
    base = ["--home", str(root / "home")]
    db = ["--db", str(root / "clementine.db")]
    if not a.skip_train:
        wall, out, _, _ = run([*base, "train-classifier", *db])
        print(f"train-classifier: {wall:.2f} s wall ({out.strip().splitlines()[-1]})")
    query = "artist 12345 - title 12345"
    if a.library == "realistic":  # 'artist - title' of one track, as a person types it
        conn = sqlite3.connect(f"file:{root / 'clementine.db'}?mode=ro", uri=True)
        query = " - ".join(conn.execute("SELECT artist, title FROM songs WHERE title LIKE 'Song 12345%'").fetchone())
        conn.close()
    codes = {"this": None, **({"before": a.before} if a.before else {})}
    rows: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
    for label, code in codes.items():  # not timed: what a first run stores (the classifier's scores) and reads
        run([*base, "playlist", *db, "--top-n", "100", "--out", str(root / f"p-{label}-warm.xspf"), "--force",
             "--no-rest"], code)
    for n in range(a.repeat):
        for cold in ((False, True) if a.cold else (False,)):
            for label, code in codes.items():
                if cold:
                    evict([root / "home", root / "clementine.db"])
                out = root / f"p-{label}-{n}{'-cold' if cold else ''}.xspf"
                seconds, _, peak, cpu = run([*base, "playlist", *db, "--top-n", "100", "--out", str(out), "--force",
                                             "--no-rest"], code)
                rows.setdefault((label, "playlist" + (" cold" if cold else "")), []).append((seconds, peak, cpu))
                if cold:
                    evict([root / "home"])
                seconds, _, peak, cpu = run([*base, "similar", query, "-k", "10"], code)
                rows.setdefault((label, "similar" + (" cold" if cold else "")), []).append((seconds, peak, cpu))
    for (label, what), runs in rows.items():
        times = [t for t, _, _ in runs]
        print(f"{label:>6} {what:<14} median {statistics.median(times):.2f} s, min {min(times):.2f}, "
              f"max {max(times):.2f} s (CPU median {statistics.median(c for _, _, c in runs):.2f} s), "
              f"peak RSS {max(p for _, p, _ in runs)} MiB over {len(runs)} fresh processes")
    if a.before:
        names = ["warm", *(f"{n}{cold}" for n in range(a.repeat) for cold in ("", "-cold")[:1 + a.cold])]
        same = all(same_playlist(root / f"p-this-{name}.xspf", root / f"p-before-{name}.xspf") for name in names)
        print(f"playlists the same as before's (but the date): {same}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
