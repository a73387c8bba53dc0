"""A real Subsonic server for the tests and the benchmark: Supysonic 0.7.9 (PyPI) under waitress, started on
127.0.0.1 inside a temporary folder, its music folder scanned. The recipe is /work/shared/notes/servers.md's.

Supysonic has no environment variable for its config: it reads ``./supysonic.conf``, so it runs with that folder
as its working directory and a HOME inside it. ``.ci/run`` installs it (``pip install -c constraints.txt
supysonic waitress``); the tests skip, saying so, only when it is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

USER, PASSWORD = "admin", "s3cret-Pw!"  # the password the tests look for everywhere afterwards


def _bin(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)  # the venv's scripts, whether or not PATH has them
    return str(beside) if beside.exists() else shutil.which(name)


def unavailable() -> str | None:
    """Why the server cannot run here (None when it can)."""
    missing = [n for n in ("supysonic-cli", "supysonic-server") if _bin(n) is None]
    if missing:
        return f"supysonic is not installed ({', '.join(missing)} not found): pip install -c constraints.txt " \
               "supysonic waitress (.ci/run does)"
    try:
        import waitress  # noqa: F401
    except ImportError:
        return "waitress is not installed: pip install -c constraints.txt waitress (.ci/run does)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Supysonic:
    """One running server: ``url``, its ``folder`` (database, config, logs) and ``music``."""

    def __init__(self, folder: Path, music: Path) -> None:
        self.folder, self.music = folder, music
        self.db = folder / "supysonic.db"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "home").mkdir(exist_ok=True)
        (folder / "supysonic.conf").write_text(
            f"[base]\ndatabase_uri = sqlite:///{self.db}\n[webapp]\ncache_dir = {folder / 'cache'}\n"
            f"log_file = {folder / 'supysonic.log'}\nmount_webui = no\n[daemon]\nsocket = {folder / 'supysonic.sock'}\n"
            "run_watcher = no\n", encoding="utf-8")
        self.env = {**os.environ, "HOME": str(folder / "home")}
        self.env = {k: v for k, v in self.env.items() if not k.startswith("RECSYS_")}
        self.proc: subprocess.Popen | None = None

    def _cli(self, *args: str) -> None:
        subprocess.run([_bin("supysonic-cli"), *args], cwd=self.folder, env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> Supysonic:
        self._cli("user", "add", USER, "-p", PASSWORD)
        self._cli("user", "setroles", "-A", USER)
        self._cli("folder", "add", "music", str(self.music))
        self._cli("folder", "scan", "--foreground", "music")
        self.proc = subprocess.Popen([_bin("supysonic-server"), "-S", "waitress", "-h", "127.0.0.1", "-p",
                                      str(self.port)], cwd=self.folder, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.call("ping")
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"supysonic-server exited ({self.proc.returncode}); see {self.folder}") from None
                time.sleep(0.1)
        raise RuntimeError("supysonic-server did not answer within 30 s")

    def call(self, method: str, params: list[tuple[str, str]] | None = None) -> dict:
        """The server's own API, as a user's app calls it (password auth): the test's hands, not recsys."""
        query = urllib.parse.urlencode([("u", USER), ("p", PASSWORD), ("v", "1.12.0"), ("c", "test"), ("f", "json"),
                                        *(params or [])])
        with urllib.request.urlopen(f"{self.url}/rest/{method}.view?{query}", timeout=10) as response:
            answer = json.loads(response.read())["subsonic-response"]
        assert answer["status"] == "ok", answer
        return answer

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
