"""Typed settings: packaged defaults < user YAML (--config) < environment RECSYS_* < CLI flags.

The defaults are the dataclass field values below; ``configs/default.yaml`` lists the same values with a comment each
(a test keeps the two equal). Environment variables name a setting as ``RECSYS_<SECTION>__<KEY>`` (for example
``RECSYS_EMBED__WORKERS=4``); ``RECSYS_HOME`` sets the home folder.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys.errors import RecsysError


class ConfigError(RecsysError):
    """A setting that cannot be used; the message names the setting and the file."""


def default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "recsys"


@dataclass
class LibrarySettings:
    db: str | None = None
    folders: list[str] = field(default_factory=list)


@dataclass
class AudioSettings:
    crop_seconds: float = 3.0
    crop_position: str = "center"
    crop_count: int = 3
    max_track_minutes: float = 15.0
    decode_timeout_s: float = 60.0


@dataclass
class EmbedSettings:
    encoder: str = "auto"
    device: str = "auto"
    workers: int = 0
    batch_size: int = 32
    write_batch: int = 64


@dataclass
class IndexSettings:
    exact_max_tracks: int = 30000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128


@dataclass
class ClassifierSettings:
    min_ratings: int = 20
    seed: int = 0
    pseudo_until: int = 500
    knn_k: int = 10


@dataclass
class RecommendSettings:
    top_n: int = 100
    max_per_artist: int = 3
    max_per_album: int = 3
    mmr_lambda: float = 0.7
    w_model: float = 0.6
    w_knn: float = 0.4
    format: str = "xspf"
    out_dir: str = "~/Music/recommendations"
    name: str = "recsys"


@dataclass
class TrackingSettings:
    uri: str | None = None


@dataclass
class TrainSettings:
    base: str = "musicnn"
    epochs: int = 30
    batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 0.0001
    temperature: float = 0.5
    seed: int = 0
    device: str = "auto"
    windows: int = 4
    window_seconds: float = 6.0
    holdout: float = 0.2
    min_tracks: int = 16
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 256])
    cache_max_gb: float = 20.0
    workers: int = 0
    collapse_std: float = 0.05


@dataclass
class Settings:
    home: str = ""
    library: LibrarySettings = field(default_factory=LibrarySettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser() if self.home else default_home()


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn a YAML or environment value into the declared type, or say which setting is wrong."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("", "null", "none")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(os.pathsep) if v]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value]
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if annotation in (int, float, str):
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return annotation(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
    return value


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(hints)
            raise ConfigError(f"{where}: unknown setting '{key}' (known: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a section (mapping), got {value!r}")
            _apply(current, value, f"{where}.{key}")
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}.{key}"))


def _env_values(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("RECSYS_"):
            continue
        parts = name[len("RECSYS_"):].lower().split("__")
        if parts == ["home"]:
            values["home"] = raw
        elif len(parts) == 2 and all(parts):
            values.setdefault(parts[0], {})[parts[1]] = raw
    return values


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the settings from every layer; ``overrides`` is ``{"section": {"key": value}}`` from CLI flags.

    Override values of None are ignored, so a CLI flag that was not given leaves the layers below in force.
    """
    settings = Settings()
    if config_file is not None:
        path = Path(config_file).expanduser()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist: give an existing YAML file to --config") from None
        except (OSError, yaml.YAMLError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"config file {path} cannot be read: {first}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
        _apply(settings, data, str(path))
    _apply(settings, _env_values(dict(os.environ if environ is None else environ)), "environment RECSYS_")
    if overrides:
        cleaned: dict[str, Any] = {}
        for key, value in overrides.items():
            if isinstance(value, dict):
                kept = {k: v for k, v in value.items() if v is not None and v != () and v != []}
                if kept:
                    cleaned[key] = kept
            elif value is not None:
                cleaned[key] = value
        _apply(settings, cleaned, "command line")
    return settings


def as_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
