"""Typed settings: packaged defaults < user YAML < the remembered library < environment RECSYS_* < CLI flags.

The user YAML is ``--config FILE`` when given, else ``$XDG_CONFIG_HOME/recsys/config.yaml`` (``~/.config/recsys/
config.yaml``) when it exists; recsys only ever reads it. The remembered library is the ``--db``/``--library`` an
earlier command was given, kept in ``<home>/remembered.json`` (see :mod:`recsys.home.remembered`). Every value keeps
where it came from (``Settings.origins``), which ``recsys config`` prints.

The defaults are the dataclass field values below, each with the range it allows (checked when the settings load);
``recsys/default.yaml`` (installed with the package, printed by ``recsys config --defaults``) lists the same values
with a comment each (a test keeps the two equal). Environment variables name a setting as
``RECSYS_<SECTION>__<KEY>`` (for example ``RECSYS_EMBED__WORKERS=4``); ``RECSYS_HOME`` sets the home folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys.atomic import read_regular
from recsys.choices import CROP_POSITIONS, DEFAULT_ENCODER, ENCODERS, PLAYLIST_WRITERS, RUNTIMES, TRAINABLE_ENCODERS
from recsys.errors import RecsysError, shown


class ConfigError(RecsysError):
    """A setting that cannot be used; the message names the setting and the file."""


def default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "recsys"


PLAYLIST_FORMATS = tuple(PLAYLIST_WRITERS)  # recsys.choices: one line there adds a format everywhere
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class Rule:
    """The values one setting allows: a numeric range (``lo``/``hi``, open when ``*_open``), a set of choices, or a
    pattern. Numbers are always finite; text is never empty unless ``empty`` says so, and never longer than
    ``max_chars`` (paths included: no file system takes a longer one); a list has at most ``max_items`` items."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    pattern: re.Pattern | None = None
    empty: bool = False
    meaning: str = ""
    test: Callable[[str], bool] | None = None
    max_chars: int = 4096
    max_items: int = 1000

    def describe(self) -> str:
        if self.meaning:
            return self.meaning
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.lo is not None and self.hi is not None:
            return f"{'above' if self.lo_open else 'from'} {self.lo:g} up to {self.hi:g}"
        if self.lo is not None:
            return f"{'above' if self.lo_open else 'at least'} {self.lo:g}"
        if self.hi is not None:
            return f"at most {self.hi:g}"
        return f"text of {0 if self.empty else 1} to {self.max_chars} characters"  # every number rule has bounds

    def allows(self, value: Any) -> bool:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                return False
            if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
                return False
            return self.hi is None or value <= self.hi
        if isinstance(value, str):
            if len(value) > self.max_chars:
                return False
            if self.choices:
                return value in self.choices
            if self.pattern is not None:
                return self.pattern.fullmatch(value) is not None
            if self.test is not None:
                return self.test(value)
            return self.empty or bool(value.strip())
        return True


# Every count has an upper bound: more is never useful and only costs time or memory (`path --steps 1000000` ran for
# minutes on a 30-track library, 2**40 ran out of memory). The counts a flag takes that are no setting (and
# `recsys path --steps`: ``recsys.choices.MAX_PATH_STEPS``, which the song path checks too):
MAX_TRACKS_ASKED = 10_000  # a playlist's length (`--top-n`, recommend.top_n), `recsys similar -k`
MAX_COUNT = 1_000_000  # a bound for counts of tracks, ratings or plays that a library could need


def rule_of(section: type, key: str) -> Rule:
    """The rule of the setting ``key`` of a settings section class (the CLI takes a flag's bounds from it)."""
    return next(f for f in dataclasses.fields(section) if f.name == key).metadata["rule"]


def _s(default: Any, rule: Rule | None = None, **kw: Any) -> Any:
    """A setting with its default and the values it allows (checked at load, so a bad value stops nothing later)."""
    rule = rule or Rule(**kw)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


# The encoders recsys ships (recsys.choices.ENCODERS); checked here so a typo fails at load, not later.
BUILTIN_ENCODERS = tuple(ENCODERS)
DEFAULT_BUILTIN = DEFAULT_ENCODER


