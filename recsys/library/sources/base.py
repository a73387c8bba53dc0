"""What every player source gives and promises: the :class:`PlayerLibrary` it reads and the :class:`Source`
protocol, apart from the registry (``recsys.library.sources``) so that the sources import this and the registry
imports them, with no cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recsys.library.catalogue import Catalogue
from recsys.library.track import Track


@dataclass
class PlayerLibrary:
    """What a player's database lists: its local-file tracks, and how many rows were left out and why."""

    path: Path | None  # None for a server read through its API (``server``)
    kind: str  # the source's name for people: 'clementine', 'strawberry', ...
    tracks: list[Track]
    skipped_urls: int
    skipped_unavailable: int
    duplicates: int = 0  # rows naming a track (same key) that an earlier row already gave
    user: str | None = None  # whose ratings, in a server's database of several users (Navidrome)
    catalogue: Catalogue | None = None  # every track, when read ``taste_only`` (``tracks`` then holds fewer)
    server: str = ""  # the server's address (no credentials), for a library read through a server's API
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (track key, why): rows that are no track


class Source(Protocol):
    """A music player whose database lists the library and the owner's ratings. Only ever read."""

    name: str

    def find(self) -> Path | None:
        """The player's database at its usual place for this user, or None."""

    def recognises(self, path: Path) -> bool:
        """Whether ``path`` (given with ``--db``) is this player's database."""

    def read(self, path: Path, section: Any, taste_only: bool = False, kept: Path | None = None) -> PlayerLibrary:
        """The tracks the database lists, read as ``section`` says: the settings section of the source's own name
        (``settings.navidrome`` for ``navidrome``; None where the settings have none), which the registry hands
        over (a source never reads the settings object, and its defaults are the settings'); a
        :class:`~recsys.errors.RecsysError` naming the file when it cannot. ``taste_only``: every track in
        ``catalogue``, and in ``tracks`` at least those with a rating, plays or skips (``Track.has_history``; a
        reader may leave the others out, which is what makes the taste commands fast on a large library). ``kept``
        (with ``taste_only``): a folder where the source may keep what does not change between runs
        (:mod:`recsys.library.kept`; only Clementine's does), never the history, which is read live."""
