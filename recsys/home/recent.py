"""The playlists recsys wrote lately, remembered in ``<home>/recent.json``: the next playlist of the same taste lets
their tracks rest (``recsys.recommender.rank``'s ``rested``), so that consecutive playlists do not repeat themselves.

An entry is one written playlist: when (Unix seconds), its taste (:func:`taste_of`: the mode, the seeds and the
``--where`` terms; only playlists of the same taste rest each other's tracks), its name, file and track keys. What
rests is the tracks of the ``recommend.rest_playlists`` newest entries of that taste written within
``recommend.rest_days``; ``recsys status`` lists the entries.

The file is bounded: at most :data:`MAX_ENTRIES` entries of at most :data:`MAX_KEYS` keys, none older than
:data:`MAX_DAYS`, written atomically (``recsys.atomic``), never created in a home that does not exist, and read with
bounds (a hostile or damaged file is an empty history: it is only a convenience, rewritten whole by the next
playlist).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from recsys.atomic import read_regular, write_json_atomic

FILE = "recent.json"
MAX_ENTRIES = 50  # whatever the settings ask: the file stays small
MAX_KEYS = 10_000  # tracks remembered of one playlist (recommend.top_n is at most 10,000 too)
MAX_DAYS = 365.0
MAX_BYTES = 64 << 20
TASTE_CHARS = 300  # a longer taste is stored as a digest


@dataclass(frozen=True)
class Written:
    """One playlist recsys wrote."""

    when: float  # Unix seconds
    taste: str
    name: str
    path: str
    keys: tuple[str, ...]

    def as_json(self) -> dict:
        """What ``recsys status --json`` shows of it (not every key: the count)."""
        return {"written": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.when)), "taste": self.taste,
                "name": self.name, "path": self.path, "tracks": len(self.keys)}


def taste_of(mode: str, seeds: Sequence[str] = (), where: Sequence[str] = ()) -> str:
    """What makes two playlists "the same taste": the mode, the seeds and the filter terms, as given (a digest of
    them when they are long: a beets query's seeds can be thousands of tracks)."""
    text = " ".join([mode, *(f"seed:{s}" for s in sorted(seeds)), *(f"where:{w}" for w in where)])
    if len(text) <= TASTE_CHARS:
        return text
    return f"{mode} {hashlib.blake2b(text.encode('utf-8', 'surrogatepass'), digest_size=12).hexdigest()}"


def recent_file(home: Path) -> Path:
    return Path(home) / FILE


def read_recent(home: Path) -> list[Written]:
    """The remembered playlists, newest first; ``[]`` when there are none or the file is unreadable."""
    try:
        data = json.loads(read_regular(recent_file(home), MAX_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    out = []
    for e in data.get("playlists", []) if isinstance(data, dict) else []:
        try:
            keys = e["keys"]
            if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                continue
            out.append(Written(float(e["when"]), str(e["taste"]), str(e["name"]), str(e["path"]),
                               tuple(keys[:MAX_KEYS])))
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(out, key=lambda w: -w.when)[:MAX_ENTRIES]


def resting(home: Path, taste: str, playlists: int, days: float, now: float | None = None) -> set[str]:
    """The track keys of the ``playlists`` newest remembered playlists of ``taste`` written within ``days``."""
    if playlists <= 0 or days <= 0:
        return set()
    since = (time.time() if now is None else now) - days * 86400
    mine = [w for w in read_recent(home) if w.taste == taste and w.when >= since][:playlists]
    return {k for w in mine for k in w.keys}


def remember_playlist(home: Path, written: Written) -> str | None:
    """Add ``written`` to the history (the oldest entries and those past :data:`MAX_DAYS` dropped); nothing when the
    home does not exist (recsys never creates it here). A home that cannot be written (read-only) costs the history
    only: the note to show, else None."""
    home = Path(home)
    if not home.is_dir():
        return None
    since = written.when - MAX_DAYS * 86400
    kept = [written] + [w for w in read_recent(home) if w.when >= since]
    kept = [Written(w.when, w.taste, w.name, w.path, tuple(w.keys[:MAX_KEYS])) for w in kept[:MAX_ENTRIES]]
    try:
        write_json_atomic(recent_file(home), {"playlists": [{**asdict(w), "keys": list(w.keys)} for w in kept]})
    except OSError as exc:
        return (f"could not remember this playlist in {recent_file(home)} ({exc.strerror or exc}): the next one "
                "may repeat its tracks")
    return None
