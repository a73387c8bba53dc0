"""The large synthetic library the start-up and playlist benchmarks share: files, a Clementine database, a table of
embedded tracks and its index snapshot, built straight into a home (no decoding).

One empty file per track (so "the file exists" and its stat are real), tags ``artist {i % artists}``,
``album {i % artists} {i // artists}``, ``title {i}`` (or each track's own :class:`Song`, ``songs``), each row current
for ``encoder_id`` with the file's size and mtime, written in batches and compacted as `recsys embed` leaves a table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.index.ann import build_snapshot
from recsys.index.store import TrackRow, TrackStore
from recsys.synth.player_db import SynthSong, write_clementine_db

WRITE_BATCH = 20000


@dataclass
class Song:
    """One track of a synthetic library: its file under ``music/`` and what the player knows of it."""

    relpath: str
    title: str
    artist: str
    album: str
    albumartist: str = ""
    track: int = 0
    stars: int = 0  # 0: unrated
    playcount: int = 0
    skipcount: int = 0
    lastplayed: int = -1


def build_home(root: Path, vectors: np.ndarray, encoder_id: str, artists: int = 2000,
               stars: Callable[[int], int] = lambda i: 0, songs: Sequence[Song] | None = None) -> Path:
    """``root/home``, ``root/music`` and ``root/clementine.db`` for ``len(vectors)`` tracks (unit vectors, row i for
    track i; ``stars(i)`` its rating, 0 unrated, also its play count; or ``songs[i]`` each track's file, tags,
    rating and history); returns the database path."""
    home, music = root / "home", root / "music"
    music.mkdir(parents=True, exist_ok=True)
    store = TrackStore.open(home)
    synth, rows = [], []
    for i, vector in enumerate(vectors):
        if songs is None:
            rating = stars(i)
            song = Song(f"{i // 1000:03d}/{i:06d}.flac", f"title {i}", f"artist {i % artists}",
                        f"album {i % artists} {i // artists}", "", i % 12 + 1, rating, rating)
        else:
            song = songs[i]
        path = music / song.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        st = path.stat()
        synth.append(SynthSong(path=str(path), title=song.title, artist=song.artist, album=song.album,
                               albumartist=song.albumartist, track=song.track,
                               rating=song.stars / 5 if song.stars else -1.0, playcount=song.playcount,
                               skipcount=song.skipcount, lastplayed=song.lastplayed, length_ns=240 * 10**9))
        rows.append(TrackRow(key=str(path), path=str(path), start_s=0.0, content_id=f"c{i}", size=st.st_size,
                             mtime_ns=st.st_mtime_ns, duration_s=240.0, artist=song.artist, album=song.album,
                             title=song.title, genre="", year=None, track_number=song.track or None,
                             encoder_id=encoder_id, vector=vector))
        if len(rows) == WRITE_BATCH:
            store.upsert(rows)
            rows = []
    if rows:
        store.upsert(rows)
    store.compact()
    build_snapshot(store, home, encoder_id)
    db = root / "clementine.db"
    write_clementine_db(db, synth)
    return db
