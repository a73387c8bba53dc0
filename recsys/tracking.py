"""MLflow tracking for both training stages: where runs go, and one run as a context manager.

By default runs go to a SQLite store in the home folder (``sqlite:///<home>/mlflow.db``) with artifacts under
``<home>/mlartifacts``; a configured URI (``tracking.uri``) or ``MLFLOW_TRACKING_URI`` points them elsewhere (a
server, another store). A store named elsewhere passes the one write guard (:mod:`recsys.guard`) before any training:
never the player database, never in a music folder, never an existing file that is not an MLflow store (a tracking URI
naming ``clementine.db`` once made MLflow create ~70 tables in it), never a relative path (it would land in the
current folder). MLflow never writes into the current folder: an experiment recsys creates keeps its artifacts under
``<home>/mlartifacts`` unless the store is a server, which chooses its own; an existing experiment's local artifact
location passes the same guard.
``mlflow`` is imported inside the functions that need it: importing it takes seconds, and the commands that only
recommend never track anything. MLflow's and alembic's INFO chatter (store migrations) is kept off the terminal, and the
run is driven through ``MlflowClient`` rather than the fluent API, which prints a "View run" banner on exit.

MLflow's usage telemetry is turned off before mlflow is imported: it writes an installation id to
``~/.config/mlflow/telemetry.json`` and reports to a server, and recsys writes nothing outside the home and the playlist
folder (``MLFLOW_DISABLE_TELEMETRY=false`` set by the user is left alone).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recsys.errors import RecsysError
from recsys.guard import Inputs, refusal
from recsys.home import MLFLOW_DB
from recsys.library.uri import unquote_path

_NOISY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "urllib3")


class TrackingError(RecsysError):
    """The tracking store cannot be opened or written."""


def tracking_uri(home: Path, configured: str | None = None, inputs: Inputs | None = None) -> str:
    """The tracking URI: the configured one, else ``MLFLOW_TRACKING_URI``, else the SQLite store in the home; one
    that names a place recsys must not write (:func:`check_store`) is refused with :class:`TrackingError`."""
    own = _own_uri(home)
    if configured:
        uri, origin = configured, "tracking.uri (the config file or RECSYS_TRACKING__URI)"
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        uri, origin = os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    else:
        return own
    if uri != own:
        check_store(uri, inputs, origin)
    return uri


_SERVERS = ("http", "https", "databricks", "databricks-uc", "uc")
_MLFLOW_TABLES = {"experiments", "runs", "alembic_version"}


def _local_path(uri: str) -> str | None:
    """The local file or folder a store or artifact URI names (``sqlite:///p``, ``file:///p``, a bare path), or None
    for a server or a database on one."""
    parts = urlsplit(uri)
    if parts.scheme == "sqlite":
        return unquote_path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else ""
    if parts.scheme == "file":
        return unquote_path(parts.path)
    if parts.scheme == "" or (len(parts.scheme) == 1 and uri[1:2] == ":"):
        return uri
    return None


def _is_mlflow_sqlite(path: str) -> bool:
    import sqlite3

    try:
        conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True)
        try:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return _MLFLOW_TABLES <= names


def check_store(uri: str, inputs: Inputs | None, origin: str = "the tracking URI") -> None:
    """Refuse a tracking store recsys must not write: a local one that is the player database, lies in a music
    folder, is relative (the current folder), or exists and is not an MLflow store. A server is the user's choice."""
    path = _local_path(uri)
    if path is None:
        return
    hint = "fix it, or unset it to track in the home's own store"
    if not path or not os.path.isabs(os.path.expanduser(path)):
        raise TrackingError(f"{origin} {uri} names no absolute path (MLflow would write into the current folder): "
                            f"{hint}")
    path = os.path.expanduser(path)
    why = refusal(path, inputs)
    if why is not None:
        raise TrackingError(f"{origin} {uri} is {why}: recsys never writes there; {hint}")
    if uri.startswith("sqlite:"):
        if os.path.lexists(path) and not (os.path.isfile(path) and _is_mlflow_sqlite(path)):
            raise TrackingError(f"{origin} {uri} names an existing file that is not an MLflow store: recsys never "
                                f"writes into it; {hint}")
    elif os.path.lexists(path) and not (os.path.isdir(path) and (not os.listdir(path) or any(
            (Path(path) / name / "meta.yaml").is_file() for name in os.listdir(path)))):
        raise TrackingError(f"{origin} {uri} names an existing folder that is not an MLflow store: recsys never "
                            f"writes into it; {hint}")


class TrackedRun:
    """One open MLflow run; every call logs straight to the store (no global 'active run' state)."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for name, value in metrics.items():
            self._client.log_metric(self.run_id, name, float(value), step=step or 0)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._client.log_text(self.run_id, text, name)


def _no_telemetry() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def _quiet() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Keeps mlflow from printing its git-not-found warning and progress bars when it logs artifacts.
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _home_artifacts(home: Path) -> Path:
    return Path(home).expanduser().resolve() / "mlartifacts"


def _rehome_artifacts(db: Path, experiment_id: str, old: str, new: str) -> None:
    """Point an experiment (and its runs) of the home's own store at this home's ``mlartifacts``.

    MLflow stores artifact locations as absolute URIs: a home copied or moved elsewhere kept writing its artifacts
    into the old home. The store is the home's own SQLite file, so its rows are rewritten in place (MLflow has no API
    to move an experiment); runs' URIs keep their tail (``<run id>/artifacts``), which the copied home also holds.
    """
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, experiment_id))
            conn.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                         "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                         (new, len(old) + 1, experiment_id, len(old), old))
    finally:
        conn.close()


def _own_uri(home: Path) -> str:
    return f"sqlite:///{Path(home).expanduser().resolve() / MLFLOW_DB}"


def _check_artifacts(location: str, inputs: Inputs | None) -> None:
    """An existing experiment's artifact location, when local, passes the write guard like the store."""
    path = _local_path(location)
    if path is None:
        return
    if not os.path.isabs(path):
        raise TrackingError(f"the MLflow experiment's artifact location {location} is relative (the current folder): "
                            "recsys never writes there; track in the home's own store or set an absolute location")
    why = refusal(path, inputs)
    if why is not None:
        raise TrackingError(f"the MLflow experiment's artifact location {location} is {why}: recsys never writes "
                            "there; track in the home's own store or move the experiment's artifacts")


