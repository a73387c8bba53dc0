"""Where a command's file goes and in which format, the paths it names, and snapshot rows as playlist entries: what
`recsys playlist`, `radio`, `path`, `similar --out` and `map` share; and the fingerprints the lists' "one recording"
rule compares (:func:`with_fingerprints`).

The default file name (``<name>-<date>.<ext>`` in ``recommend.out_dir``) never overwrites a file recsys did not
write: ``-2``, ``-3``... are tried until a free one is found. A playlist (:func:`playlist_path`) replaces the day's
file when recsys wrote it with the same title (the same name, mode and day), unless ``recommend.keep_copies``: the
folder holds one playlist a day, not ten copies of it. An ``--out`` that exists needs ``--force`` (the writers
check that).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.atomic import NAME_MAX, clip_name
from recsys.config import Settings
from recsys.embedder.fingerprint import FingerprintCache, row_agreement
from recsys.index.ann import LibraryVectors
from recsys.playlists import WRITERS, Inputs, PlaylistEntry, PlaylistWriteError
from recsys.playlists.output import written_by_recsys

if TYPE_CHECKING:  # the ranking's record, named here only in type hints: `similar` never imports the ranking
    from recsys.recommender.rank import RankedTrack


def check_out(out: str | None) -> None:
    """Refuse an ``--out`` that names no file: empty (it wrote nothing, silently), or ``-``, which many tools read as
    standard output but which made a file named ``-``; recsys writes its files only to a path."""
    if out is None:
        return
    if not out.strip():
        raise PlaylistWriteError("--out is empty: give a file name, or leave --out out for a new file in "
                                 "recommend.out_dir")
    if out == "-":
        raise PlaylistWriteError("--out - (standard output) is not supported: give a file name, e.g. --out "
                                 "./playlist.xspf")


def playlist_format(out: str | None, fmt: str | None, settings: Settings) -> str:
    """``fmt``, else m3u8 for an ``--out`` ending in .m3u8/.m3u, else the configured format."""
    check_out(out)
    chosen = fmt or ("m3u8" if out and Path(out).suffix.lower() in (".m3u8", ".m3u") else settings.recommend.format)
    if chosen not in WRITERS:
        raise PlaylistWriteError(f"unknown playlist format {chosen!r}: choose one of {', '.join(WRITERS)}")
    return chosen


def _free_default_path(folder: Path, stem: str, ext: str) -> Path:
    """``<stem>.<ext>`` in ``folder``, or ``<stem>-2.<ext>``... when that exists: the default never overwrites."""
    candidate, n = folder / f"{stem}.{ext}", 2
    while candidate.exists():
        candidate, n = folder / f"{stem}-{n}.{ext}", n + 1
    return candidate


# room the default name keeps after its stem: '-<date>', a '-<n>' that makes it free, the longest extension
_DEFAULT_TAIL = len("-2026-12-31-9999.html")


def output_path(out: str | None, settings: Settings, name: str, ext: str) -> Path:
    """``--out``, else a free ``<name>-<date>.<ext>`` in the playlist folder, ``name`` cut to fit one file name."""
    check_out(out)
    if out is not None:
        return Path(out).expanduser()
    return _free_default_path(Path(settings.recommend.out_dir).expanduser(), _day_stem(name), ext)


def _day_stem(name: str) -> str:
    """``<name>-<date>``, ``name`` made safe for a file name and cut so the whole name fits one (``NAME_MAX``)."""
    safe = clip_name("".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-."),
                     NAME_MAX - _DEFAULT_TAIL).strip("-.") or "recsys"
    return f"{safe}-{date.today().isoformat()}"


def playlist_path(out: str | None, settings: Settings, name: str, ext: str, title: str) -> tuple[Path, bool]:
    """Where a playlist titled ``title`` goes, and whether it may replace the file there: ``--out`` (replaced only
    with ``--force``), else the day's ``<name>-<date>.<ext>``, replaced when recsys wrote it with this title (unless
    ``recommend.keep_copies``), else a free ``-2``, ``-3``... beside it."""
    check_out(out)
    if out is not None:
        return Path(out).expanduser(), False
    day = Path(settings.recommend.out_dir).expanduser() / f"{_day_stem(name)}.{ext}"
    if not settings.recommend.keep_copies and written_by_recsys(day, title):
        return day, True
    return output_path(None, settings, name, ext), False


_UNREAD = "unread"  # the ``db_kind`` of a caller that has not read the player database: it is recognised


def as_written(tracks: Sequence[PlaylistEntry], fmt: str, settings: Settings, db_kind: str | None = _UNREAD,
               local_player: bool = False) -> tuple[list[PlaylistEntry], str | None]:
    """The tracks as the playlist file names them, and a note when that is not as this machine sees them.

    Navidrome imports an M3U8 by its absolute paths *as it sees them* (see ``recsys.playlists.m3u8``): when the
    library is a Navidrome database (``db_kind``, recognised from the settings when the caller has not read it) and
    ``navidrome.path_map`` says it runs in a container, an M3U8 names the files in Navidrome's view (the path_map
    backwards). XSPF keeps this machine's paths: no server imports it. ``local_player``: the file goes to a player on
    this machine (`recsys radio --play`), which opens the paths it reads, so they stay this machine's."""
    nd = settings.navidrome
    if fmt != "m3u8" or not nd.path_map:
        return list(tracks), None
    if db_kind == _UNREAD:
        from recsys.library.sources import configured_db_kind

        db_kind = configured_db_kind(settings)
    if db_kind != "navidrome":
        return list(tracks), None
    if local_player:
        return list(tracks), ("the M3U8 keeps this machine's paths for the player it is handed to (--play), not "
                              "Navidrome's (navidrome.path_map): write one without --play to import in Navidrome")
    from recsys.library.sources.navidrome import to_navidrome_path

    mapping = nd.mapping()
    return ([dataclasses.replace(t, path=to_navidrome_path(t.path, mapping)) for t in tracks],
            "the M3U8 names the files as Navidrome sees them (navidrome.path_map): import it in Navidrome")


