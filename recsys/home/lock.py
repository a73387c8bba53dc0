"""One writer per home folder: an advisory ``flock`` on ``<home>/recsys.lock``.

The kernel drops a flock when its holder dies, however it dies, so a lock left by a killed run is simply taken over:
no pid-file guessing. The holder writes who it is into the file so a second run can name it in its error.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from types import TracebackType

from recsys.errors import RecsysError
from recsys.guard import Inputs
from recsys.home.claim import claim_home

LOCK_FILE = "recsys.lock"


class LockError(RecsysError):
    """The home folder's lock cannot be taken."""


class LockHeld(LockError):
    """Another process holds the home folder's lock."""


class HomeLock:
    """Context manager holding ``<home>/recsys.lock``; never blocks: a second acquirer gets :class:`LockHeld`.

    Taking it first claims the home (:func:`recsys.home.claim.claim_home`): a folder that is not recsys's own, or
    lies in or around ``inputs`` (the library's folders and database), is refused before anything is written."""

    def __init__(self, home: Path, command: str, inputs: Inputs | None = None) -> None:
        self.home = Path(home)
        self.command = command
        self.inputs = inputs
        self.path = self.home / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        claim_home(self.home, self.inputs)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockError(f"cannot create the lock {self.path} ({exc.strerror or exc}): "
                           "choose a writable home with --home") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeld(f"{describe_holder(holder)} is using {self.home}: wait for it to finish or stop "
                           "it") from None
        info = holder_record(self.command)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # the file stays (removing it would race a new acquirer); only its content goes
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> HomeLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def current_holder(home: Path) -> str | None:
    """Who writes ``home`` now ('another `recsys embed` (pid 123 on host, since 02:31)'), or None; read without
    taking the lock, so that `recsys status` (which only reads) can say that its counts are moving. The record of
    a holder that died without releasing (kill -9) stays in the file: its pid is checked, on this host."""
    try:
        with open(Path(home) / LOCK_FILE, "rb") as f:
            data = json.loads(f.read(65536).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or holder_gone(data):
        return None
    return describe_holder(data)


def _read_holder(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 65536, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def machine_identity() -> str:
    """What makes a process id mean one process: this boot of this machine and this process-id namespace
    (containers on one host share the boot, not the namespace); '' where either cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}/{namespace}" if boot else ""


def holder_record(command: str) -> dict:
    """Who holds a lock or lease: the record written into the home's lock file and the bucket's lease, read back
    by :func:`describe_holder` and :func:`holder_gone`."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "machine": machine_identity(), "command": command,
            "started": datetime.now().astimezone().isoformat(timespec="seconds")}


def holder_gone(holder: dict) -> bool:
    """Whether a holder's process has ended (killed without releasing), judged only where its pid means something:
    the same :func:`machine_identity` (a record without one, from an older recsys: the same host name)."""
    pid = holder.get("pid")
    if "machine" in holder:
        here = machine_identity()
        same = bool(here) and holder["machine"] == here
    else:
        same = holder.get("host") == socket.gethostname()
    if not same or not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # alive, another user's
        return False
    return False


def describe_holder(holder: dict) -> str:
    """'another `recsys embed` (pid 123 on host, since 02:31)'; whatever is missing (a holder mid-write) is left out."""
    command = holder.get("command") or "recsys run"
    details = []
    if holder.get("pid"):
        details.append(f"pid {holder['pid']}" + (f" on {holder['host']}" if holder.get("host") else ""))
    started = holder.get("started")
    if started:
        try:
            details.append(f"since {datetime.fromisoformat(started).strftime('%H:%M')}")
        except ValueError:
            pass
    return f"another `{command}`" + (f" ({', '.join(details)})" if details else "")