def _experiment_id(client: Any, home: Path, uri: str, experiment: str, inputs: Inputs | None = None) -> str:
    own_store = uri == _own_uri(home)
    location = None
    if urlsplit(uri).scheme not in _SERVERS:
        # any store but a server: MLflow's default artifact root is ./mlruns, the current folder; recsys's is the home
        artifacts = _home_artifacts(home)
        artifacts.mkdir(parents=True, exist_ok=True)
        location = artifacts.as_uri()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return client.create_experiment(experiment, artifact_location=location)
    if own_store and found.artifact_location != location:
        _rehome_artifacts(Path(home).expanduser().resolve() / MLFLOW_DB, found.experiment_id,
                          found.artifact_location, location)
    elif not own_store:
        _check_artifacts(found.artifact_location, inputs)
    return found.experiment_id


@contextmanager
def mlflow_run(home: Path, experiment: str, run_name: str, params: dict[str, Any], configured_uri: str | None = None,
               tags: dict[str, str] | None = None, inputs: Inputs | None = None) -> Iterator[TrackedRun]:
    """Open a run in ``experiment`` (created when missing), log ``params``, yield it, and close it. ``inputs``: the
    library, which neither the store nor the artifacts may touch (:func:`check_store`).

    The run ends FINISHED, KILLED when the body was interrupted (Ctrl-C: a KeyboardInterrupt, or an error that exits
    with code 130 as an interrupted command does), or FAILED when it raises anything else (the exception goes on).
    """
    uri = tracking_uri(home, configured_uri, inputs)  # refused before mlflow is imported or anything is written
    _no_telemetry()
    import mlflow  # noqa: F401  (slow import: only training tracks runs)

    _quiet()  # after the import: importing mlflow sets its loggers to INFO
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:"):
        Path(home).expanduser().mkdir(parents=True, exist_ok=True)
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, home, uri, experiment, inputs)
        run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        for name, value in params.items():
            client.log_param(run.info.run_id, name, value)
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrackingError(f"MLflow tracking store {uri} cannot be used ({first}): fix the tracking URI "
                            "(MLFLOW_TRACKING_URI or the config) or pass none to use the home's SQLite store") from None
    tracked = TrackedRun(client, run.info.run_id)
    status = "FAILED"
    try:
        yield tracked
        status = "FINISHED"
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or getattr(exc, "exit_code", None) == 130:
            status = "KILLED"
        raise
    finally:
        client.set_terminated(tracked.run_id, status)