def _encoder_spec(spec: str) -> bool:
    """auto, a built-in name, a checkpoint file (.pt, or any existing file) or module:Class."""
    module, _, cls = spec.partition(":")
    return (spec == "auto" or spec in BUILTIN_ENCODERS or spec.endswith(".pt") or (bool(module) and bool(cls))
            or Path(spec).expanduser().is_file())


_ENCODER_RULE = Rule(test=_encoder_spec, meaning=f"auto, {', '.join(BUILTIN_ENCODERS)}, a checkpoint file .pt, "
                                                 "or module:Class")
_DEVICE_RULE = Rule(pattern=_DEVICE, meaning="auto, cpu, cuda, cuda:N or mps")


@dataclass
class LibrarySettings:
    db: str | None = _s(None)
    folders: list[str] = _s([])
    exclude_genres: list[str] = _s([])
    subsonic: str | None = _s(None, pattern=re.compile(r"https?://[^\s@]+"),
                              meaning="a Subsonic server's address, http(s)://HOST[:PORT][/PATH], no user in it")


def _path_map_entry(entry: str) -> bool:
    theirs, sep, ours = entry.partition("=")
    return bool(sep) and theirs.startswith("/") and ours.strip() != ""


@dataclass
class NavidromeSettings:
    user: str | None = _s(None)
    path_map: list[str] = _s([], test=_path_map_entry, meaning="entries NAVIDROME_FOLDER=YOUR_FOLDER, e.g. "
                                                               "/music=/home/me/Music")
    loved_stars: float = _s(4.0, lo=0, hi=5)

    def mapping(self) -> dict[str, str]:
        """path_map as {Navidrome's folder: this machine's folder}."""
        return {theirs: str(Path(ours).expanduser()) for theirs, _, ours in (e.partition("=") for e in self.path_map)}


@dataclass
class BeetsSettings:
    config: str | None = _s(None)
    directory: str | None = _s(None)
    rating_scale: float = _s(0.0, test=lambda v: v in (0, 1, 5, 10, 100),
                             meaning="0 (read from the library), 1, 5, 10 or 100")


@dataclass
class MpdSettings:
    music_directory: str | None = _s(None)
    rating_scale: float = _s(10.0, lo=0, lo_open=True, hi=1000)
    play_count_sticker: str = _s("playCount", empty=True)


@dataclass
class SubsonicSettings:
    user: str | None = _s(None)
    password_file: str | None = _s(None)
    path_map: list[str] = _s([], test=_path_map_entry, meaning="entries SERVER_FOLDER=YOUR_FOLDER, e.g. "
                                                               "/=/home/me/Music")
    loved_stars: float = _s(4.0, lo=0, hi=5)
    timeout_s: float = _s(30.0, lo=0, lo_open=True, hi=3600)

    def mapping(self) -> dict[str, str]:
        """path_map as {the server's folder: this machine's folder}."""
        return {theirs: str(Path(ours).expanduser()) for theirs, _, ours in (e.partition("=") for e in self.path_map)}


@dataclass
class AudioSettings:
    crop_seconds: float = _s(3.0, lo=0, lo_open=True, hi=600)
    crop_position: str = _s("center", choices=CROP_POSITIONS)
    crop_count: int = _s(3, lo=1, hi=64)
    max_track_minutes: float = _s(0.0, lo=0, hi=100_000, meaning="0 (no limit) up to 100000")
    decode_timeout_s: float = _s(60.0, lo=0, lo_open=True, hi=86400)


@dataclass
class EmbedSettings:
    encoder: str = _s("auto", _ENCODER_RULE)
    device: str = _s("auto", _DEVICE_RULE)
    runtime: str = _s("onnx", choices=RUNTIMES)
    workers: int = _s(0, lo=0, hi=1024)
    batch_size: int = _s(32, lo=1, hi=65536)
    write_batch: int = _s(64, lo=1, hi=1_000_000)
    ray_chunk: int = _s(512, lo=1, hi=1_000_000)
    fingerprints: bool = _s(True)


