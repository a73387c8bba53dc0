"""The player library kept between runs: what a taste read of a player database gives, less the owner's history.

Reading a Clementine or Strawberry database of a million tracks for `recsys playlist` costs seconds, almost all of
it in what does not change between two playlists: a million locations decoded into paths, their tags, the catalogue
in key order. What does change -- ratings, plays, skips, the last play -- is read live on every run, never copied
(DESIGN.md: ratings are read live each run). This module stores the rest, one file per database, under
``<home>/cache/library/<hash of the database's absolute path>.pickle``; the reader
(:mod:`recsys.library.sources.clementine`) decides what goes in, and when the file describes the database as it is
now (a structural signature it computes inside the same read transaction as the live history). A file that does not
match is read around and replaced by the next full read.

What the file holds: a small dict of plain values (``FORMAT``, the database's path, its kind, its signature) and
plain columns -- the catalogue (keys, paths, album, album artist and artist tags), for each catalogue entry the raw
location value as the database stores it (the key that joins it to the live history rows: never the row id) and the
tags a ``Track`` needs (title, genre, year, track number, length, start, segment), the locations of the rows that
are no track (streams, unavailable files, rejected CUE segments), and the counts of rows left out. No rating, play
count, skip count or last-played time is ever stored. About 285 bytes a track (the location, the path and the title
are most of it; a path equal to its key and a repeated album, artist or genre tag are stored once): 285 MB at a
million tracks of the benchmark's realistic library.

Bounded: one file per database path, replaced whole (atomically: two runs at once each leave a complete file);
nothing accumulates but one file per database ever read by a taste command of this home. Written only under a home
recsys made (the caller decides: :mod:`recsys.app.taste`), never beside the player's database (the write guard is
asked), and never fatal: a home that cannot be written just reads the database in full every time. A file that
cannot be read, is garbled, or was written by another version is ignored (and replaced), never an error. It is
unpickled with no class allowed (plain lists, strings, bytes and numbers only), so a file put there by someone else
cannot run code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

from recsys.atomic import atomic_path
from recsys.guard import Inputs, refusal

FOLDER = Path("cache") / "library"  # under the home
FORMAT = 1  # bumped whenever what the reader stores changes meaning: an older file is then ignored and replaced
_HEADER = ("format", "db", "kind", "signature")


def folder(home: Path | str) -> Path:
    """``<home>/cache/library``: where the kept libraries of this home's databases lie."""
    return Path(home) / FOLDER


def kept_file(where: Path, db: Path) -> Path:
    """The file that keeps the library of the database at ``db`` (an absolute path) under the folder ``where``."""
    return Path(where) / (hashlib.sha256(os.fsencode(str(db))).hexdigest()[:32] + ".pickle")


class _PlainUnpickler(pickle.Unpickler):
    """Builtin containers and scalars only: any class or function named in the file is refused."""

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a kept library")


def load(where: Path, db: Path) -> dict | None:
    """The kept library of ``db`` under ``where``, or None when there is none usable: absent, unreadable, garbled,
    of another format, or of another database (a hash that names two paths). Never raises."""
    try:
        with open(kept_file(where, db), "rb") as f:
            data = _PlainUnpickler(f).load()
    except Exception:  # noqa: BLE001 -- a garbled file raises anything unpickling can; it is only ignored
        return None
    if not isinstance(data, dict) or any(name not in data for name in _HEADER):
        return None
    if data["format"] != FORMAT or data["db"] != str(db):
        return None
    return data


def store(where: Path, db: Path, data: dict) -> bool:
    """Keep ``data`` (with ``kind`` and ``signature`` set by the reader) as the library of ``db``, replacing the file
    whole; False, and nothing written, when the folder cannot be written or the guard refuses the file. Never
    raises for the cache's sake: a run that cannot keep its library only reads it in full next time."""
    target = kept_file(where, db)
    if refusal(target, Inputs(db=db)) is not None:
        return False
    try:
        os.makedirs(where, exist_ok=True)
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            pickle.dump({**data, "format": FORMAT, "db": str(db)}, f, protocol=5)
    except OSError:
        return False
    return True
