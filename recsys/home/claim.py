"""Whether a folder may be recsys's home, and what recsys made in it: the one rule every command that writes to the
home passes first (:func:`claim_home`).

A home is recsys's own. When recsys creates one it writes the marker ``<home>/.recsys-home`` (a small JSON: format,
created_at); only a folder with the marker, a new or empty folder, or a home made by an older recsys (below) is
written to. Refused, with one line saying why and what to do:

- ``$HOME`` itself;
- a music folder, a folder inside one, or a folder holding one (``--home ~/Music`` once deleted the user's ``ann/``
  and ``ann-peebles/`` folders, music inside);
- the player database's folder, or a folder holding the database (``--home`` on Clementine's config folder once
  deleted its ``ann-backups/``);
- any other existing, non-empty folder without the marker.

**Homes of older recsys** (no marker) are adopted, the marker written, when their contents are recognisably
recsys's: every entry's name is one recsys gives things in a home (:data:`NAMES`, the snapshot folders
``ann-<version>-<random>``, the ``.ann-link-<pid>`` of a swap, the ``.<name>.<random>.tmp`` of an atomic write, a
SQLite side file of ``mlflow.db``, a ``<name>.damaged-<time>`` that ``recsys repair`` set aside), ``ann``, if
present, is a link to one of those snapshot folders, and at least one entry is one only recsys writes
(:data:`SIGNATURES`: the table, its stamp, the lock, the remembered library, the demo's marker). A user's folder
holds other names (music, notes, ``ann-peebles``), so it is never adopted.

**What recsys deletes or replaces** under the home is a path it made and recorded, never a match on names: the index
snapshot folders are recorded in ``<home>/.recsys-made`` (:func:`record_made`) before they are created, and a swap
removes only recorded ones (:mod:`recsys.index.ann`). Adopting an older home records its snapshot folders, which the
adoption rule has already recognised.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from recsys.atomic import write_json_atomic
from recsys.errors import RecsysError
from recsys.guard import Inputs, is_under

MARKER = ".recsys-home"
MADE = ".recsys-made"
FORMAT = 1
# every name recsys gives an entry directly under a home (store, snapshot, models, cache, tracking, lock, settings)
# (tests/test_integrity_home.py holds it equal to the names the writers use: the no-op record, the content-check
# record, the recent playlists, the playlists pushed to a Subsonic server or MPD, the names of the stored tags)
NAMES = frozenset({MARKER, MADE, "tracks.lance", "failures.lance", "tracks.stamp", "recsys.lock", "ann", "models",
                   "cache", "mlflow.db", "mlartifacts", "remembered.json", "embed-plan.json", "recsys-demo-home",
                   "content-checked.npy", "recent.json", "pushed-playlists.json", "mpd_playlists.json",
                   "tags.json"})
# entries only recsys writes: one of them must be there before a folder without the marker is taken for a home
SIGNATURES = ("tracks.lance", "tracks.stamp", "recsys.lock", "remembered.json", "recsys-demo-home", MADE)
SNAPSHOT_NAME = re.compile(r"ann-\d+-[A-Za-z0-9_]+")  # tempfile.mkdtemp(prefix="ann-<version>-")
_GENERATED = re.compile(r"ann-\d+-[A-Za-z0-9_]+|\.ann-link-\d+|\.(?P<tmp>[^/]+)\.[A-Za-z0-9_]+\.tmp"
                        r"|mlflow\.db-(?:journal|wal|shm)|(?P<damaged>[^/]+)\.damaged-[^/]*")


class HomeRefused(RecsysError):
    """The folder given as home is the user's, not recsys's."""


def _recsys_name(name: str) -> bool:
    if name in NAMES:
        return True
    m = _GENERATED.fullmatch(name)
    if m is None:
        return False
    base = m.group("tmp") or m.group("damaged")
    return base is None or base in NAMES


def _recognised(home: Path, entries: list[str]) -> bool:
    """The rule for a home of an older recsys (module docstring): recsys's names only, ``ann`` a link to a snapshot
    folder, and one entry only recsys writes."""
    if not all(_recsys_name(name) for name in entries):
        return False
    ann = home / "ann"
    if "ann" in entries and not (ann.is_symlink() and SNAPSHOT_NAME.fullmatch(os.readlink(ann))):
        return False
    return any(name in entries for name in SIGNATURES)


def _refusal(home: str, inputs: Inputs | None) -> str | None:
    """Why ``home`` (absolute, links resolved) can never be a home, or None."""
    user = os.path.realpath(Path("~").expanduser())
    if home == user:
        return "is your home folder ($HOME): recsys would mix its files with yours"
    if inputs is None:
        return None
    for folder in inputs.folders:
        top = os.path.realpath(Path(folder).expanduser())
        if is_under(home, top):
            return f"is {'the' if home == top else 'inside the'} music folder {folder}"
        if is_under(top, home):
            return f"holds the music folder {folder}"
    if inputs.db:
        where = os.path.dirname(os.path.realpath(Path(inputs.db).expanduser()))
        if home == where:
            return f"is the folder of the player database {inputs.db}"
        if is_under(where, home):
            return f"holds the player database {inputs.db}"
    return None


def _write_marker(home: Path, adopted: bool) -> None:
    write_json_atomic(home / MARKER, {"format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "adopted": adopted})


def is_own(home: Path | str) -> bool:
    """The home carries recsys's marker (it was made, or adopted, by recsys)."""
    return (Path(home).expanduser() / MARKER).is_file()


