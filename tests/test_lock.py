"""The home lock: one writer, the holder named in the error, a killed holder's lock taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from recsys.errors import RecsysError
from recsys.home.claim import HomeRefused
from recsys.home.lock import HomeLock, LockHeld, current_holder

HOLDER = """
import sys, time
from pathlib import Path
from recsys.home.lock import HomeLock
with HomeLock(Path(sys.argv[1]), "recsys embed"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_holder_info_written_and_cleared(tmp_path):
    with HomeLock(tmp_path / "home", "recsys embed") as lock:
        info = json.loads(lock.path.read_text())
        assert (info["pid"], info["host"], info["command"]) == (os.getpid(), socket.gethostname(), "recsys embed")
        assert "T" in info["started"]
        with pytest.raises(LockHeld, match=rf"another `recsys embed` \(pid {os.getpid()} on .*, since \d\d:\d\d\) is"
                                           rf" using {tmp_path / 'home'}: wait for it to finish or stop it"):
            HomeLock(tmp_path / "home", "recsys train-encoder").acquire()
    assert lock.path.read_text() == ""
    with HomeLock(tmp_path / "home", "recsys train-encoder"):  # released: free again
        pass


def test_other_process_holds_then_dies(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld) as err:
            with HomeLock(tmp_path, "recsys embed"):
                pass
        assert f"pid {proc.pid}" in str(err.value) and "\n" not in str(err.value)
        assert isinstance(err.value, RecsysError)
        # `recsys status` names the writer without taking the lock (by hand it said "index: not built: run
        # `recsys embed`" while that embed was running)
        assert current_holder(tmp_path).startswith(f"another `recsys embed` (pid {proc.pid} on ")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert json.loads((tmp_path / "recsys.lock").read_text())["pid"] == proc.pid  # kill -9 left its record
    assert current_holder(tmp_path) is None  # ... of a process that is gone
    with HomeLock(tmp_path, "recsys embed") as lock:  # the kernel released the dead holder's lock
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_unusable_home(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(HomeRefused, match="choose a writable folder with --home"):  # claimed before it is locked
        HomeLock(tmp_path / "file" / "home", "recsys embed").acquire()
