"""recsys with the real beets (PyPI, the version in constraints.txt): a `beet import`ed library with ratings set by
`beet modify` is embedded through --db library.db, its ratings drive `recsys playlist`, and the plugin's `beet
similar` and `beet recplay` run as real `beet` commands. beets' library and the music are never written by recsys.

beets runs in a temporary BEETSDIR and HOME (its config there names the music directory, so library.db holds relative
paths, as it does for most users). One library is set up for the module (about 10 s, the embedding mostly)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xspf_lib
import yaml
from click.testing import CliRunner
from conftest import _audio_set

from recsys.cli import main

pytest.importorskip("beets", reason="beets is not installed: pip install -c constraints.txt -e '.[beets]'")

ROOT = Path(__file__).resolve().parents[1]
LIKED = "ambient_pad"  # files 00, 05 rated 1.0 (5 stars); 10 left unrated
DISLIKED = "noise_texture"  # files 04, 09 rated 0.2 (1 star)


def _fingerprint(*folders: Path) -> dict[str, tuple[str, int]]:
    """Every file under the folders: its bytes' hash and mtime (a file written, added or removed shows)."""
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                found[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return found


class Beets:
    """A beets installation in a temporary folder: ``run`` is the real `beet` command there."""

    def __init__(self, root: Path) -> None:
        self.root, self.music, self.beetsdir = root, root / "music", root / "beetsdir"
        self.db, self.recsys_home = self.beetsdir / "library.db", root / "recsys-home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "BEETSDIR", "XDG_CONFIG"))}
        python_path = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.env = {**env, "BEETSDIR": str(self.beetsdir), "HOME": str(root / "home"), "PYTHONPATH": python_path}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "beets", *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)

    def recsys(self, *args: str):
        return CliRunner().invoke(main, ["--home", str(self.recsys_home), *args], catch_exceptions=False)

    def file(self, prefix: str) -> str:
        return str(next(p for p in self.music.iterdir() if p.name.startswith(prefix)))


@pytest.fixture(scope="module")
def beets(tmp_path_factory) -> Beets:
    b = Beets(tmp_path_factory.mktemp("beets"))
    shutil.copytree(_audio_set(tmp_path_factory, 12, 8.0), b.music)
    b.beetsdir.mkdir()
    (b.root / "home").mkdir()
    (b.beetsdir / "config.yaml").write_text(yaml.safe_dump({
        "directory": str(b.music), "library": str(b.db),
        "import": {"copy": False, "write": False, "autotag": False, "resume": False},
        "plugins": ["recsys"], "recsys": {"home": str(b.recsys_home), "count": 4},
    }))
    for command in (["import", "-A", "-q", str(b.music)],  # the user's own steps, in beets
                    ["modify", "-y", "-W", "rating=1.0", f"path::(^|/)0[05] {LIKED}"],
                    ["modify", "-y", "-W", "rating=0.2", f"path::{DISLIKED}"],
                    ["modify", "-y", "-W", "play_count=3", "path::(^|/)01 "]):
        done = b.run(*command)
        assert done.returncode == 0, done.stderr
    b.before = _fingerprint(b.music, b.beetsdir)
    r = b.recsys("embed", "--db", str(b.db), "--workers", "1", "-q", "--encoder", "dsp")  # fast; any encoder will do
    assert r.exit_code == 0, r.output
    return b


def test_beets_library_read_with_its_relative_paths_and_ratings(beets):
    from recsys.library.sources import load_library

    stored = beets.run("ls", "-f", "$path")
    assert stored.returncode == 0 and len(stored.stdout.split("\n")) == 13  # 12 items and the last newline
    lib = load_library(beets.db, [])
    assert lib.db_kind == "beets" and sorted(t.path for t in lib.tracks) == sorted(map(str, beets.music.iterdir()))
    ratings = {Path(t.path).name[:2]: t.rating for t in lib.tracks if t.rating is not None}
    assert ratings == {"00": 1.0, "05": 1.0, "04": 0.2, "09": 0.2}
    assert [t.playcount for t in lib.tracks if Path(t.path).name.startswith("01 ")] == [3]
    status = beets.recsys("status", "--db", str(beets.db))
    assert status.exit_code == 0 and "library: 12 tracks" in status.output, status.output


def test_ratings_in_beets_drive_the_playlist(beets):
    out = beets.root / "taste.xspf"
    r = beets.recsys("playlist", "--db", str(beets.db), "--top-n", "5", "--out", str(out))
    assert r.exit_code == 0, r.output
    files = [t.location[0][len("file://"):] for t in xspf_lib.Playlist.parse(str(out)).trackList]
    assert files and files[0] == beets.file(f"10 {LIKED}")  # the unrated track of the liked style comes first
    rated = {beets.file(p) for p in ("00 ", "05 ", "04 ", "09 ")}
    assert not rated & set(files) and DISLIKED not in " ".join(files)


def test_beet_similar_prints_the_neighbours_recsys_finds(beets):
    query = beets.file(f"00 {LIKED}")
    expected = beets.recsys("similar", query, "-k", "4", "--json")
    assert expected.exit_code == 0, expected.output
    neighbours = [n["path"] for n in json.loads(expected.output)]
    done = beets.run("similar", "-p", f"path::(^|/)00 {LIKED}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == neighbours and len(neighbours) == 4
    # printed as beets prints items: its format, its flexible fields
    formatted = beets.run("similar", "-n", "2", "-f", "$path|$rating", f"path::(^|/)00 {LIKED}")
    rating = {beets.file(f"0{i} "): r for i, r in ((0, "1.0"), (5, "1.0"), (4, "0.2"), (9, "0.2"))}
    assert formatted.stdout.splitlines() == [f"{p}|{rating.get(p, '$rating')}" for p in neighbours[:2]]
    # several tracks: the neighbours of all of them, none of them among them
    several = beets.run("similar", "-p", f"path::{LIKED}")
    assert several.returncode == 0, several.stderr
    assert len(several.stdout.splitlines()) == 4 and LIKED not in several.stdout


def test_beet_similar_and_recplay_fail_in_one_line(beets):
    none = beets.run("similar", "title:no-such-title")
    assert none.returncode != 0 and "no track matches the query" in none.stderr and "Traceback" not in none.stderr
    empty = beets.root / "empty-home.yaml"  # the same beets, a recsys home where nothing is embedded
    empty.write_text(yaml.safe_dump({"recsys": {"home": str(beets.root / "empty-home")}}))
    for command in ("similar", "recplay"):
        done = beets.run("-c", str(empty), command, f"path::{LIKED}")
        assert done.returncode != 0 and "recsys embed" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_beet_recplay_writes_a_playlist_around_the_matched_tracks(beets):
    out = beets.root / "recplay.xspf"
    done = beets.run("recplay", "-p", "-o", str(out), f"path::{LIKED}")
    assert done.returncode == 0, done.stderr
    assert f"wrote {len(done.stdout.splitlines())} tracks to {out}" in done.stderr
    files = [t.location[0][len("file://"):] for t in xspf_lib.Playlist.parse(str(out)).trackList]
    assert files == done.stdout.splitlines() and 0 < len(files) <= 4
    assert all(Path(f).parent == beets.music for f in files) and LIKED not in " ".join(files)


def test_nothing_of_the_users_is_written(beets):
    """Last in this module: after every recsys command above, beets' folder and the music are as beets left them."""
    assert _fingerprint(beets.music, beets.beetsdir) == beets.before
