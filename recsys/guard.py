"""The one guard every write destination passes: never the player database, never a music folder or a music file,
never a file recsys did not create.

Playlists (:mod:`recsys.playlists.output`), the library map (:mod:`recsys.viz.map`), the MLflow store and its
artifacts (:mod:`recsys.tracking`) and the home itself (:mod:`recsys.home.claim`, which holds the models, the table and
the snapshot) all ask here before they write. Why one place: ``--out clementine.db --force`` once replaced the player
database with a playlist, ``map --out`` wrote into the music folder, and a tracking URI naming the player database
made MLflow create its tables in it; each writer had its own partial list of what is the user's.

Only the standard library and :mod:`recsys.errors`: every layer may import this module.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from recsys.errors import RecsysError

DB_SIDE_FILES = ("", "-wal", "-shm", "-journal")  # SQLite's files beside a database: each is the database


class WriteRefused(RecsysError):
    """A write destination is one of the user's things."""


@runtime_checkable
class Files(Protocol):
    """A large collection of files as the guard asks about it, without a set of every path: whether it holds one
    path, and which of its files have one name (the only ones that can be the same file by another path)."""

    def __contains__(self, path: object) -> bool: ...

    def named(self, name: str) -> Iterable[str]: ...


@dataclass(frozen=True)
class AnyOf:
    """Several collections of files asked as one (the player's tracks, the index snapshot's), none copied: at a
    million tracks a set of both cost a playlist a second."""

    parts: tuple[Collection[str] | Files, ...]

    def __contains__(self, path: object) -> bool:
        return any(path in part for part in self.parts)

    def named(self, name: str) -> Iterator[str]:
        for part in self.parts:
            yield from _named(part, name)


@dataclass(frozen=True)
class Inputs:
    """What recsys reads and must never write, whatever the flags say: the player database (and its side files),
    the music folders, and every music file of the library (``files``: absolute paths, possibly outside the folders;
    any collection, or a :class:`Files` that answers without one)."""

    db: str | Path | None = None
    folders: Sequence[str | Path] = ()
    files: Collection[str] | Files = ()


def _named(files: Collection[str] | Files, name: str) -> Iterable[str]:
    """The files of ``files`` whose name (last path component) is ``name``."""
    if isinstance(files, Files):
        return files.named(name)
    return (f for f in files if f.endswith(name) and os.path.basename(f) == name)


def is_under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` itself or lies inside it, compared at folder boundaries ('/music/a' is not
    under '/music/ab'); both absolute, not resolved (links are the caller's business)."""
    root = folder.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refusal(path: str | Path, inputs: Inputs | None) -> str | None:
    """Why ``path`` is the user's (``'the player database'``, ``'inside the music folder X'``, ``'a music file of
    your library'``), or None: compared both as given and with links resolved, so a link cannot smuggle a write in."""
    if inputs is None:
        return None
    given = str(Path(path).expanduser().absolute())
    real = os.path.realpath(given)
    names = {given, real}
    if inputs.db:
        db = Path(inputs.db).expanduser().absolute()
        for suffix in DB_SIDE_FILES:
            side = f"{db}{suffix}"
            if names & {side, os.path.realpath(side)} or _same_file(real, side):
                return "the player database" + (f" {suffix[1:]} file" if suffix else "")
    for folder in inputs.folders:
        top = os.path.realpath(Path(folder).expanduser())
        if is_under(real, top) or is_under(given, str(Path(folder).expanduser().absolute())):
            return f"inside the music folder {folder}"
    # only an existing file can be a library file by another path (a hard link, a bind mount), and only one of the
    # same name: the library's files are searched for the name, never compared one by one
    if any(name in inputs.files for name in names) or (os.path.exists(real) and any(
            _same_file(real, f) for f in _named(inputs.files, os.path.basename(real)))):
        return "a music file of your library"
    return None


def check_destination(path: str | Path, inputs: Inputs | None, *, recognise: Callable[[Path], bool], what: str,
                      replaceable: str, overwrite: bool = False, flag: str = "--out",
                      error: type[RecsysError] = WriteRefused) -> None:
    """Refuse to write a file at ``path`` when it is the user's (:func:`refusal`), anything but a regular file (a
    link, folder, device, FIFO), or an existing file that ``recognise`` does not take for one recsys writes (``what``:
    'a playlist'); an existing one is replaced only with ``overwrite``. Raises ``error`` with one line naming
    ``flag``, the option that chose the destination."""
    path = Path(path)
    why = refusal(path, inputs)
    if why is not None:
        where = "there" if why.startswith("inside") else "it"
        raise error(f"{path} is {why}: recsys never writes {where}; choose another {flag}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError:
        return  # an unreachable parent: the write reports it
    if stat.S_ISLNK(st.st_mode):
        raise error(f"{path} is a symbolic link: give the file itself to {flag}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path} is not a regular file (a folder, device, FIFO or socket): choose another {flag}")
    if not overwrite:
        raise error(f"{path} exists: pass --force or choose another {flag}")
    if not recognise(path):
        raise error(f"{path} exists and is not {what}: --force only replaces {replaceable}; choose another {flag}")
