"""The Track record: one playable item of the user's library, as the rest of recsys sees it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from typing import NewType

from recsys.guard import is_under  # noqa: F401  (the one folder-boundary test; imported from here by the library)

TrackKey = NewType("TrackKey", str)  # what make_key returns: the one identity of a track across recsys

# The largest year or track number a Track holds: the table stores them as 32-bit integers, and a tag beyond that
# (DATE=20240101123000, a year of 2**63 - 1 in a player's database) is no year or track number anyway.
TAG_NUMBER_MAX = 2**31 - 1


def segment_suffix(start_s: float) -> str:
    """What sets a track cut from a shared file (CUE) apart from the file's other tracks, in its key and its content
    id: ``@`` and the start in seconds to three decimals."""
    return f"@{start_s:.3f}"


def make_key(path: str, start_s: float = 0.0, segment: bool = False) -> TrackKey:
    """The track key of DESIGN.md: the absolute path, plus the start offset for tracks that share a file (CUE).

    Keys never use a database row id (ids shift between backups).
    """
    return TrackKey(path + segment_suffix(start_s) if segment else path)


def tag_number(value: int | None) -> int | None:
    """A year or track number as a Track keeps it: a positive int the table can store, else None (unknown). One bad
    tag is that tag's loss, never the library's: a value out of range once aborted every embed of the library."""
    return value if value is not None and 0 < value <= TAG_NUMBER_MAX else None


def display_label(artist: str | None, title: str | None, path: str, start_s: float = 0.0) -> str:
    """How a track is shown to people everywhere (terminal, playlists): 'artist - title' from its tags, and the file
    name for what the tags leave out, never '? - ?'; a CUE segment's start is added when only the file name shows."""
    name = path.rsplit("/", 1)[-1]
    if artist and title:
        return f"{artist} - {title}"
    if title:
        return title
    if start_s:
        minutes, seconds = divmod(int(round(start_s)), 60)
        name = f"{name} @ {minutes}:{seconds:02d}"
    return f"{artist} - {name}" if artist else name


class Labelled:
    """The one ``label`` of every track-like record (a library Track, a search hit, a playlist pick): anything with
    ``artist``, ``title``, ``path`` and ``start_s`` is shown to people by :func:`display_label`."""

    artist: str
    title: str
    path: str
    start_s: float

    @property
    def label(self) -> str:
        """'artist - title' for people, falling back to the file name (see :func:`display_label`)."""
        return display_label(self.artist, self.title, self.path, self.start_s)


@dataclass(frozen=True)
class Track(Labelled):
    """One track: where its audio is, what its tags say, and what the player knows about the owner's taste.

    ``start_s``/``length_s`` delimit a segment inside a shared file (CUE sheets); ``length_s`` is None when unknown.
    ``rating`` is a float in [0, 1] (0.2 per star) or None when unrated.
    """

    path: str
    start_s: float = 0.0
    length_s: float | None = None
    segment: bool = False
    title: str = ""
    artist: str = ""
    album: str = ""
    albumartist: str = ""
    genre: str = ""
    year: int | None = None
    track_number: int | None = None
    rating: float | None = None
    playcount: int = 0
    skipcount: int = 0
    lastplayed: int | None = None

    def __post_init__(self) -> None:
        for name in ("year", "track_number"):  # the one place tags enter a Track (with track_from_values)
            value = getattr(self, name)
            if value is not None and tag_number(value) is None:
                object.__setattr__(self, name, None)

    @cached_property  # asked for hundreds of thousands of times on a large library
    def key(self) -> str:
        return make_key(self.path, self.start_s, self.segment)

    @property
    def stars(self) -> float | None:
        return None if self.rating is None else self.rating * 5.0

    @property
    def has_history(self) -> bool:
        """Whether the player knows anything of the owner's taste for it (a rating, plays or skips): the only tracks
        the taste commands need as records (see :mod:`recsys.library.catalogue`)."""
        return self.rating is not None or self.playcount > 0 or self.skipcount > 0


_FIELDS = tuple(f.name for f in fields(Track))


def track_from_values(values: tuple) -> Track:
    """A Track from all its field values in declaration order, key included: what ``Track(*values)`` gives, at under
    half the cost. Readers of a player database build one per row (100,000 on a large library), and the frozen
    dataclass's ``__init__`` sets each of its 15 fields through ``object.__setattr__``."""
    track = object.__new__(Track)
    state = track.__dict__
    state.update(zip(_FIELDS, values, strict=True))
    for name in ("year", "track_number"):
        if state[name] is not None:
            state[name] = tag_number(state[name])
    # what the cached property would hold (make_key, inline for the usual whole-file track)
    state["key"] = make_key(state["path"], state["start_s"], True) if state["segment"] else state["path"]
    return track