@dataclass
class IndexSettings:
    exact_max_tracks: int = _s(30000, lo=0, hi=100 * MAX_COUNT)
    hnsw_m: int = _s(32, lo=2, hi=512)
    hnsw_ef_construction: int = _s(80, lo=1, hi=100_000)
    hnsw_ef_search: int = _s(128, lo=1, hi=100_000)
    hubness: str = _s("csls", choices=("csls", "off"))
    compressed_min_tracks: int = _s(1_000_000, lo=0, hi=100 * MAX_COUNT)
    ivf_codes: str = _s("sq8", choices=("sq8", "pq"))
    ivf_nlist: int = _s(0, lo=0, hi=1 << 20, meaning="0 (sized from the track count) up to 1048576")
    pq_m: int = _s(0, lo=0, hi=4096, meaning="0 (a quarter of the dimensions) up to 4096")
    ivf_train_sample: int = _s(200_000, lo=1000, hi=100 * MAX_COUNT)
    ivf_nprobe: int = _s(32, lo=1, hi=1 << 20)
    ivf_rerank: int = _s(10, lo=1, hi=1000)


@dataclass
class ClassifierSettings:
    min_ratings: int = _s(20, lo=2, hi=MAX_COUNT)
    seed: int = _s(0, lo=0, hi=2**32 - 1)
    pseudo_until: int = _s(500, lo=0, hi=MAX_COUNT)
    knn_k: int = _s(20, lo=1, hi=10_000)


@dataclass
class RecommendSettings:
    top_n: int = _s(100, lo=1, hi=MAX_TRACKS_ASKED)
    max_per_artist: int = _s(3, lo=1, hi=MAX_TRACKS_ASKED)
    max_per_album: int = _s(3, lo=1, hi=MAX_TRACKS_ASKED)
    mmr_lambda: float = _s(0.7, lo=0, hi=1)
    w_model: float = _s(0.2, lo=0, hi=1000)
    w_knn: float = _s(0.8, lo=0, hi=1000)
    played_min: int = _s(3, lo=1, hi=MAX_COUNT)
    max_voters: int = _s(1000, lo=1, hi=MAX_COUNT)
    album_vote: float = _s(1.0, lo=0, hi=100)
    artist_vote: float = _s(0.5, lo=0, hi=100)
    min_liked_share: float = _s(0.5, lo=0, hi=0.99)
    min_audio_votes: float = _s(4.0, lo=0, hi=1000)
    block_unliked_albums: bool = _s(True)
    scale_caps: bool = _s(True)
    eval_splits: int = _s(5, lo=1, hi=100)
    eval_hidden_fraction: float = _s(0.25, lo=0.01, hi=0.9)
    format: str = _s("xspf", choices=PLAYLIST_FORMATS)
    out_dir: str = _s("~/Music/recommendations")
    name: str = _s("recsys", max_chars=100, meaning="text of 1 to 100 characters")  # title, start of file names
    rest_playlists: int = _s(3, lo=0, hi=50)
    rest_days: float = _s(7.0, lo=0, hi=365)
    keep_copies: bool = _s(False)


# The one rule of a table URI: an S3 bucket and an optional prefix, no user or key in it (credentials only ever come
# from the AWS_* environment variables).
_TABLE_URI = re.compile(r"(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s@]*)?)?")
# storage option names that would carry a credential: refused, whatever their value (see _check_store)
_SECRET_OPTION = re.compile(r"secret|access_key|token|password|credential", re.IGNORECASE)


@dataclass
class StoreSettings:
    table: str = _s("", pattern=_TABLE_URI,
                    meaning="empty (the table in the home folder) or s3://BUCKET[/PREFIX]")
    storage_options: dict[str, str] = _s({}, meaning="KEY: VALUE options of the object store (endpoint, region, "
                                             "allow_http, ...)")


@dataclass
class TrackingSettings:
    uri: str | None = _s(None)


