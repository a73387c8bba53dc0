"""A tiny recsys home made without decoding any audio, for tests of the commands that read the index (a test
helper, not in recsys.synth: it writes through the index code, which recsys.synth must not import).

The vectors are synthetic (tracks in ``styles`` groups, each group around its own direction), written through the
real table and snapshot code (``TrackStore`` and ``build_snapshot``), so the commands under test read a real home;
the music files exist (a few bytes each: the readers only check that a file is there) and a Clementine-shaped
database lists them with ratings. Seconds instead of the minute a real ``recsys embed`` takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.synth.player_db import SynthSong, write_clementine_db

ENCODER_ID = "synthetic"
GENRES = ("Ambient", "Rock", "Jazz", "Techno")


@dataclass
class SynthHome:
    home: Path
    music: Path
    db: Path
    songs: list[SynthSong]
    vectors: np.ndarray  # row i is songs[i]'s vector
    styles: list[int]  # the group of each song


def make_home(root: Path, n: int = 48, styles: int = 4, dim: int = 16, seed: int = 0, suffix: str = ".ogg",
              write: Callable[[Path, SynthSong], None] | None = None) -> SynthHome:
    """``n`` tracks by ``n // 2`` artists in ``styles`` groups; the first group's tracks are rated 5 stars every
    fourth track, the last group's 1 star, the rest unrated. ``write`` makes each file (a real, tagged one for a
    server that reads them, e.g. MPD); by default a few bytes."""
    from recsys.index.ann import build_snapshot
    from recsys.index.store import TrackRow, TrackStore

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(styles, dim))
    group = [i % styles for i in range(n)]
    vectors = centres[group] + 0.35 * rng.normal(size=(n, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    music = root / "music"
    songs, rows = [], []
    for i in range(n):
        g = group[i]
        path = music / f"artist {i // 2}" / f"album {i // 4}" / f"{i:03d} track{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        rating = 1.0 if g == 0 and i % 4 == 0 else 0.2 if g == styles - 1 and i % 4 == 3 else -1.0
        song = SynthSong(path=str(path), title=f"song {i}", artist=f"artist {i // 2}", album=f"album {i // 4}",
                         genre=GENRES[g % len(GENRES)], track=i % 4 + 1, rating=rating, length_ns=180 * 10**9)
        songs.append(song)
        if write is None:
            path.write_bytes(b"OggS")
        else:
            write(path, song)
        rows.append(TrackRow(key=str(path), path=str(path), start_s=0.0, content_id=f"c{i}", size=4, mtime_ns=i,
                             duration_s=180.0, artist=song.artist, album=song.album, title=song.title,
                             genre=song.genre, year=2000 + i % 20, track_number=song.track, encoder_id=ENCODER_ID,
                             vector=vectors[i]))
    home = root / "home"
    store = TrackStore.open(home)
    store.upsert(rows)
    build_snapshot(store, home, ENCODER_ID)
    db = root / "clementine.db"
    write_clementine_db(db, songs)
    return SynthHome(home, music, db, songs, vectors, group)
