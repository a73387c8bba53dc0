"""One list of tracks from wherever the user's library is: a player's database, music folders, or both.

A player is a :class:`Source`, registered by name in :data:`SOURCES` as ``"module:attribute"`` (imported only when
used). Adding a player (MPD, Navidrome, beets) is one module exposing a ``Source`` whose ``read`` returns a
:class:`PlayerLibrary`, plus one line in :data:`SOURCES`. Music folders are always read by
:mod:`recsys.library.sources.folders`; a track listed by both keeps the player's tags and ratings.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.library.catalogue import Catalogue
from recsys.library.sources.base import PlayerLibrary, Source
from recsys.library.sources.folders import ScanResult, scan_folders
from recsys.library.track import Track

# name -> "module:attribute" of its Source; the first is also what reads a --db no source recognises (its error
# then says what is wrong with the file), and auto-detection tries them in this order.
SOURCES: dict[str, str] = {
    "clementine": "recsys.library.sources.clementine:SOURCE",  # Clementine and Strawberry
    "navidrome": "recsys.library.sources.navidrome:SOURCE",
    "beets": "recsys.library.sources.beets:SOURCE",
    "mpd": "recsys.library.sources.mpd:SOURCE",  # library.db mpd://HOST:PORT (--mpd), never looked for
}


def source(name: str) -> Source:
    """The registered source ``name``."""
    module, _, attribute = SOURCES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def find_source_db() -> tuple[Source, Path] | None:
    """The first registered player whose database is at its usual place."""
    for name in SOURCES:
        found = source(name).find()
        if found is not None:
            return source(name), found
    return None


def recognising_source(path: Path) -> Source | None:
    """The first registered source that recognises ``path`` as its database, or None."""
    return next((s for s in (source(name) for name in SOURCES) if s.recognises(path)), None)


def read_source_db(path: Path, settings: Settings | None = None, taste_only: bool = False,
                   kept: Path | None = None) -> PlayerLibrary:
    """Read ``path`` with the registered source that recognises it (the first source when none does), which gets
    the settings section of its own name (None when there is none: Clementine's); ``kept``: see ``Source.read``."""
    chosen = recognising_source(path) or source(next(iter(SOURCES)))
    section = getattr(Settings() if settings is None else settings, chosen.name, None)
    return chosen.read(path, section, taste_only=taste_only, kept=kept)


def library_db(db: str | Path | None, folders: Sequence[str | Path], auto_detect: bool = True) -> Path | None:
    """The player database :func:`load_library` reads: ``db``, else (``auto_detect`` and no folders) the first one
    found at its usual place; None for music folders alone."""
    if db:
        return Path(db).expanduser()
    found = find_source_db() if auto_detect and not folders else None
    return found[1] if found else None


def configured_db_kind(settings: Settings) -> str | None:
    """The name of the source of the database the settings' library reads ('navidrome', ...), recognised by its
    tables without reading its tracks: for the commands that read the index snapshot alone but write a playlist for
    that player (`recsys path`, `similar --out`). None for music folders alone, or a file no source recognises."""
    if settings.library.subsonic:
        return "subsonic"
    path = library_db(settings.library.db, settings.library.folders)
    found = recognising_source(path) if path is not None else None
    return found.name if found else None


class NoLibraryError(RecsysError):
    """Neither a player database nor a music folder was found or given."""


@dataclass
class Library:
    """The tracks of the library, and what was left out on the way (reported, never silent)."""

    tracks: list[Track]
    db_path: Path | None = None
    db_kind: str | None = None
    db_user: str | None = None  # whose ratings, for a server's database of several users (Navidrome)
    folders: list[str] = field(default_factory=list)
    server: str | None = None  # the Subsonic server read through its API (``library.subsonic``), no credentials
    skipped_urls: int = 0
    skipped_unavailable: int = 0
    duplicate_rows: int = 0  # database rows naming a track another row already lists (the one that knows more kept)
    scan_errors: list[tuple[str, str]] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (track key, why): what the user asked to leave out

    def source(self) -> str:
        """Where the tracks come from, for people: the database (and whose ratings), the folders."""
        if self.server:
            return ", ".join([f"Subsonic server {self.server} (ratings of user {self.db_user})", *self.folders])
        db = f"{self.db_path}" + (f" (ratings of Navidrome user {self.db_user})" if self.db_user else "")
        if self.db_kind == "mpd":
            from recsys.servers.mpd import parse_address

            db = f"MPD at {parse_address(str(self.db_path))}"
        return db if self.db_path and not self.folders else ", ".join(([db] if self.db_path else []) + self.folders)


def leave_out_reason(track: Track, exclude_genres: Sequence[str] = (), max_track_minutes: float = 0.0) -> str | None:
    """Why the user's settings leave this track out, or None to keep it. Only the user decides: a long track is
    music like any other (a crop costs the same at any length) unless ``audio.max_track_minutes`` says otherwise."""
    genres = {g.strip().casefold() for g in exclude_genres if g.strip()}
    if genres and track.genre:
        # a genre tag may hold several genres ("Podcast; News", "Audiobook/Fiction")
        parts = {p.strip().casefold() for p in track.genre.replace(";", "/").replace(",", "/").split("/")}
        if (parts | {track.genre.strip().casefold()}) & genres:
            return f"genre '{track.genre}' is excluded (library.exclude_genres)"
    if max_track_minutes > 0 and track.length_s is not None and track.length_s > max_track_minutes * 60:
        return (f"{track.length_s / 60:.1f} min is longer than audio.max_track_minutes = {max_track_minutes:g} "
                "(set it to 0 to include it)")
    return None


def load_library(
    db: str | Path | None,
    folders: Sequence[str | Path],
    auto_detect: bool = True,
    progress: Callable[[int], None] | None = None,
    exclude_genres: Sequence[str] = (),
    max_track_minutes: float = 0.0,
    settings: Settings | None = None,
) -> Library:
    """Read the player database (given, or found at its usual place when ``auto_detect`` and no folders are given)
    and scan the folders; a track listed by both keeps the database's tags and ratings. Tracks the user's settings
    leave out (``exclude_genres``, ``max_track_minutes``) are not in ``tracks`` but in ``left_out``, with the reason.
    ``settings`` are handed to the source that reads the database (e.g. the Navidrome user)."""
    library, player, scan = _read(db, folders, auto_detect, progress, settings, taste_only=False)
    by_key: dict[str, Track] = {}
    if player is not None:
        by_key.update((t.key, t) for t in player.tracks)
    for track in scan.tracks if scan is not None else ():
        by_key.setdefault(track.key, track)
    kept = []
    # most libraries leave nothing out: no call per track then (100,000 on a large library)
    leaves_out = any(g.strip() for g in exclude_genres) or max_track_minutes > 0
    for track in sorted((t for t in by_key.values() if _storable(t.path, library.scan_errors)), key=attrgetter("key")):
        reason = leave_out_reason(track, exclude_genres, max_track_minutes) if leaves_out else None
        if reason is None:
            kept.append(track)
        else:
            library.left_out.append((track.key, reason))
    library.tracks = kept
    return library


def load_taste_library(db: str | Path | None, folders: Sequence[str | Path], settings: Settings | None = None,
                       keep: Path | None = None) -> tuple[Library, Catalogue]:
    """The library as the taste commands read it (`playlist`, `train-classifier`, `eval --playlist`): as Tracks, in
    key order, only those with a rating, plays or skips (``Track.has_history``; a folder scan knows none), and every
    track in the catalogue. The same tracks as :func:`load_library` with no exclusions, without a Track object for
    each of the others (see :mod:`recsys.library.catalogue`). ``keep``: the folder where the player's library is kept
    between runs (:mod:`recsys.library.kept`), None to read it all afresh."""
    library, player, scan = _read(db, folders, True, None, settings, taste_only=True, kept=keep)
    tracks: list[Track] = []
    catalogue = Catalogue([], [], [], [], [])
    if player is not None:
        tracks = [t for t in player.tracks if t.has_history]
        catalogue = player.catalogue if player.catalogue is not None else Catalogue.of(player.tracks)
    if scan is not None:
        scanned: dict[str, Track] = {}
        for track in scan.tracks:
            scanned.setdefault(track.key, track)  # a file under two of the folders given is one track
        catalogue = catalogue.merged(Catalogue.of(sorted(scanned.values(), key=attrgetter("key"))))
    if not _plain("\n".join(catalogue.paths)):  # the usual library: every name storable, no call per track
        keep = [_storable(path, library.scan_errors) for path in catalogue.paths]
        catalogue = catalogue.rows(keep)
        storable = set(catalogue.keys)
        tracks = [t for t in tracks if t.key in storable]
    library.tracks = tracks
    return library, catalogue


def _read(db: str | Path | None, folders: Sequence[str | Path], auto_detect: bool,
          progress: Callable[[int], None] | None, settings: Settings | None, taste_only: bool,
          kept: Path | None = None) -> tuple[Library, PlayerLibrary | None, ScanResult | None]:
    """What both loaders start from: the library's facts, the player's tracks, the folder scan (None when absent)."""
    server = settings.library.subsonic if settings is not None else None
    db_path = library_db(db, folders, auto_detect and not server)
    if db_path is None and not folders and not server:
        raise NoLibraryError(
            "no music library found: no Clementine, Strawberry, Navidrome or beets database at its usual place; "
            "give one with --db PATH, an MPD server with --mpd HOST[:PORT], a Subsonic server with --subsonic URL "
            "or a music folder with --library DIR"
        )
    library = Library(tracks=[], folders=[str(f) for f in folders])
    player = scan = None
    if server and db_path is None:
        from recsys.library.sources.subsonic import read_subsonic

        player = read_subsonic(server, settings.subsonic)
        library.server, library.db_kind, library.db_user = player.server, player.kind, player.user
        library.skipped_unavailable, library.duplicate_rows = player.skipped_unavailable, player.duplicates
    elif db_path is not None:
        player = read_source_db(db_path, settings, taste_only=taste_only, kept=kept)
        library.db_path, library.db_kind, library.db_user = player.path, player.kind, player.user
        library.skipped_urls, library.skipped_unavailable = player.skipped_urls, player.skipped_unavailable
        library.duplicate_rows = player.duplicates
        library.scan_errors.extend(player.rejected)
    if folders:
        scan = scan_folders(folders, progress=progress)
        library.scan_errors = scan.errors
    return library, player, scan


def load_configured_library(settings: Settings, progress: Callable[[int], None] | None = None) -> Library:
    """The library the settings name (database, folders), less what they ask to leave out."""
    return load_library(settings.library.db, settings.library.folders, progress=progress,
                        exclude_genres=settings.library.exclude_genres,
                        max_track_minutes=settings.audio.max_track_minutes, settings=settings)


def _plain(text: str) -> bool:
    """Whether ``text`` is UTF-8 without a NUL byte: what every stored and opened path must be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in text


def _storable(path: str, errors: list[tuple[str, str]]) -> bool:
    """Whether the track's path can be kept as text in the table and opened at all. A file name whose bytes are not
    UTF-8 arrives with surrogate escapes, which the table's text columns cannot hold: one such name once failed every
    write of the run and so the whole library. A NUL byte (a database row's ``%00`` or ``\\0``) names no file on any
    system, and every ``stat`` of it raised ValueError, ending the run. Both are left out and reported instead."""
    if "\0" in path:
        errors.append((path.replace("\0", "\\0"), "the player's database names a file with a NUL byte, which no "
                       "file name can hold: fix or remove that entry in the player"))
        return False
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        errors.append((path, "file name is not valid UTF-8 (recsys cannot store it): rename the file"))
        return False
    return True
