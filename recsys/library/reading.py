"""Reading a user's file without letting it hang the run (the folder scan's sniff and tags, the plan's content ids).

Two rules. A file is opened only when ``stat`` (which never blocks on the file's content) says it is a regular file
with bytes in it: a FIFO or a device blocks an ``open`` or a ``read`` for good, and pseudo-files such as
``/proc/kmsg`` are regular files of size 0 whose read blocks too; none of them is audio. And a read that blocks on a
real file (a hung SSHFS or soft-mounted NFS share) is cut by a deadline (SIGALRM interrupts the blocked system call),
so it is that file's failure, not the run's. The decoder has its own deadline and worker processes
(``recsys.embedder.decoding``). Not covered: a read stuck in the kernel's uninterruptible sleep (a hard NFS mount that
lost its server), which no signal reaches.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import threading
from collections.abc import Callable
from typing import TypeVar

# A sniff reads 64 bytes, a content id 192 KiB: milliseconds on any disk that answers. Longer is a share that hangs.
READ_TIMEOUT_S = 30.0

T = TypeVar("T")


class ReadTimeout(OSError):
    """A read of a user's file did not finish within its deadline."""


def may_open(st: os.stat_result) -> bool:
    """Whether a file with this ``stat`` may be opened and read: a regular file that holds bytes."""
    return stat.S_ISREG(st.st_mode) and st.st_size > 0


class ReadDeadline:
    """``with ReadDeadline(s) as d: d.read(path, fn, ...)`` runs each ``fn`` under a deadline of ``s`` seconds.

    A no-op outside the main thread (signals reach only it) and inside an outer deadline (a running interval timer:
    the decoder's own, in-process), which it leaves alone."""

    def __init__(self, seconds: float = READ_TIMEOUT_S) -> None:
        self.seconds = seconds
        self._armed = False
        self._previous: object = None
        self._path = ""

    def __enter__(self) -> ReadDeadline:
        if (self.seconds > 0 and threading.current_thread() is threading.main_thread()
                and signal.getitimer(signal.ITIMER_REAL)[0] == 0):
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            self._armed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)  # type: ignore[arg-type]
            self._armed = False

    def _on_alarm(self, signum: int, frame: object) -> None:  # noqa: ARG002 - signal handler signature
        raise ReadTimeout(errno.ETIMEDOUT, f"reading the file took longer than {self.seconds:g} s (a hung network "
                          "share?)", self._path)

    def read(self, path: str | os.PathLike, action: Callable[..., T], *args: object) -> T:
        """``action(*args)``, cut with :class:`ReadTimeout` after the deadline."""
        if not self._armed:
            return action(*args)
        self._path = os.fspath(path)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            return action(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
