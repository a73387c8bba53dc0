"""One list of tracks from wherever the user's library is: the player database, music folders, or both."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.library.sources.clementine import find_player_db, read_player_db
from recsys.library.sources.folders import scan_folders
from recsys.library.track import Track


class NoLibraryError(RecsysError):
    """Neither a player database nor a music folder was found or given."""


@dataclass
class Library:
    """The tracks of the library, and what was left out on the way (reported, never silent)."""

    tracks: list[Track]
    db_path: Path | None = None
    db_kind: str | None = None
    folders: list[str] = field(default_factory=list)
    skipped_urls: int = 0
    skipped_unavailable: int = 0
    scan_errors: list[tuple[str, str]] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (track key, why): what the user asked to leave out


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
) -> Library:
    """Read the player database (given, or found at its usual place when ``auto_detect`` and no folders are given)
    and scan the folders; a track listed by both keeps the database's tags and ratings. Tracks the user's settings
    leave out (``exclude_genres``, ``max_track_minutes``) are not in ``tracks`` but in ``left_out``, with the reason."""
    db_path = Path(db).expanduser() if db else None
    if db_path is None and auto_detect and not folders:
        db_path = find_player_db()
    if db_path is None and not folders:
        raise NoLibraryError(
            "no music library found: no Clementine or Strawberry database at its usual place; "
            "give one with --db PATH or a music folder with --library DIR"
        )
    library = Library(tracks=[], folders=[str(f) for f in folders])
    by_key: dict[str, Track] = {}
    if db_path is not None:
        player = read_player_db(db_path)
        library.db_path, library.db_kind = player.path, player.kind
        library.skipped_urls, library.skipped_unavailable = player.skipped_urls, player.skipped_unavailable
        by_key.update((t.key, t) for t in player.tracks)
    if folders:
        scan = scan_folders(folders, progress=progress)
        library.scan_errors = scan.errors
        for track in scan.tracks:
            by_key.setdefault(track.key, track)
    kept = []
    for track in sorted((t for t in by_key.values() if _storable(t, library.scan_errors)), key=lambda t: t.key):
        reason = leave_out_reason(track, exclude_genres, max_track_minutes)
        if reason is None:
            kept.append(track)
        else:
            library.left_out.append((track.key, reason))
    library.tracks = kept
    return library


def load_configured_library(settings: Settings, progress: Callable[[int], None] | None = None) -> Library:
    """The library the settings name (database, folders), less what they ask to leave out."""
    return load_library(settings.library.db, settings.library.folders, progress=progress,
                        exclude_genres=settings.library.exclude_genres,
                        max_track_minutes=settings.audio.max_track_minutes)


def _storable(track: Track, errors: list[tuple[str, str]]) -> bool:
    """Whether the track's path can be kept as text in the table. A file name whose bytes are not UTF-8 arrives with
    surrogate escapes, which the table's text columns cannot hold: one such name once failed every write of the run
    and so the whole library. It is left out and reported instead."""
    try:
        track.path.encode("utf-8")
    except UnicodeEncodeError:
        errors.append((track.path, "file name is not valid UTF-8 (recsys cannot store it): rename the file"))
        return False
    return True