@dataclass
class TrainSettings:
    base: str = _s("musicnn", choices=TRAINABLE_ENCODERS)
    epochs: int = _s(30, lo=1, hi=100_000)
    batch_size: int = _s(64, lo=4, hi=65536)
    lr: float | None = _s(None, lo=0, lo_open=True, hi=10)
    weight_decay: float = _s(0.0001, lo=0, hi=10)
    temperature: float = _s(0.5, lo=0, lo_open=True, hi=100)
    seed: int = _s(0, lo=0, hi=2**32 - 1)
    device: str = _s("auto", _DEVICE_RULE)
    windows: int = _s(4, lo=2, hi=64)
    window_seconds: float = _s(6.0, lo=3.0, hi=600)  # a training excerpt is one 3 s patch cut from a window
    holdout: float = _s(0.2, lo=0, lo_open=True, hi=0.9)
    min_tracks: int = _s(16, lo=2, hi=MAX_COUNT)
    channels: list[int] = _s([32, 64, 128, 256, 256], lo=1, hi=4096, max_items=16)
    cache_max_gb: float = _s(20.0, lo=0, hi=MAX_COUNT)
    workers: int = _s(0, lo=0, hi=1024)
    collapse_std: float = _s(0.05, lo=0, hi=10)


@dataclass
class Settings:
    home: str = ""
    library: LibrarySettings = field(default_factory=LibrarySettings)
    navidrome: NavidromeSettings = field(default_factory=NavidromeSettings)
    beets: BeetsSettings = field(default_factory=BeetsSettings)
    mpd: MpdSettings = field(default_factory=MpdSettings)
    subsonic: SubsonicSettings = field(default_factory=SubsonicSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    # where each value came from, by dotted name ('embed.workers'): 'from config file ..., line 3', 'from environment
    # variable ...', 'from the command line, --workers', 'remembered in ...'; a name absent here is the default
    origins: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser() if self.home else default_home()


Origin = Callable[[str], str]  # dotted setting name -> where its value came from, for messages


def _coerce(value: Any, annotation: Any, name: str, origin: Origin) -> Any:
    """Turn a YAML or environment value into the declared type, or say which setting is wrong and where it is."""
    kind = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if kind in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("", "null", "none")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name, origin)
    if kind is dict:
        if isinstance(value, str):  # from the environment: KEY=VALUE,KEY=VALUE
            pairs = [item.partition("=") for item in value.split(",") if item.strip()]
            if any(not sep or not key.strip() for key, sep, _ in pairs):
                raise ConfigError(f"{name}: expected KEY=VALUE entries separated by commas ({origin(name)})")
            value = {key.strip(): item.strip() for key, _, item in pairs}
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping of KEY: VALUE, got {shown(value)} ({origin(name)})")
        return {str(_coerce(k, args[0], name, origin)): _coerce(v, args[1], name, origin) for k, v in value.items()}
    if kind is list:
        if isinstance(value, str):
            value = [v for v in value.split(os.pathsep) if v]
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {shown(value)} ({origin(name)})")
        return [_coerce(v, args[0], name, origin) for v in value]
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            raise ValueError(value)
        if annotation in (int, float):
            # YAML `yes`, an empty value, !!binary bytes (int(b'1') is 1) or a date is no number
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError(value)
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return annotation(value)
        if annotation is str:
            # only plain scalars: !!binary bytes would become the text "b'/tmp'", a YAML date or `yes` a text the
            # user never wrote (quote such a value in the file)
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError, OverflowError):
        kind_name = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}[annotation]
        quote = " (put it in quotes)" if annotation is str and not isinstance(value, bytes) else ""
        raise ConfigError(f"{name}: expected {kind_name}, got {shown(value)}{quote} ({origin(name)})") from None
    return value


_USERINFO = re.compile(r"//[^/@\s]*@")


def _check(value: Any, rule: Rule | None, name: str, origin: Origin) -> None:
    """The range check of one setting: one line naming it, its value, what it allows and where the value is."""
    if rule is None or value is None:  # None reaches here only for a setting that may be unset
        return
    if isinstance(value, list) and len(value) > rule.max_items:
        raise ConfigError(f"{name} has {len(value)} items, more than the {rule.max_items} it takes ({origin(name)})")
    for item in value if isinstance(value, list) else [value]:
        if not rule.allows(item):
            given = value if isinstance(value, list) else item
            given = _USERINFO.sub("//***@", shown(given))  # a URL's user and key never reach a message
            raise ConfigError(f"{name} = {given} is not allowed (allowed: {rule.describe()}; {origin(name)})")


