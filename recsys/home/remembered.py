"""The library given once, remembered in the home: ``<home>/remembered.json``.

A folder user runs ``recsys embed --library ~/Music`` once; every later command (``playlist``, ``status``,
``train-classifier`` ...) then reads the same folders without flags. What is remembered is what the command line
gave, key by key: ``--db`` remembers ``library.db``; ``--library`` remembers ``library.folders`` (and, without
``--db``, that no database is read, as ``--library`` alone means); ``--subsonic URL`` remembers ``library.subsonic``
(and, with ``--subsonic-user``, ``subsonic.user``; without ``--db`` and ``--library``, the server alone), and
``--db`` or ``--library`` without it forget the server. A password is never remembered. It is one settings layer
(see :mod:`recsys.config`): above the config files, below the environment and the flags.

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

from recsys.atomic import read_regular, write_json_atomic
from recsys.errors import RecsysError
from recsys.guard import Inputs
from recsys.home.claim import MARKER, claim_home, is_own

FILE = "remembered.json"
KEYS = ("db", "folders", "subsonic")  # of the library section
MAX_BYTES = 1 << 20  # a few paths; a bigger file is not one recsys wrote


def remembered_file(home: Path) -> Path:
    return home / FILE


def read_remembered(home: Path) -> dict[str, Any]:
    """The remembered ``library`` values (``{}`` when none, or when the file is unreadable: it is only a convenience,
    and the next command that remembers writes it whole again).

    Read with bounds, so a hostile file cannot stop every command: only a regular file (a FIFO there would block
    forever), at most :data:`MAX_BYTES`, nesting too deep for the parser is unreadable too."""
    try:
        data = json.loads(read_regular(remembered_file(home), MAX_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    library = data.get("library") if isinstance(data, dict) else None
    if not isinstance(library, dict):
        return {}
    kept: dict[str, Any] = {}
    for key in ("db", "subsonic"):
        if key in library and (library[key] is None or isinstance(library[key], str)):
            kept[key] = library[key]
    if isinstance(library.get("folders"), list) and all(isinstance(f, str) for f in library["folders"]):
        kept["folders"] = library["folders"]
    return kept


def read_remembered_user(home: Path) -> str | None:
    """The Subsonic user remembered with ``--subsonic`` (None when none)."""
    try:
        data = json.loads(read_regular(remembered_file(home), MAX_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    user = (data.get("subsonic") or {}).get("user") if isinstance(data, dict) else None
    return user if isinstance(user, str) and user else None


def given_library(db: str | None, folders: tuple[str, ...] | list[str], subsonic: str | None = None
                  ) -> dict[str, Any]:
    """What the command line gave, as absolute paths: ``--library`` without ``--db`` means no database;
    ``--subsonic`` without either means the server alone, and either without ``--subsonic`` no server."""
    given: dict[str, Any] = {}
    if db:  # a server (mpd://HOST:PORT, from --mpd) is kept as given
        given["db"] = db if "://" in db else os.path.abspath(os.path.expanduser(db))
    if folders:
        given["folders"] = [os.path.abspath(os.path.expanduser(f)) for f in folders]
        given.setdefault("db", None)
    if subsonic:
        given = {"db": None, "folders": given.get("folders", []), "subsonic": subsonic}
    return given


def remember(home: Path, given: dict[str, Any], user: str | None = None) -> str | None:
    """Remember ``given`` (from :func:`given_library`) over what was remembered, and the Subsonic ``user`` given
    with it; returns the line to show the user (None when nothing changed or nothing was given)."""
    if not given:
        return None
    before, user_before = read_remembered(home), read_remembered_user(home)
    after = {**before, **given}
    if "subsonic" not in given:  # --db or --library without --subsonic: no server any more
        after.pop("subsonic", None)
    user_after = (user or user_before) if after.get("subsonic") else None
    if after == before and user_after == user_before:
        return None
    if not home.is_dir():
        return None
    try:  # only in a home recsys made or adopts (recsys.home.claim), never in a user's folder
        claim_home(home, Inputs(given.get("db"), given.get("folders") or ()))
    except RecsysError:
        return None
    try:
        write_json_atomic(remembered_file(home), {"library": after, **({"subsonic": {"user": user_after}}
                                                                          if user_after else {})})
    except OSError as exc:
        return f"could not remember the library in {remembered_file(home)} ({exc.strerror or exc}): give it again"
    changed = ", ".join([f"{describe(k, after[k])}" + (f" (was {describe(k, before[k])})" if k in before else "")
                         for k in KEYS if k in given and before.get(k, ...) != after[k]]
                        + (["no Subsonic server (was " + describe("subsonic", before["subsonic"]) + ")"]
                           if before.get("subsonic") and not after.get("subsonic") else [])
                        + ([f"--subsonic-user {user_after}"] if user_after != user_before and user_after else [])
                        # what stays from before (`--db` alone keeps the remembered folders): by hand the line named
                        # the new --db alone, and the next command's note showed a --library it never mentioned
                        + [f"{describe(k, after[k])} (kept)" for k in KEYS if k not in given and after.get(k)])
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
    if not is_own(home):  # an older recsys's home is adopted by the rule every writer uses; anyone else's refused
        try:
            claim_home(home)
        except RecsysError:
            raise RecsysError(f"{home} is not a home recsys made (it has no {MARKER}): recsys removes nothing "
                              f"there; move {path} away yourself") from None
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
        return (f"--mpd {value.removeprefix('mpd://')}" if value.startswith("mpd://") else f"--db {value}") \
            if value else "no database"
    if key == "subsonic":
        return f"--subsonic {value}" if value else "no Subsonic server"
    return "--library " + " --library ".join(value) if value else "no folders"
