"""`recsys path A B`: a playlist that leads from track A to track B by sound (see ``recsys.recommender.path``).

Reads the index snapshot only (no player database, no torch, no lancedb): A and B are found as `recsys similar`
finds its track, the way between them through the snapshot's search, the playlist's artist and album caps apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recsys.app.output import (
    as_written,
    output_path,
    playlist_format,
    snapshot_entry,
    snapshot_inputs,
    with_fingerprints,
)
from recsys.app.taste import vote_search
from recsys.config import Settings
from recsys.index.ann import LibraryVectors, current_snapshot
from recsys.index.lookup import resolve_query
from recsys.library import remote
from recsys.library.filters import candidate_mask, parse, snapshot_column
from recsys.library.groups import album_of, artist_of, library_root, loose_folders, recording_key
from recsys.playlists import PlaylistEntry, write_playlist
from recsys.recommender.path import TrackFacts, song_path


@dataclass
class PathRequest:
    a: str
    b: str
    steps: int = 20
    out: str | None = None
    fmt: str | None = None
    force: bool = False
    max_per_artist: int | None = None
    max_per_album: int | None = None
    where: Sequence[str] = ()  # filter terms (recsys.library.filters): the tracks on the way must match them


@dataclass
class SongPathResult:
    path: Path
    tracks: list[PlaylistEntry]  # A first, B last
    similarity: list[float]  # each track's cosine to its point on the way
    notes: list[str] = field(default_factory=list)


def track_facts(lib: LibraryVectors):
    """``row -> TrackFacts`` for the rules, the artist and album groups of ``recsys.library.groups`` from the
    snapshot's tags (it has no album-artist column: a path groups by the artist tag, and reads no player database)."""
    paths = lib.values("path")
    root = library_root(paths)
    loose = loose_folders(paths, root)  # a flat library is not one album under the cap

    def facts(row: int) -> TrackFacts:
        m = lib.row(row)
        return TrackFacts(artist_of(m.get("artist"), None, m["path"], root, loose),
                          album_of(m.get("album"), None, m.get("artist"), m["path"], loose),
                          recording_key(m.get("artist"), m.get("title")),
                          m["path"])

    return facts


def make_path(settings: Settings, req: PathRequest) -> SongPathResult:
    """Find A and B, walk from one to the other, write the playlist."""
    fmt = playlist_format(req.out, req.fmt, settings)
    flt = parse(req.where)  # a bad term fails before anything is read
    lib = with_fingerprints(settings, current_snapshot(settings.home_path, settings.index))
    notes = [lib.behind] if lib.behind else []
    start, end = resolve_query(lib, req.a), resolve_query(lib, req.b)
    allowed = None
    if flt:
        tracks = []
        if flt.needs_taste:  # rating: or played: terms read the owner's ratings and plays, live
            from recsys.library.sources import load_library

            tracks = load_library(settings.library.db, settings.library.folders, settings=settings).tracks
        allowed = candidate_mask(flt, lib.keys, snapshot_column(lib), tracks).__getitem__  # row -> kept?
    r = settings.recommend
    found = song_path(lib.vectors, vote_search(settings, lib), start, end, req.steps, track_facts(lib),
                      max_per_artist=req.max_per_artist or r.max_per_artist,
                      max_per_album=req.max_per_album or r.max_per_album, allowed=allowed, exists=remote.exists,
                      agreement=lib.agreement)
    if found.left_out:
        removed = ", ".join(f"{k} {v}" for k, v in sorted(found.removed.items(), key=lambda kv: -kv[1]))
        notes.append(f"the path is short: {len(found.rows)} of {req.steps} tracks: {found.left_out} points on the "
                     f"way had no track left under the rules ({removed} removed); try --max-per-artist, "
                     "--max-per-album, fewer --steps" + (" or a looser --where" if flt else ""))
    tracks = [snapshot_entry(lib, row, s) for row, s in zip(found.rows, found.similarity, strict=True)]
    title = f"path: {tracks[0].label} -> {tracks[-1].label}"
    written, note = as_written(tracks, fmt, settings)
    notes += [note] if note else []
    out = write_playlist(output_path(req.out, settings, "path", fmt), written, title, fmt=fmt, overwrite=req.force,
                         inputs=snapshot_inputs(settings, lib))
    return SongPathResult(out, tracks, [float(s) for s in found.similarity], notes)
