"""The library given once, remembered in the home: ``<home>/remembered.json``.

A folder user runs ``recsys embed --library ~/Music`` once; every later command (``playlist``, ``status``,
``train-classifier`` ...) then reads the same folders without flags. What is remembered is what the command line
gave, key by key: ``--db`` remembers ``library.db``; ``--library`` remembers ``library.folders`` (and, without
``--db``, that no database is read, as ``--library`` alone means). It is one settings layer (see
:mod:`recsys.config`): above the config files, below the environment and the flags.

Only the commands that write into the home anyway remember (``embed``, ``train-classifier``, ``train-encoder``,
``playlist``), after they succeeded, so a typo is never remembered; ``status`` and ``eval`` only read it. The file is
written atomically, never created in a home that does not exist, only in a home recsys made or adopts
(:mod:`recsys.home.claim`), and never anywhere else. ``recsys config --forget`` removes it (:func:`forget`), and with
it every remembered value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from recsys.atomic import write_json_atomic
from recsys.errors import RecsysError
from recsys.guard import Inputs
from recsys.home.claim import MARKER, claim_home, is_own

FILE = "remembered.json"
KEYS = ("db", "folders")  # of the library section


def remembered_file(home: Path) -> Path:
    return home / FILE


def read_remembered(home: Path) -> dict[str, Any]:
    """The remembered ``library`` values (``{}`` when none, or when the file is unreadable: it is only a convenience,
    and the next command that remembers writes it whole again)."""
    try:
        data = json.loads(remembered_file(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    library = data.get("library") if isinstance(data, dict) else None
    if not isinstance(library, dict):
        return {}
    kept: dict[str, Any] = {}
    if "db" in library and (library["db"] is None or isinstance(library["db"], str)):
        kept["db"] = library["db"]
    if isinstance(library.get("folders"), list) and all(isinstance(f, str) for f in library["folders"]):
        kept["folders"] = library["folders"]
    return kept


def given_library(db: str | None, folders: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """What the command line gave, as absolute paths: ``--library`` without ``--db`` means no database."""
    given: dict[str, Any] = {}
    if db:
        given["db"] = os.path.abspath(os.path.expanduser(db))
    if folders:
        given["folders"] = [os.path.abspath(os.path.expanduser(f)) for f in folders]
        given.setdefault("db", None)
    return given


def remember(home: Path, given: dict[str, Any]) -> str | None:
    """Remember ``given`` (from :func:`given_library`) over what was remembered; returns the line to show the user
    (None when nothing changed or nothing was given)."""
    if not given:
        return None
    before = read_remembered(home)
    after = {**before, **given}
    if after == before:
        return None
    if not home.is_dir():
        return None
    try:  # only in a home recsys made or adopts (recsys.home.claim), never in a user's folder
        claim_home(home, Inputs(given.get("db"), given.get("folders") or ()))
    except RecsysError:
        return None
    try:
        write_json_atomic(remembered_file(home), {"library": after})
    except OSError as exc:
        return f"could not remember the library in {remembered_file(home)} ({exc.strerror or exc}): give it again"
    changed = ", ".join(f"{describe(k, after[k])}" + (f" (was {describe(k, before[k])})" if k in before else "")
                        for k in KEYS if k in given and before.get(k, ...) != after[k])
    return f"remembered for the next commands: {changed} (in {remembered_file(home)})"


def forget(home: Path) -> str:
    """Remove ``<home>/remembered.json`` (that file only, nothing else of the home); the line saying what was forgotten.

    No home lock: :func:`remember` takes none either (``embed`` and ``train-encoder`` call it after releasing
    theirs, ``train-classifier`` and ``playlist`` never hold it), and both replace or remove the whole file in one
    step, so a reader sees the old file or none. Taking the lock would also create a home that does not exist."""
    path = remembered_file(home)
    if not path.exists() and not path.is_symlink():
        return f"nothing was remembered ({path} does not exist)"
    if path.is_dir():
        raise RecsysError(f"{path} is a folder, not a file recsys wrote: move it away yourself")
    if not is_own(home):
        raise RecsysError(f"{home} is not a home recsys made (it has no {MARKER}): recsys removes nothing there; "
                          f"move {path} away yourself")
    was = read_remembered(home)
    try:
        path.unlink()
    except OSError as exc:
        raise RecsysError(f"cannot remove {path} ({exc.strerror or exc}): check the permissions of {home}") from None
    if not was:
        return f"removed {path}, which held nothing readable: nothing was remembered"
    shown = ", ".join(describe(k, was[k]) for k in KEYS if k in was)
    return f"forgot the remembered library: {shown} (removed {path}); the next commands read the library of your " \
           "config file, the environment or the defaults, or the --db/--library they are given"


def describe(key: str, value: Any) -> str:
    if key == "db":
        return f"--db {value}" if value else "no database"
    return "--library " + " --library ".join(value) if value else "no folders"
