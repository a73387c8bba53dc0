"""The settings a command runs with, built once for every command: the layers of :mod:`recsys.config` (defaults <
user file < remembered library < environment < flags) plus the one rule that joins the library flags.

The rule: ``--library DIR`` without ``--db`` means the folders alone (the player database is then not looked for),
whatever the config file or environment name as ``library.db``. The library flags a command was given are
remembered in the home (:mod:`recsys.home.remembered`) once the command succeeded, so later commands need none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recsys.config import Settings, load_settings, remembered_origins
from recsys.guard import Inputs
from recsys.home.remembered import describe, forget, given_library, remember
from recsys.library.filters import HELP as WHERE_HELP  # the --where flag's help, for the commands that take it

__all__ = ["WHERE_HELP", "command_settings", "forget_library", "library_inputs", "remember_library",
           "remembered_note"]


def command_settings(config_file: str | None, home: str | None, *, db: str | None = None,
                     folders: Sequence[str] = (), **overrides: dict[str, Any]) -> Settings:
    """Settings for one command: ``home`` and ``config_file`` from the global options, ``db`` and ``folders`` from
    ``--db``/``--library``, ``overrides`` as ``{"section": {"key": flag value or None}}``."""
    library = {"db": db, "folders": list(folders) or None}
    settings = load_settings(config_file, overrides={"home": home, "library": library, **overrides})
    if folders and not db:
        settings.library.db = None
    return settings


def library_inputs(settings: Settings) -> Inputs:
    """The library's database (given, or the one found at its usual place) and folders: what the home and every file
    recsys writes must keep clear of (:mod:`recsys.guard`, :mod:`recsys.home.claim`)."""
    from recsys.library.sources import library_db

    return Inputs(library_db(settings.library.db, settings.library.folders), tuple(settings.library.folders or ()))


def remembered_note(settings: Settings) -> str | None:
    """The line saying which library values come from an earlier command (None when none do)."""
    origins = remembered_origins(settings)
    if not origins:
        return None
    keys = [k for k in ("db", "folders") if f"library.{k}" in origins]
    shown = ", ".join(describe(k, getattr(settings.library, k)) for k in keys)
    where = next(iter(origins.values())).removeprefix("remembered in ")
    return f"using the library remembered from an earlier command: {shown} ({where}; give --db or --library to " \
           "replace it)"


def remember_library(settings: Settings, db: str | None, folders: Sequence[str]) -> str | None:
    """Remember the ``--db``/``--library`` a command succeeded with; the line to show, or None when unchanged."""
    return remember(settings.home_path, given_library(db, tuple(folders)))


def forget_library(settings: Settings) -> str:
    """Forget the remembered ``--db``/``--library`` (``recsys config --forget``); the line saying what was forgotten."""
    return forget(settings.home_path)
