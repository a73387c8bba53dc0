"""Integrity round 3 (issue 21): what recsys may write or delete. A home is recsys's own; every write destination
passes one guard; a tracking URI never writes into the user's files; a read-only home and odd output names are one
line up front.

Every test fingerprints the user's things (the music folder, the player database, folders of the user's named
``ann/`` and ``ann-peebles/`` with a file inside) before and after, and asserts not one byte, mode, mtime or name
changed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synth_home import make_home
from test_faults import _unprivileged  # file modes that bind root too (setpriv)

from recsys.cli import main

Fingerprint = dict[str, tuple]


def _fingerprint(*roots: Path) -> Fingerprint:
    """Bytes, mode and mtime of every file and folder under ``roots`` (folders: their listing); a root that does not
    exist is recorded as such."""
    seen: Fingerprint = {}
    for root in roots:
        if not root.exists():
            seen[str(root)] = ("absent",)
            continue
        for path in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            st = path.lstat()
            content = sorted(os.listdir(path)) if path.is_dir() else path.read_bytes()
            seen[str(path)] = (content, st.st_mode, st.st_mtime_ns)
    return seen


def _user_folders(where: Path) -> list[Path]:
    """The user's own ``ann/`` and ``ann-peebles/`` (a manifest.json and a song in each: what the old swap took for
    its snapshots), made in ``where``."""
    made_here = []
    for name in ("ann", "ann-peebles"):
        folder = where / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text('{"mine": true}')
        (folder / "peebles - keep me.flac").write_bytes(b"fLaC" + b"\0" * 64)
        made_here.append(folder)
    return made_here


def _cli(home: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner(env=env).invoke(main, ["--home", str(home), *args], catch_exceptions=False)


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recsys: error: "), result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    return lines[0]


# ---- a home is recsys's own -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("place", ["music folder", "$HOME", "player database folder", "a user folder"])
def test_a_home_on_the_users_things_is_refused_and_nothing_is_touched(small_library, place):
    """`--home ~/Music embed --library ~/Music` (or RECSYS_HOME=$HOME, or Clementine's folder) deleted the user's
    `ann/` and `ann-peebles/` with the music inside: the snapshot swap removed every `<home>/ann` and `ann-*` with a
    manifest. Such a home is now refused with one line before anything is written."""
    lib = small_library
    home = {"music folder": lib.music, "$HOME": Path(os.environ["HOME"]), "player database folder": lib.root,
            "a user folder": lib.root / "stuff"}[place]
    _user_folders(home)
    if place == "a user folder":
        (home / "notes.txt").write_text("mine")
    library = ["--library", str(lib.music)] if place == "music folder" else ["--db", str(lib.db)]
    before = _fingerprint(lib.music, lib.db, home)
    line = _one_line_error(_cli(home, "embed", *library, "--workers", "1", "-q"))
    why = {"music folder": "is the music folder", "$HOME": "is your home folder ($HOME)",
           "player database folder": "is the folder of the player database",
           "a user folder": "is a folder recsys did not make"}[place]
    assert why in line and "--home" in line, line
    assert _fingerprint(lib.music, lib.db, home) == before


def _store_with_rows(home: Path, n: int = 30):
    from recsys.index.store import TrackRow, TrackStore

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = TrackStore.open(home)
    store.upsert([TrackRow(key=f"/m/{i}.flac", path=f"/m/{i}.flac", start_s=0.0, content_id=f"c{i}", size=1,
                           mtime_ns=i, duration_s=1.0, artist="a", album="b", title=f"t{i}", genre="", year=2000,
                           track_number=1, encoder_id="enc", vector=vectors[i]) for i in range(n)])
    return store


def test_the_snapshot_swap_removes_only_folders_it_made(tmp_path):
    """Folders of the user's inside a home recsys owns (named `ann-peebles`, even one named like a snapshot,
    `ann-3-userfold`, each with a manifest.json) survive any number of swaps; a plain `ann/` is refused, not
    removed. recsys removes only the snapshot folders it recorded making."""
    from recsys.home.claim import claim_home, made
    from recsys.index.ann import AnnError, build_snapshot, load_snapshot

    home = claim_home(tmp_path / "home")
    store = _store_with_rows(home)
    build_snapshot(store, home, "enc")
    theirs = _user_folders(home)[1:] + [home / "ann-3-userfold"]
    theirs[-1].mkdir()
    (theirs[-1] / "manifest.json").write_text("{}")
    old = os.path.getmtime(theirs[-1]) - 7200  # "older than an hour" made the old swap delete it too
    for folder in theirs:
        os.utime(folder, (old, old))
    before = _fingerprint(*theirs)
    for _ in range(3):
        store.delete([store.states().popitem()[0]])
        build_snapshot(store, home, "enc")
    assert _fingerprint(*theirs) == before
    ours = sorted(p.name for p in home.glob("ann-*") if p not in theirs)
    assert len(ours) == 2 and sorted(made(home)) == ours  # the current snapshot and the one it replaced
    assert len(load_snapshot(home)) == 27

    plain = tmp_path / "plain"
    claim_home(plain)
    (ann,) = _user_folders(plain)[:1]
    before = _fingerprint(ann)
    with pytest.raises(AnnError, match="is a folder recsys did not make"):
        build_snapshot(_store_with_rows(plain), plain, "enc")
    assert _fingerprint(ann) == before and not [p for p in plain.glob("ann-*") if p.name != "ann-peebles"]


def test_an_older_recsys_home_is_adopted_and_a_stranger_is_not(tmp_path):
    """A home made before the marker existed (a table, its stamp, the lock, a snapshot) keeps working: it is adopted
    and its snapshot folders recorded; the same folder holding one file recsys never writes is refused."""
    from recsys.home.claim import MADE, MARKER, HomeRefused, claim_home, made
    from recsys.index.ann import build_snapshot

    synth = make_home(tmp_path)
    home = synth.home
    (home / "recsys.lock").write_text("")
    for name in (MARKER, MADE):  # as an older recsys left it
        (home / name).unlink(missing_ok=True)
    snapshots = sorted(p.name for p in home.glob("ann-*"))
    stranger = home.parent / "copy"
    shutil.copytree(home, stranger, symlinks=True)
    (stranger / "holiday.jpg").write_bytes(b"\xff\xd8")
    before = _fingerprint(stranger)
    with pytest.raises(HomeRefused, match=r"is a folder recsys did not make \(it holds 'holiday.jpg'"):
        claim_home(stranger)
    assert _fingerprint(stranger) == before

    claim_home(home)
    marker = json.loads((home / MARKER).read_text())
    assert marker["format"] == 1 and marker["adopted"] is True and marker["created_at"]
    assert made(home) == snapshots
    r = _cli(home, "similar", synth.songs[0].path, "-k", "3")
    assert r.exit_code == 0, r.output
    from recsys.index.store import TrackStore

    build_snapshot(TrackStore.open(home), home, "e")
    assert len(made(home)) == 2  # an adopted home's snapshots are recsys's: replaced as any other


# ---- the tracking store ---------------------------------------------------------------------------------------------


@pytest.fixture
def synth(tmp_path):
    return make_home(tmp_path)


def _train(synth, env: dict[str, str]):
    return _cli(synth.home, "train-classifier", "--db", str(synth.db), "--min-ratings", "5", env=env)


@pytest.mark.parametrize("variable", ["RECSYS_TRACKING__URI", "MLFLOW_TRACKING_URI"])
def test_a_tracking_uri_at_the_player_database_writes_nothing_into_it(synth, tmp_path, monkeypatch, variable):
    """`RECSYS_TRACKING__URI=sqlite:///…/clementine.db` (or MLFLOW_TRACKING_URI) made train-classifier create about
    70 MLflow tables in the user's Clementine database. Refused before training, with one line."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    theirs = _user_folders(tmp_path / "mine")
    before = _fingerprint(synth.music, synth.db, *theirs, cwd)
    line = _one_line_error(_train(synth, {variable: f"sqlite:///{synth.db}"}))
    assert "is the player database" in line and variable in line, line
    assert _fingerprint(synth.music, synth.db, *theirs, cwd) == before
    assert not (synth.home / "models" / "classifier.json").exists()  # refused before the work