def claim_home(home: Path | str, inputs: Inputs | None = None) -> Path:
    """Make sure recsys may write in ``home`` before any work: create it (with the marker) when new, adopt an empty
    folder or an older recsys's home, refuse anything else (:class:`HomeRefused`, one line); also refuse a home that
    cannot be written (a read-only mount). ``inputs``: the library, whose folders and database a home must keep
    clear of. Returns the home as an absolute path."""
    home = Path(home).expanduser().absolute()
    hint = "give --home (or RECSYS_HOME) a new or empty folder of its own, e.g. ~/.local/share/recsys"
    why = _refusal(os.path.realpath(home), inputs)
    if why is not None:
        raise HomeRefused(f"{home} {why}: recsys never uses it as its home; {hint}")
    if home.is_symlink() and not home.exists():
        raise HomeRefused(f"{home} is a link to nothing: {hint}")
    if home.exists() and not home.is_dir():
        raise HomeRefused(f"{home} is not a folder: {hint}")
    if not is_own(home):
        try:
            entries = sorted(os.listdir(home)) if home.is_dir() else []
        except OSError as exc:
            raise HomeRefused(f"cannot read the home {home} ({exc.strerror or exc}): {hint}") from None
        if entries and not _recognised(home, entries):
            shown = next((e for e in entries if not _recsys_name(e)), entries[0])
            raise HomeRefused(f"{home} is a folder recsys did not make (it holds {shown!r} and no {MARKER}): "
                              f"recsys never writes there; {hint}")
        try:
            home.mkdir(parents=True, exist_ok=True)
            if entries:
                record_made(home, [e for e in entries if SNAPSHOT_NAME.fullmatch(e) and (home / e).is_dir()])
            _write_marker(home, adopted=bool(entries))
        except OSError as exc:
            raise HomeRefused(f"cannot write in the home {home} ({exc.strerror or exc}): choose a writable folder "
                              "with --home (or RECSYS_HOME)") from None
    try:  # a read-only mount, or a folder of someone else's: say so before the work, not after it
        tempfile.TemporaryFile(dir=home).close()
    except OSError as exc:
        raise HomeRefused(f"the home {home} cannot be written ({exc.strerror or exc}): nothing was done; choose a "
                          "writable folder with --home (or RECSYS_HOME), or make it writable") from None
    return home


def made(home: Path | str) -> list[str]:
    """The names of the entries recsys recorded making under ``home`` (:func:`record_made`), oldest first."""
    try:
        data = json.loads((Path(home) / MADE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = data.get("made") if isinstance(data, dict) else None
    return [n for n in names if isinstance(n, str) and n and "/" not in n and n not in (".", "..")] \
        if isinstance(names, list) else []


def record_made(home: Path | str, names: list[str]) -> None:
    """Record ``names`` (entries directly under ``home``) as made by recsys, before they are created: a run killed
    between the record and the creation leaves a name with nothing behind it, never an unrecorded folder."""
    before = made(home)
    after = before + [n for n in names if n not in before]
    if after != before:
        write_json_atomic(Path(home) / MADE, {"made": after})


def forget_made(home: Path | str, names: list[str]) -> None:
    """Drop ``names`` from the record once they are removed."""
    before = made(home)
    after = [n for n in before if n not in names]
    if after != before:
        write_json_atomic(Path(home) / MADE, {"made": after})
