"""The settings a command runs with, built once for every command: the layers of :mod:`recsys.config` (defaults <
``--config`` file < environment < flags) plus the one rule that joins the library flags.

The rule: ``--library DIR`` without ``--db`` means the folders alone (the player database is then not looked for),
whatever the config file or environment name as ``library.db``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recsys.config import Settings, load_settings


def command_settings(config_file: str | None, home: str | None, *, db: str | None = None,
                     folders: Sequence[str] = (), **overrides: dict[str, Any]) -> Settings:
    """Settings for one command: ``home`` and ``config_file`` from the global options, ``db`` and ``folders`` from
    ``--db``/``--library``, ``overrides`` as ``{"section": {"key": flag value or None}}``."""
    library = {"db": db, "folders": list(folders) or None}
    settings = load_settings(config_file, overrides={"home": home, "library": library, **overrides})
    if folders and not db:
        settings.library.db = None
    return settings
