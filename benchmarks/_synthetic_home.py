"""The large synthetic library the start-up and playlist benchmarks share: files, a Clementine database, a table of
embedded tracks and its index snapshot, built straight into a home (no decoding).

One empty file per track (so "the file exists" and its stat are real), tags ``artist {i % artists}``,
``album {i % artists} {i // artists}``, ``title {i}``, each row current for ``encoder_id`` with the file's size and
mtime, written in batches and compacted as `recsys embed` leaves a table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from recsys.index.ann import build_snapshot
from recsys.index.store import TrackRow, TrackStore
from recsys.synth.player_db import SynthSong, write_clementine_db

WRITE_BATCH = 20000


def build_home(root: Path, vectors: np.ndarray, encoder_id: str, artists: int = 2000,
               stars: Callable[[int], int] = lambda i: 0) -> Path:
    """``root/home``, ``root/music`` and ``root/clementine.db`` for ``len(vectors)`` tracks (unit vectors, row i for
    track i; ``stars(i)`` its rating, 0 unrated, also its play count); returns the database path."""
    home, music = root / "home", root / "music"
    music.mkdir(parents=True, exist_ok=True)
    store = TrackStore.open(home)
    songs, rows = [], []
    for i, vector in enumerate(vectors):
        path = music / f"{i // 1000:03d}" / f"{i:06d}.flac"
        path.parent.mkdir(exist_ok=True)
        path.touch()
        st = path.stat()
        artist, album, title = f"artist {i % artists}", f"album {i % artists} {i // artists}", f"title {i}"
        rating = stars(i)
        songs.append(SynthSong(path=str(path), title=title, artist=artist, album=album, track=i % 12 + 1,
                               rating=rating / 5 if rating else -1.0, playcount=rating, length_ns=240 * 10**9))
        rows.append(TrackRow(key=str(path), path=str(path), start_s=0.0, content_id=f"c{i}", size=st.st_size,
                             mtime_ns=st.st_mtime_ns, duration_s=240.0, artist=artist, album=album, title=title,
                             genre="", year=None, track_number=i % 12 + 1, encoder_id=encoder_id, vector=vector))
        if len(rows) == WRITE_BATCH:
            store.upsert(rows)
            rows = []
    if rows:
        store.upsert(rows)
    store.compact()
    build_snapshot(store, home, encoder_id)
    db = root / "clementine.db"
    write_clementine_db(db, songs)
    return db