def test_a_named_store_is_guarded_and_keeps_artifacts_out_of_the_current_folder(synth, tmp_path, monkeypatch):
    """With any store but the home's own, MLflow put the artifacts into ./mlruns of the current folder; an existing
    SQLite file that is not an MLflow store was written into. Now: a user's SQLite file is refused, and a new store
    elsewhere gets its runs while the artifacts stay under the home."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    other = tmp_path / "mine" / "addresses.db"
    other.parent.mkdir()
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.commit()
    conn.close()
    before = _fingerprint(synth.music, synth.db, other.parent, cwd)
    line = _one_line_error(_train(synth, {"RECSYS_TRACKING__URI": f"sqlite:///{other}"}))
    assert "not an MLflow store" in line
    line = _one_line_error(_train(synth, {"RECSYS_TRACKING__URI": "sqlite:///runs.db"}))
    assert "no absolute path" in line
    assert _fingerprint(synth.music, synth.db, other.parent, cwd) == before

    store = tmp_path / "runs" / "mlflow.db"
    store.parent.mkdir()
    r = _train(synth, {"RECSYS_TRACKING__URI": f"sqlite:///{store}"})
    assert r.exit_code == 0, r.output
    assert store.is_file() and any((synth.home / "mlartifacts").rglob("model_card.md"))
    assert _fingerprint(synth.music, synth.db, other.parent, cwd) == before  # no ./mlruns


# ---- every write destination passes one guard -----------------------------------------------------------------------


def test_map_out_inside_the_music_folder_is_refused(synth, tmp_path):
    """`map --out` was allowed inside the music folder (the playlists' guard was not the map's)."""
    theirs = _user_folders(tmp_path / "mine")
    before = _fingerprint(synth.music, synth.db, *theirs)
    for out in (synth.music / "map.html", synth.db, theirs[0] / "peebles - keep me.flac"):
        args = ["--db", str(synth.db), "--library", str(synth.music)] if out.parent == synth.music else \
            ["--db", str(synth.db)]
        r = _cli(synth.home, "map", *args, "--out", str(out), "--force")
        line = _one_line_error(r)
        assert "recsys never writes" in line or "is not a recsys map" in line, line
    assert _fingerprint(synth.music, synth.db, *theirs) == before


# ---- a read-only home -----------------------------------------------------------------------------------------------


def test_a_read_only_home_is_one_line_before_training_and_eval_only_reads(synth):
    """train-classifier trained, then failed writing with an internal error; eval asked for the write lock though it
    only reads. Now train-classifier says the home cannot be written before any work, and eval runs."""
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("root cannot be bound by file modes here (no setpriv)")
    assert _cli(synth.home, "prune").exit_code == 0  # a writing command: the home is claimed (marked) first
    modes = {p: p.stat().st_mode for p in [synth.home, *synth.home.rglob("*")] if p.is_dir() and not p.is_symlink()}
    before = _fingerprint(synth.music, synth.db, synth.home)
    for folder in modes:
        folder.chmod(0o555)
    try:
        def recsys(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*prefix, sys.executable, "-m", "recsys.cli", "--home", str(synth.home), *args],
                                  capture_output=True, text=True, timeout=300)

        r = recsys("train-classifier", "--db", str(synth.db), "--min-ratings", "5")
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot be written" in lines[0] and "nothing was done" in lines[0], r.stderr
        assert "internal error" not in r.stderr and not r.stdout.strip()
        r = recsys("eval", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)[0]["encoder"] == "table"
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)
    assert _fingerprint(synth.music, synth.db, synth.home) == before


# ---- output names ---------------------------------------------------------------------------------------------------


def test_output_names_empty_dash_long_and_too_long(synth, tmp_path, monkeypatch):
    """`--out ""` wrote nothing and exited 0; `--out -` made a file named `-`; a valid 245-character name failed on
    its temporary name; a 300-character `recommend.name` was an internal error (file name too long)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    theirs = _user_folders(tmp_path / "mine")
    before = _fingerprint(synth.music, synth.db, *theirs, cwd)
    query = synth.songs[0].path
    assert "--out is empty" in _one_line_error(_cli(synth.home, "similar", query, "--out", ""))
    assert "standard output" in _one_line_error(_cli(synth.home, "similar", query, "--out", "-"))
    assert "--out is empty" in _one_line_error(_cli(synth.home, "map", "--out", ""))
    assert _fingerprint(synth.music, synth.db, *theirs, cwd) == before

    long = tmp_path / "out" / ("x" * 240 + ".xspf")  # 245 characters: a valid name
    long.parent.mkdir()
    r = _cli(synth.home, "similar", query, "-k", "3", "--out", str(long))
    assert r.exit_code == 0, r.output
    assert long.is_file() and os.listdir(long.parent) == [long.name]

    r = _cli(synth.home, "playlist", "--db", str(synth.db), "--seed", query, "--top-n", "3", "--name", "é" * 300)
    assert r.exit_code == 0, r.output
    (written,) = (Path(os.environ["HOME"]) / "Music" / "recommendations").iterdir()
    assert written.name.startswith("é" * 100) and len(os.fsencode(written.name)) <= 255
    assert _fingerprint(synth.music, synth.db, *theirs, cwd) == before


def test_every_file_recsys_keeps_in_a_home_is_a_name_the_adoption_rule_knows():
    """A home written by this recsys must be adopted by the next one: every file a part keeps directly under the home
    is among claim.NAMES (recent.json, new with resting playlists, once made an older home 'a folder recsys did not
    make')."""
    from recsys.home import MLFLOW_DB, MODELS, STAMP
    from recsys.home.claim import NAMES
    from recsys.home.lock import LOCK_FILE
    from recsys.home.recent import FILE as RECENT
    from recsys.home.remembered import FILE as REMEMBERED
    from recsys.index.store import TAG_NAMES_FILE
    from recsys.pipeline.checked import RECORD as CHECKED
    from recsys.pipeline.noop import RECORD as NOOP
    from recsys.servers.mpd_push import RECORD as MPD_PUSHED
    from recsys.servers.subsonic_push import RECORD as SUBSONIC_PUSHED

    kept = {MLFLOW_DB, MODELS, STAMP, LOCK_FILE, RECENT, REMEMBERED, CHECKED, NOOP, MPD_PUSHED, SUBSONIC_PUSHED,
            TAG_NAMES_FILE}
    assert kept <= NAMES, sorted(kept - NAMES)