def _apply(obj: Any, values: dict[str, Any], origin: Origin, prefix: str = "",
           origins: dict[str, str] | None = None) -> None:
    hints = typing.get_type_hints(type(obj))
    hints.pop("origins", None)
    fields = {f.name: f for f in dataclasses.fields(obj)}
    origins = obj.origins if origins is None and isinstance(obj, Settings) else origins
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in hints:
            known = ", ".join(hints)
            raise ConfigError(f"unknown setting {shown(name)} ({origin(name)}); known here: {known}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a section (mapping), got {shown(value)} ({origin(name)})")
            _apply(current, value, origin, f"{name}.", origins)
        else:
            coerced = _coerce(value, hints[key], name, origin)
            _check(coerced, fields[key].metadata.get("rule"), name, origin)
            setattr(obj, key, coerced)
            if origins is not None:
                origins[name] = origin(name)


def _check_together(settings: Settings) -> None:
    """Settings whose ranges depend on each other; checked once every layer is applied."""
    r = settings.recommend
    if r.w_model + r.w_knn <= 0:
        raise ConfigError("recommend.w_model and recommend.w_knn are both 0: give at least one a positive weight")


def _check_store(settings: Settings) -> None:
    """No credential in the settings: a storage option naming a key or secret is refused (its value never shown), so
    none can end up in a settings file, `recsys config`'s output or a tracked run's parameters."""
    named = sorted(k for k in settings.store.storage_options if _SECRET_OPTION.search(k))
    if named:
        where = settings.origins.get("store.storage_options", "")
        raise ConfigError(f"store.storage_options holds a credential ({', '.join(named)}; {where}): remove it and "
                          "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment "
                          "instead")


def _check_db(settings: Settings) -> None:
    """A player database that is a FIFO or a device is refused before anything opens it: reading one blocks forever
    (a missing one, or a folder, is reported where the database is read)."""
    db = settings.library.db
    try:
        mode = os.stat(Path(db).expanduser()).st_mode if db else stat.S_IFREG
    except (OSError, ValueError):
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        where = settings.origins.get("library.db", "")
        fix = "; `recsys config --forget` forgets it" if where.startswith("remembered in ") else ""
        raise ConfigError(f"library.db = {shown(db)} is not a regular file but a pipe, socket or device "
                          f"({where}): give the player's database file{fix}")


def _check_home(settings: Settings, where: str) -> None:
    """A home that exists must be a folder: a file there would otherwise read as 'nothing is embedded'."""
    home = settings.home_path
    if home.exists() and not home.is_dir():
        raise ConfigError(f"home {home} is a file, not a folder ({where}): give a folder with --home or RECSYS_HOME")


def _flag(name: str) -> str:
    """The command-line flag that sets a dotted setting (flags are named after the setting's key)."""
    key = name.rsplit(".", 1)[-1]
    return {"folders": "--library", "user": "--" + name.replace(".", "-").replace("_", "-")}.get(
        key, "--" + key.replace("_", "-"))


_ENV_PREFIX = "RECSYS_"
_NOT_SETTINGS = {"RECSYS_HOME", "RECSYS_DEBUG", "RECSYS_SUBSONIC_PASSWORD"}  # the password: never a setting


def env_name(name: str) -> str:
    """The environment variable that sets a dotted setting: ``embed.workers`` -> ``RECSYS_EMBED__WORKERS``."""
    return _ENV_PREFIX + name.upper().replace(".", "__")


