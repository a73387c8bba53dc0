"""The library column-wise: what the taste commands need of every track, without a Track object per row.

`recsys playlist`, `train-classifier` and `eval --playlist` learn the owner's taste from the tracks with a rating,
plays or skips (a few thousand, as :class:`~recsys.library.track.Track` records). Of every other track they need
only its key, its file and the tags that name its album and artist: the album and artist votes, the library's root
folder, the files a playlist must never replace. At 1,000,000 tracks a Track per row cost half of a 16 s playlist
(benchmarks/RESULTS.md); these five columns are what is left of it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from recsys.library.groups import library_root, loose_folders
from recsys.library.track import Track


@dataclass(frozen=True)
class Catalogue:
    """Every track of a library, one entry per key, sorted by key: five columns of equal length."""

    keys: list[str]
    paths: list[str]
    albums: list[str]
    albumartists: list[str]
    artists: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    @cached_property
    def root(self) -> str:
        """The library's root folder (``recsys.library.groups.library_root`` of the paths), found once: the
        labels, the votes and the caps of one playlist all ask."""
        return library_root(self.paths)

    @cached_property
    def loose(self) -> frozenset[str]:
        """The library's loose folders (``recsys.library.groups.loose_folders``), found once (a pass over every
        path)."""
        return loose_folders(self.paths, self.root)

    @classmethod
    def of(cls, tracks: Iterable[Track]) -> Catalogue:
        """The catalogue of ``tracks`` (unique keys), put in key order."""
        tracks = sorted(tracks, key=lambda t: t.key)
        return cls([t.key for t in tracks], [t.path for t in tracks], [t.album for t in tracks],
                   [t.albumartist for t in tracks], [t.artist for t in tracks])

    def positions(self, keys: Iterable[str]) -> list[int]:
        """The index of each of ``keys`` in the catalogue, -1 for a key not in it. A bisection per key (the catalogue
        is in key order): thousands of keys cost milliseconds, never a dict of the library."""
        out = []
        for key in keys:
            i = bisect.bisect_left(self.keys, key)
            out.append(i if i < len(self.keys) and self.keys[i] == key else -1)
        return out

    def albumartists_of(self, keys: Iterable[str]) -> list[str | None]:
        """The album artist tag of each of ``keys`` (None for a key not in the library): the index snapshot has no
        album-artist column, and the playlist's caps must group a compilation as the votes do."""
        return [self.albumartists[i] if i >= 0 else None for i in self.positions(keys)]

    def rows(self, keep: Sequence[bool]) -> Catalogue:
        """The entries where ``keep`` holds."""
        return Catalogue(*([v for v, k in zip(column, keep, strict=True) if k] for column in self._columns()))

    def merged(self, other: Catalogue) -> Catalogue:
        """These entries and those of ``other`` whose key is not here, in key order (a track both list keeps these
        tags: the player's over a folder scan's)."""
        mine = set(self.keys)
        extra = [i for i, key in enumerate(other.keys) if key not in mine]
        if not extra:
            return self
        columns = [list(a) + [b[i] for i in extra] for a, b in zip(self._columns(), other._columns(), strict=True)]
        order = sorted(range(len(columns[0])), key=columns[0].__getitem__)
        return Catalogue(*([column[i] for i in order] for column in columns))

    def _columns(self) -> tuple[list[str], ...]:
        return self.keys, self.paths, self.albums, self.albumartists, self.artists