def snapshot_inputs(settings: Settings, lib: LibraryVectors) -> Inputs:
    """What a playlist written from the snapshot alone must never overwrite: the configured player database and
    music folders, and every file the snapshot knows."""
    return Inputs(settings.library.db, settings.library.folders, lib.files)


def snapshot_entry(lib: LibraryVectors, row: int, similarity: float) -> PlaylistEntry:
    """Snapshot row ``row`` as a playlist entry, annotated with its cosine ``similarity`` to what it answers (the
    query of `similar`, the point on the way of `path`)."""
    m = lib.row(row)
    return PlaylistEntry(key=m["key"], path=m["path"], start_s=float(m.get("start_s") or 0.0),
                         artist=m.get("artist") or "", title=m.get("title") or "", album=m.get("album") or "",
                         track_number=m.get("track_number"), duration_s=m.get("duration_s"),
                         annotation=f"score {float(similarity):.3f}")


def ranked_entries(tracks: Sequence[RankedTrack]) -> list[PlaylistEntry]:
    """A ranking's tracks as the playlist writers take them (the one conversion): the annotation says why each is
    there, its stars (the owner's own where they rated it, ``RankedTrack.shown``) and the liked (or seed) tracks it
    is close to."""
    return [PlaylistEntry(key=t.key, path=t.path, start_s=t.start_s, artist=t.artist, title=t.title, album=t.album,
                          track_number=t.track_number, duration_s=t.duration_s, annotation=_why(t)) for t in tracks]


def _why(track: RankedTrack) -> str:
    parts = []
    if track.shown is not None:
        parts.append(f"{'your rating' if track.shown_from == 'rating' else 'predicted'} {track.shown * 5:.1f} stars")
    if track.because:
        parts.append("close to " + "; ".join(track.because))
    return ", ".join(parts) or f"score {track.score:.3f}"


def with_fingerprints(settings: Settings, lib: LibraryVectors) -> LibraryVectors:
    """``lib`` with its ``agreement`` set: the lists' "one recording" rule (``recsys.library.groups``) compares
    two close tracks' fingerprints as `recsys embed` cached them in the home (:mod:`recsys.pipeline.fingerprints`).
    None is decoded here, so a query stays interactive: a pair without both fingerprints falls back to the cosine."""
    lib.agreement = row_agreement(FingerprintCache(settings.home_path, decode=False), lib)
    return lib