def _env_values(environ: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings given in the environment, and for each dotted name the variable that gave it."""
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    sections = {f.name for f in dataclasses.fields(Settings) if f.name not in ("home", "origins")}
    for var, raw in sorted(environ.items()):
        if not var.startswith(_ENV_PREFIX):
            continue
        parts = var[len(_ENV_PREFIX):].lower().split("__")
        if var == "RECSYS_HOME":
            values["home"], names["home"] = raw, var
        elif var in _NOT_SETTINGS:
            continue
        elif len(parts) == 2 and all(parts):
            values.setdefault(parts[0], {})[parts[1]] = raw
            names[".".join(parts)] = var
        elif len(parts) == 1 and parts[0].split("_")[0] in sections:
            section = parts[0].split("_")[0]
            raise ConfigError(f"environment variable {var} names no setting: a setting is "
                              f"RECSYS_<SECTION>__<KEY> with two underscores, e.g. "
                              f"{env_name(section + '.' + parts[0][len(section) + 1:])}")
        else:  # a typo would otherwise silently do nothing
            raise ConfigError(f"environment variable {shown(var)} names no setting: recsys reads RECSYS_HOME, "
                              "RECSYS_DEBUG and RECSYS_<SECTION>__<KEY> (e.g. RECSYS_EMBED__WORKERS; `recsys config "
                              "--defaults` lists them): unset it or correct its name")
    return values, names


def _yaml_lines(text: str) -> dict[str, int]:
    """The line of every setting in a YAML text, by dotted name (sections and their keys), for messages."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if isinstance(root, yaml.MappingNode):
        for key, node in root.value:
            lines[str(key.value)] = key.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                for sub, _ in node.value:
                    lines[f"{key.value}.{sub.value}"] = sub.start_mark.line + 1
    return lines


CONFIG_MAX_BYTES = 1 << 20  # a settings file is a few hundred bytes; more is a mistake or an attack
CONFIG_MAX_DEPTH = 8  # sections hold keys, a key a list: 3 levels are used
_NUMBER_MAX_CHARS = 40  # no setting needs a longer number; Python refuses ints of over 4,300 digits


class _SettingsLoader(yaml.SafeLoader):
    """YAML's safe loader without what a settings file never needs and a hostile one abuses: no aliases (a 339-byte
    "billion laughs" file expands to a value of millions of items), no nesting deeper than
    :data:`CONFIG_MAX_DEPTH` (the composer recurses), no number longer than :data:`_NUMBER_MAX_CHARS` characters."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor[:40]} is not allowed in a "
                                              "settings file: write the value out", event.start_mark)
        nests = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        if nests:
            self._depth += 1
            if self._depth > CONFIG_MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"values nested more than {CONFIG_MAX_DEPTH} deep",
                                                  self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= nests

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > _NUMBER_MAX_CHARS:
            raise yaml.constructor.ConstructorError(None, None, f"the number {shown(node.value, 40)} is longer than "
                                                    f"{_NUMBER_MAX_CHARS} characters", node.start_mark)
        return super().construct_yaml_int(node)


_SettingsLoader.add_constructor("tag:yaml.org,2002:int", _SettingsLoader.construct_yaml_int)


def _read_config_file(path: Path) -> tuple[dict[str, Any], Origin]:
    fix = "give an existing YAML file to --config"
    try:  # never a FIFO or device (reading one blocks forever), never more than CONFIG_MAX_BYTES
        raw = read_regular(path, CONFIG_MAX_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: {fix}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder: {fix}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}: {fix}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_SettingsLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}: {str(problem)[:200]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    lines = _yaml_lines(text)

    def origin(name: str) -> str:
        line = lines.get(name) or lines.get(name.split(".")[0])
        return f"from config file {path}" + (f", line {line}" if line else "")

    return data, origin


def user_config_file(environ: dict[str, str]) -> Path | None:
    """``$XDG_CONFIG_HOME/recsys/config.yaml`` (default ``~/.config/recsys/config.yaml``) when it exists; it is read,
    never written."""
    base = environ.get("XDG_CONFIG_HOME") or (str(Path(environ["HOME"]) / ".config") if environ.get("HOME") else "")
    path = Path(base) / "recsys" / "config.yaml" if base else None
    return path if path is not None and path.is_file() else None


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    remembered: bool = True,
) -> Settings:
    """Build the settings from every layer; ``overrides`` is ``{"section": {"key": value}}`` from CLI flags.

    The layers, lowest first: the defaults, the user's YAML (``config_file``, else the one found at
    :func:`user_config_file`), the library remembered in the home (unless ``remembered`` is False), the environment,
    the flags. Override values of None are ignored, so a CLI flag that was not given leaves the layers below in
    force. Every value is checked against its setting's range as it is applied, so a bad one is reported at load,
    naming the setting, the value, what is allowed and the layer it came from.
    """
    from recsys.home.remembered import read_remembered, read_remembered_user, remembered_file

    environ = dict(os.environ if environ is None else environ)
    layers: list[tuple[dict[str, Any], Origin]] = []
    home_from = "the default home, $XDG_DATA_HOME/recsys"
    user_file = Path(config_file).expanduser() if config_file is not None else user_config_file(environ)
    if user_file is not None:
        data, origin = _read_config_file(user_file)
        layers.append((data, origin))
        home_from = origin("home") if "home" in data else home_from
    env, names = _env_values(environ)
    env_layer = (env, lambda name: f"from environment variable {names.get(name, env_name(name))}")
    home_from = "from environment variable RECSYS_HOME" if "home" in env else home_from
    cleaned: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            kept = {k: v for k, v in value.items() if v is not None and v != () and v != []}
            if kept:
                cleaned[key] = kept
        elif value is not None:
            cleaned[key] = value
    flag_layer = (cleaned, lambda name: "from --home or RECSYS_HOME" if name == "home" else
                  f"from the command line, {_flag(name)}")
    home_from = "from --home or RECSYS_HOME" if "home" in cleaned else home_from
    settings = Settings()
    for values, origin in (*layers, env_layer, flag_layer):
        _apply(settings, values, origin)
    if remembered:
        library = read_remembered(settings.home_path)
        if library:  # between the user's file and the environment: built again with it in its place
            where = f"remembered in {remembered_file(settings.home_path)}"
            user = read_remembered_user(settings.home_path) if library.get("subsonic") else None
            settings = Settings()
            kept = {"library": library, **({"subsonic": {"user": user}} if user else {})}
            try:
                for values, origin in (*layers, (kept, lambda name: where), env_layer, flag_layer):
                    _apply(settings, values, origin)
            except ConfigError as exc:  # the layers without it were fine: say how to be rid of it
                if where not in str(exc):
                    raise
                raise ConfigError(f"{exc}; `recsys config --forget` forgets it") from None
    _check_together(settings)
    _check_store(settings)
    _check_db(settings)
    _check_home(settings, home_from)
    return settings


def remembered_origins(settings: Settings) -> dict[str, str]:
    """The settings in force that come from the remembered library, with where (for the line the CLI prints)."""
    return {k: v for k, v in settings.origins.items() if v.startswith("remembered in ")}


def default_yaml() -> str:
    """The packaged defaults with a comment per setting (``recsys config --defaults``; a test keeps it equal to the
    code's defaults)."""
    return (Path(__file__).with_name("default.yaml")).read_text(encoding="utf-8")


def as_dict(settings: Settings) -> dict[str, Any]:
    data = dataclasses.asdict(settings)
    data.pop("origins")
    return data


def as_yaml(settings: Settings) -> str:
    """The settings as a YAML --config file would hold them (the home resolved), each value followed by a comment
    saying where it came from (default, config file and line, environment variable, flag, remembered)."""
    data = as_dict(settings)
    data["home"] = str(settings.home_path)
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(_yaml_line(f"  {sub}", item, settings.origins.get(f"{key}.{sub}")) for sub, item in
                         value.items())
        else:
            lines.append(_yaml_line(key, value, settings.origins.get(key)))
    return "\n".join(lines) + "\n"


def _yaml_line(key: str, value: Any, origin: str | None) -> str:
    shown = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6).strip()
    shown = shown.removesuffix("\n...").removesuffix("...").strip()
    return f"{key}: {shown}  # {origin.removeprefix('from ') if origin else 'default'}"
