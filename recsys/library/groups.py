"""The one home of "album", "artist" and "same recording": the keys every cap, vote, split and metric groups by.

- :func:`album_of`: a track's album is its album tag, owned by its album artist (else its artist), compared by
  :func:`~recsys.library.text.tag_key`; an untagged track's album is its folder, unless that folder is a loose one
  (:func:`loose_folders`: the library's root folder, or a folder holding more than :data:`ALBUM_MAX_FILES` files,
  a "Downloads" dump rather than a release). Two "Greatest Hits" of different artists are two albums, and the twelve
  tracks of a "Various Artists" compilation are one, whoever sings each.
- :func:`artist_of`: the album artist tag, else the artist tag, else the album folder's parent -- unless that parent
  is the library's root folder (:func:`library_root`) or above it, or the album folder is a loose one: a flat
  library untagged in one folder is not one album nor one artist (its tracks would vote for each other as one, and
  the variety rules would cap the whole library at a few tracks). The votes and the rating splits
  pass the album artist (whose album it is); the playlist's variety rules pass None (the performer: the singers of
  a compilation are not one artist twelve times).
- :func:`same_recording`: two tracks are one recording when their vectors are nearly identical (cosine above
  :data:`SAME_RECORDING_COS`: a copy, a re-encode, the same master on two releases) or when the same performer's
  tracks carry the same title (:func:`recording_key`). Where the files' acoustic fingerprints were compared
  (``recsys duplicates``, :mod:`recsys.embedder.fingerprint`), their agreement decides instead: a quieter,
  low-bitrate or shortened copy moves the vector as far as another piece of the same album does, but keeps the
  fingerprint. :func:`one_recording_with` is that rule for a list (``similar``, ``path``, ``playlist``, ``radio``):
  a candidate within :data:`DUPLICATE_CANDIDATE_COS` of a track already listed (or of the query, the seed, the
  path's ends) has the two files' fingerprints compared when the caller can (``agreement``), else the cosine rule.

Callers pass whatever tags they have: the player's tracks and the ``Catalogue`` carry the album artist, the index
snapshot does not (``recsys playlist`` reads it from the live ``Catalogue``; ``recsys path``, which reads no player
database, groups albums by the artist tag). Keys are plain
strings typed :data:`GroupKey`, so a signature says which kind of string it wants.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import NewType

import numpy as np

from recsys.library.text import tag_key

Agreement = Callable[[int, int], "float | None"]  # two rows' fingerprint agreement; None: not known
GroupKey = NewType("GroupKey", str)  # an album or artist group as album_of / artist_of form it ('' for none)

ALBUM_MAX_FILES = 100  # an untagged folder holding more files than this is no album (a dump, not a release)
SAME_RECORDING_COS = 0.995  # cosine above which two tracks are one recording (copies, re-encodes, re-releases)
SAME_RECORDING_AGREEMENT = 0.7  # fingerprint bit agreement above which two files are one recording (unrelated: ~0.5)
DUPLICATE_CANDIDATE_COS = 0.9  # neighbours this close are worth fingerprinting as possible copies


def library_root(paths: Sequence[str]) -> str:
    """The deepest folder holding every path (the music folder itself); '' when there is none.

    The common folder of all paths is that of the lexicographically first and last one: two string comparisons
    per path instead of a set of 100,000 folder names.
    """
    paths = [p for p in paths if p]
    if not paths:
        return ""
    try:
        return os.path.commonpath([os.path.dirname(min(paths)), os.path.dirname(max(paths))])
    except ValueError:  # relative and absolute paths mixed
        return ""


def loose_folders(paths: Sequence[str], root: str) -> frozenset[str]:
    """The folders whose untagged files are no album: the library's ``root`` and every folder directly holding more
    than :data:`ALBUM_MAX_FILES` files. One pass over the paths (a string split each)."""
    counts = Counter(p.rpartition("/")[0] for p in paths if p)
    return frozenset({root} | {folder for folder, n in counts.items() if n > ALBUM_MAX_FILES}) - {""}


def album_of(album: str | None, albumartist: str | None, artist: str | None, path: str,
             loose: Collection[str] = ()) -> GroupKey:
    """The album a track belongs to: its album tag (owned by the album artist, else the artist), else its folder
    unless that is one of the ``loose`` folders (:func:`loose_folders`); '' when none is known."""
    if tag_key(album):
        return GroupKey(f"album:{tag_key(albumartist) or tag_key(artist)}\x00{tag_key(album)}")
    folder = os.path.dirname(path)
    return GroupKey("") if folder in loose else GroupKey(f"folder:{folder}")


def artist_of(artist: str | None, albumartist: str | None, path: str, root: str,
              loose: Collection[str] = ()) -> GroupKey:
    """The artist a track belongs to: its album artist or artist tag, else its album folder's parent when that lies
    under ``root`` (the library's own folder, nobody's artist) and the album folder is not one of the ``loose``
    folders; '' when none is known."""
    name = tag_key(albumartist) or tag_key(artist)
    if name:
        return GroupKey(f"artist:{name}")
    folder = os.path.dirname(path)
    parent = os.path.dirname(folder)
    if folder in loose or not parent or os.path.dirname(parent) == parent:
        return GroupKey("")
    if root and not parent.startswith(root.rstrip("/") + "/"):
        return GroupKey("")  # the root itself, or a folder above it
    return GroupKey(f"folder:{parent}")


def recording_key(artist: str | None, title: str | None) -> str:
    """What makes two tagged tracks one recording: the performer (artist tag, not the album artist: a song on its
    album and on a compilation is one recording) and the title; '' when either is missing ("Intro" of two untagged
    files is not one song)."""
    performer, name = tag_key(artist), tag_key(title)
    return f"{performer}\x00{name}" if performer and name else ""


def same_recording(cosine: float | np.ndarray, agreement: float | None = None) -> bool | np.ndarray:
    """Whether vectors this close (cosine; an array of them gives an array) are one recording heard twice; when the
    two files' fingerprints were compared (``agreement``, the share of equal bits at the best offset), that decides."""
    if agreement is not None:
        return agreement > SAME_RECORDING_AGREEMENT
    return cosine > SAME_RECORDING_COS


def one_recording_with(vectors: np.ndarray, row: int, others: Sequence[int],
                       agreement: Agreement | None = None) -> bool:
    """Whether track ``row`` is one recording with any of the tracks ``others`` (rows of ``vectors``, unit vectors)
    by their sound: each one within :data:`DUPLICATE_CANDIDATE_COS`, nearest first, is judged by
    :func:`same_recording` on the files' fingerprint ``agreement`` (``agreement(row, other)``: None when unknown,
    and then the cosine decides, as without ``agreement``). Tracks further apart are never one recording."""
    if not len(others):
        return False
    cosines = np.asarray(vectors[list(others)], dtype=np.float32) @ np.asarray(vectors[row], dtype=np.float32)
    for j in np.argsort(-cosines, kind="stable"):
        cosine = float(cosines[j])
        if cosine < DUPLICATE_CANDIDATE_COS:
            break
        if same_recording(cosine, agreement(row, int(others[j])) if agreement is not None else None):
            return True
    return False
