"""Faults: recsys loses nothing, harms nothing and survives hostile input (issue 5: embed, similar, index, library).

Every test runs the real `recsys` command in its own process where the fault is a process fault (kill -9, a second
run, a player writing, unwritable folders), and asserts the outcome, not only that nothing crashed.

Tests may run as root, whom chmod does not stop. The unwritable/unreadable cases then run recsys without the
capabilities that let root ignore file modes (``setpriv``), so the folders really are unwritable for it; where that
is impossible only the proof that a write would have been refused is left out, never the byte and mtime checks.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import soundfile as sf

from recsys.embedder.audio import TrackTooLong, load_crop
from recsys.home.lock import LOCK_FILE
from recsys.index.store import TrackStore
from recsys.library.sources.folders import scan_folders
from recsys.playlists import PlaylistEntry, write_playlist
from recsys.playlists.output import xml_text
from recsys.synth.audio import FORMATS, STYLES, synth_track, write_audio
from recsys.synth.player_db import SynthSong, file_uri, write_clementine_db

SR = 22050
RUN_TIMEOUT_S = 180


def _recsys(home: Path, *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None,
            timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`recsys --home HOME ARGS` in a fresh process (bytes arguments allowed), output decoded leniently."""
    command = [*(prefix or []), sys.executable, "-m", "recsys.cli", "--home", str(home), *args]
    proc = subprocess.run(command, capture_output=True, env={**os.environ, **(env or {})}, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def _embed_args(db: Path, workers: int = 1) -> list[str]:
    return ["embed", "--db", str(db), "--workers", str(workers), "-q"]


def _popen_embed(home: Path, db: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recsys.cli", "--home", str(home), *_embed_args(db)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def _table(home: Path) -> tuple[list[str], np.ndarray]:
    """(keys, vectors) of the table, after checking each row is whole: every column set, vector finite and unit."""
    store = TrackStore.open(home)
    meta, vectors = store.read_all()
    keys = meta.column("key").to_pylist()
    for name in ("path", "content_id", "size", "mtime_ns", "encoder_id", "embedded_at"):
        assert meta.column(name).null_count == 0, f"partial rows: {name} missing"
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    return keys, vectors


def _by_key(home: Path) -> dict[str, np.ndarray]:
    keys, vectors = _table(home)
    assert len(keys) == len(set(keys)), "a track has two rows"
    return dict(zip(keys, vectors, strict=True))


def _unprivileged() -> list[str] | None:
    """A command prefix under which file modes bind this user: none needed unless root; for root, ``setpriv``
    dropping the capabilities that bypass them; None when root cannot be bound (no setpriv, or not allowed)."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        return None
    return prefix


def _snapshot(*roots: Path) -> dict[str, tuple]:
    """Bytes, mode and mtime of every file and folder under ``roots`` (folders: their listing)."""
    seen: dict[str, tuple] = {}
    for root in roots:
        for path in [root, *sorted(root.rglob("*"))]:
            st = path.lstat()
            content = sorted(os.listdir(path)) if path.is_dir() else path.read_bytes()
            seen[str(path)] = (content, st.st_mode, st.st_mtime_ns)
    return seen


# ---- kill -9 ---------------------------------------------------------------------------------------------------------


def test_kill_9_embed_at_random_moments_loses_nothing(small_library, tmp_path):
    """Several runs killed at random moments, each resumed by the next: finally one whole row per track, and the
    same vectors as a run never interrupted."""
    lib = small_library
    for song in list(lib.songs):  # two tracks per file (hard links): a longer run, so kills land mid-write
        link = Path(song.path).with_name(f"link {Path(song.path).name}")
        os.link(song.path, link)
        lib.songs.append(SynthSong(path=str(link), title=f"{song.title} link", artist=song.artist))
    lib.rewrite_db()
    env = {"RECSYS_EMBED__WRITE_BATCH": "2"}

    reference = _popen_embed(tmp_path / "reference", lib.db, env)
    started = time.monotonic()
    first_write_s = None
    while reference.poll() is None:  # when does writing start? kills are aimed at the writing part of a run
        if first_write_s is None and (tmp_path / "reference" / "tracks.stamp").exists():
            first_write_s = time.monotonic() - started
        time.sleep(0.01)
    full_run_s = time.monotonic() - started
    assert reference.wait() == 0, reference.stderr.read().decode()
    reference.stderr.close()
    expected = _by_key(tmp_path / "reference")
    assert set(expected) == {s.path for s in lib.songs} and first_write_s is not None

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    moments = []
    for _ in range(3):
        moment = rng.uniform(max(0.0, first_write_s - 0.5), full_run_s)
        moments.append(round(moment, 2))
        proc = _popen_embed(lib.home, lib.db, env)
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        if (lib.home / "tracks.lance").exists():
            for key, vector in _by_key(lib.home).items():  # whatever was committed is whole and right
                np.testing.assert_allclose(vector, expected[key], atol=1e-5, err_msg=f"seed {seed} {moments}")

    final = _recsys(lib.home, *_embed_args(lib.db), env=env)
    assert final.returncode == 0, f"seed {seed}, kills at {moments} s: {final.stderr}"
    got = _by_key(lib.home)
    assert set(got) == set(expected), f"seed {seed}, kills at {moments} s"
    for key, vector in got.items():
        np.testing.assert_allclose(vector, expected[key], atol=1e-5, err_msg=f"seed {seed}, kills at {moments} s")
    assert TrackStore.open(lib.home).failures() == []
    similar = _recsys(lib.home, "similar", lib.songs[0].path, "--json")
    assert similar.returncode == 0 and len(json.loads(similar.stdout)) == 10, similar.stderr


# ---- the player writes meanwhile -------------------------------------------------------------------------------------

PLAYER = r"""
import sqlite3, sys, time
from pathlib import Path
db, stop, journal = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
conn = sqlite3.connect(db, timeout=5.0)  # Qt's SQLite driver (both players) waits 5 s on a busy database
conn.execute(f"PRAGMA journal_mode={journal}")
rows = [r[0] for r in conn.execute("SELECT rowid FROM songs")]
writes = 0
while not stop.exists() or writes < 20:
    rowid = rows[writes % len(rows)]
    with conn:
        conn.execute("UPDATE songs SET playcount = playcount + 1, rating = ?, lastplayed = ? WHERE rowid = ?",
                     ((writes % 6) / 5, int(time.time()), rowid))
    writes += 1
    time.sleep(0.005)
conn.close()
print(writes)
"""


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_player_writing_during_embed(small_library, journal):
    """The player keeps its database open and writes ratings and play counts all through `recsys embed`: every one
    of its writes succeeds (no `database is locked`), and embed completes."""
    lib = small_library
    stop = lib.root / "stop-player"
    player = subprocess.Popen([sys.executable, "-c", PLAYER, str(lib.db), str(stop), journal],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        embed = _recsys(lib.home, *_embed_args(lib.db))
    finally:
        stop.touch()
        out, err = player.communicate(timeout=60)
    assert player.returncode == 0, err
    assert embed.returncode == 0, embed.stderr
    assert "locked" not in embed.stderr + embed.stdout
    writes = int(out)
    conn = sqlite3.connect(lib.db)
    assert conn.execute("SELECT sum(playcount) FROM songs").fetchone()[0] == writes  # none lost
    conn.close()
    assert set(_by_key(lib.home)) == {s.path for s in lib.songs}


# ---- read-only ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_library_and_player_db_are_only_read(small_library, tmp_path_factory, journal):
    """embed and similar with the music folder and the player database (file and folder) unwritable and the home on
    another path: both work, and not one byte, mode, mtime or file name of the library or the database changes."""
    lib = small_library
    db_dir = lib.root / "player"
    db_dir.mkdir()
    db = db_dir / "clementine.db"
    write_clementine_db(db, lib.songs)
    if journal == "wal":
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=wal")
        conn.close()
    home = tmp_path_factory.mktemp("elsewhere") / "recsys home"
    for path in [*lib.music.iterdir(), db]:
        path.chmod(0o444)
    for folder in (lib.music, db_dir):
        folder.chmod(0o555)
    prefix = _unprivileged()
    try:
        before = _snapshot(lib.music, db_dir)
        if prefix is not None:  # the folders really are unwritable for the process that runs recsys
            probe = subprocess.run([*prefix, "touch", str(lib.music / "probe"), str(db_dir / "probe")],
                                   capture_output=True)
            assert probe.returncode != 0
        embed = _recsys(home, *_embed_args(db), prefix=prefix)
        assert embed.returncode == 0, embed.stderr
        assert "embedded 12," in embed.stdout
        similar = _recsys(home, "similar", lib.songs[0].path, "-k", "3", prefix=prefix)
        assert similar.returncode == 0, similar.stderr
        assert len(similar.stdout.strip().splitlines()) == 4
        assert _snapshot(lib.music, db_dir) == before
    finally:
        for folder in (lib.music, db_dir):
            folder.chmod(0o755)


# ---- one writer per home --------------------------------------------------------------------------------------------


def _holder(home: Path) -> dict:
    try:
        return json.loads((home / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def test_two_embeds_at_once_and_a_stale_lock(small_library):
    """A second `recsys embed` on the same home names the running one and exits non-zero, changing nothing; once
    the first is killed (kill -9, its lock file left behind) the next run takes the lock over and finishes."""
    lib = small_library
    first = _popen_embed(lib.home, lib.db)
    try:
        deadline = time.monotonic() + 60
        while _holder(lib.home).get("pid") != first.pid:
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first embed never took the lock"
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # holds the lock for as long as the second run needs
        second = _recsys(lib.home, *_embed_args(lib.db))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "recsys embed" in lines[0], second.stderr
    assert _holder(lib.home).get("pid") == first.pid  # the killed run's lock file is left as it was

    third = _recsys(lib.home, *_embed_args(lib.db))
    assert third.returncode == 0, third.stderr
    assert set(_by_key(lib.home)) == {s.path for s in lib.songs}
    assert _holder(lib.home) == {}  # released


# ---- hostile audio --------------------------------------------------------------------------------------------------


def _wav_header(frames: int, rate: int, channels: int, bits: int) -> bytes:
    size = frames * channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
            + b"data" + struct.pack("<I", size))


def _bytes_read() -> int:
    """Bytes this process has read through read() calls so far (Linux ``/proc/self/io``: what a file costs to judge,
    whatever the machine's load)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _ten_hour_wav(path: Path) -> Path:
    """A WAV whose header declares 10 hours (8 kHz mono 16-bit, 576 MB) over a sparse file: no disk, no time."""
    rate = 8000
    header = _wav_header(10 * 3600 * rate, rate, 1, 16)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + 10 * 3600 * rate * 2)
    return path


def _hostile_audio(music: Path, good: list[Path]) -> dict[str, str]:
    """Write the hostile files next to the good ones; returns file name -> expected outcome
    ('embedded', 'failed', 'too long', or 'either' where a bit flip's effect depends on the codec's resilience)."""
    rng = np.random.default_rng(5)
    expected = {}
    for path in good:
        fmt = path.stem
        data = path.read_bytes()
        expected[path.name] = "embedded"
        truncated = music / f"truncated {path.name}"
        truncated.write_bytes(data[: len(data) * 2 // 5])
        # WAV, AIFF and Ogg state no length libsndfile trusts over the data: what is left is a shorter, whole track.
        # FLAC's STREAMINFO, MP3's Xing header and MP4's sample table promise audio that is not there.
        expected[truncated.name] = "embedded" if fmt in ("wav", "aiff", "ogg", "opus") else "failed"
        flipped = bytearray(data)
        for i in rng.integers(len(data) // 10, len(data), 200):
            flipped[i] ^= 0xFF
        (music / f"flipped {path.name}").write_bytes(bytes(flipped))
        expected[f"flipped {path.name}"] = "embedded" if fmt in ("wav", "aiff") else "either"  # PCM: just noise
    (music / "empty.flac").write_bytes(b"")
    (music / "readme.mp3").write_text("not audio at all\n" * 100)
    os.mkfifo(music / "pipe.ogg")  # opening a FIFO blocks until a writer comes: must never be opened
    expected.update({"empty.flac": "failed", "readme.mp3": "failed", "pipe.ogg": "failed"})
    expected[_ten_hour_wav(music / "ten hours.wav").name] = "embedded"  # by its crop: long tracks are music too
    x = synth_track("drum_loop", 4.0, SR, seed=1)
    sf.write(music / "six channels.wav", synth_track("bass_groove", 4.0, 44100, seed=2, channels=6), 44100)
    for subtype in ("PCM_U8", "PCM_24", "FLOAT"):
        sf.write(music / f"{subtype}.wav", x, SR, subtype=subtype)
    sf.write(music / "8 kHz.flac", synth_track("ambient_pad", 4.0, 8000, seed=3), 8000)
    sf.write(music / "192 kHz.flac", synth_track("bright_arpeggio", 4.0, 192000, seed=4), 192000, subtype="PCM_24")
    sf.write(music / "silence.wav", np.zeros((4 * SR, 2), np.float32), SR)
    sf.write(music / "100 samples.wav", x[:100], SR)
    for name in ("six channels.wav", "PCM_U8.wav", "PCM_24.wav", "FLOAT.wav", "8 kHz.flac", "192 kHz.flac",
                 "silence.wav", "100 samples.wav"):
        expected[name] = "embedded"
    return expected


def test_hostile_audio_never_crashes_or_hangs(tmp_path):
    """Damaged files of every format, empty, mislabelled, FIFO, 10-hour, 6-channel, 8/24/32-bit-float PCM, 8 kHz
    and 192 kHz: the run completes within its time limit, and each file is embedded (finite, unit vector), recorded
    as a failure with a one-line reason naming it, or skipped as too long; nothing is lost between the three."""
    music = tmp_path / "music"
    music.mkdir()
    good = []
    for i, fmt in enumerate(FORMATS):
        path = music / f"{fmt}.{FORMATS[fmt]}"
        write_audio(path, synth_track(STYLES[i % len(STYLES)], 6.0, SR, seed=i), SR, fmt)
        good.append(path)
    expected = _hostile_audio(music, good)
    db = tmp_path / "clementine.db"
    write_clementine_db(db, [SynthSong(path=str(music / name), title=name) for name in expected])

    read_before = _bytes_read()
    with pytest.raises(TrackTooLong):
        load_crop(music / "ten hours.wav", SR)
    assert _bytes_read() - read_before < 20_000_000  # judged by its header, never decoded (576 MB of audio)

    home = tmp_path / "home"
    run = _recsys(home, *_embed_args(db, workers=2), env={"RECSYS_AUDIO__DECODE_TIMEOUT_S": "20"}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "too long" not in run.stdout  # no length limit unless the user sets audio.max_track_minutes
    embedded = {Path(key).name for key in _by_key(home)}
    failures = {Path(f.path).name: f.error for f in TrackStore.open(home).failures()}
    assert not embedded & set(failures)
    for name, outcome in expected.items():
        got = "embedded" if name in embedded else "failed" if name in failures else "too long"
        assert got == outcome or (outcome == "either" and got != "too long"), f"{name}: {got}, expected {outcome}"
    for name, error in failures.items():  # a decoder's own message, not a bug's
        assert error.startswith(str(music / name)) and "\n" not in error, error


# ---- hostile metadata -----------------------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "<b>bold</b> & <script>alert('x')</script> ]]> <!-- -->",
    "\"double\" 'single' `back` \\slash",
    "bell\x07 escape\x1b[31mred\x1b[0m tab\tnew\nline\rcr nul\x00 del\x7f nel\x85 ls\u2028 ps\u2029",
    "x" * 1000,
    "\ufeffbom \u202eevil rtl\u202c zero\u200bwidth",
]


def test_hostile_tags_and_names_stay_one_line_and_valid_xml(small_library, tmp_path):
    """Tags and file names with markup, quotes, control characters, 1,000-character titles; a file name that is not
    valid UTF-8 and a title with bytes that are not UTF-8: `recsys similar` prints one line per track, and an XSPF
    of those tracks parses back to the same files."""
    lib = small_library
    sources = [Path(s.path) for s in lib.songs]
    names = ["<i>bold &amp; 'q' \"dq\"", "tab\there\x1b[31m", "new\nline", "émoji 🎵 ünï", "x" * 200]
    songs = []
    for i, (name, text) in enumerate(zip(names, HOSTILE_TEXT, strict=True)):
        target = lib.music / f"{name}{sources[i].suffix}"
        shutil.copy(sources[i], target)
        songs.append(SynthSong(path=str(target), title=text, artist=text[::-1], album=text, genre=text))
    raw = os.fsdecode(bytes(lib.music) + b"/latin1 caf\xe9.flac")  # a name that is not UTF-8: surrogate escapes
    shutil.copy(sources[5], os.fsencode(raw))
    songs.append(SynthSong(path=raw, title="not utf-8 name"))
    songs += [SynthSong(path=str(p), title=f"plain {i}", artist="plain") for i, p in enumerate(sources[6:])]
    write_clementine_db(lib.db, songs)
    conn = sqlite3.connect(lib.db)  # a tag whose bytes are not UTF-8 (Latin-1 written by an old tagger)
    conn.execute("UPDATE songs SET title = CAST(X'43616627E9' AS TEXT) WHERE title = 'plain 0'")
    conn.commit()
    conn.close()

    run = _recsys(lib.home, *_embed_args(lib.db))
    assert run.returncode == 0, run.stderr
    embedded = _by_key(lib.home)
    assert {s.path for s in songs if s.path != raw} <= set(embedded)
    assert raw not in embedded and "not valid UTF-8" in run.stdout  # left out and said so, never a crash

    for query in [songs[0].path, songs[2].path, file_uri(songs[3].path)]:
        out = _recsys(lib.home, "similar", query, "-k", "20")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.rstrip("\n").split("\n")
        assert len(lines) == len(embedded)  # the query line + one per other track
        assert all(line.isprintable() for line in lines)
    as_json = _recsys(lib.home, "similar", songs[1].path, "-k", "20", "--json")
    assert {h["title"] for h in json.loads(as_json.stdout)} >= set(HOSTILE_TEXT) - {HOSTILE_TEXT[1]}

    ranked = [PlaylistEntry(key=s.path, path=s.path, start_s=0.0, artist=s.artist, title=s.title, album=s.album,
                            track_number=1, duration_s=8.0, annotation="predicted 4.0 stars") for s in songs]
    playlist = write_playlist(tmp_path / "hostile.xspf", ranked, title=HOSTILE_TEXT[0])
    root = ET.parse(playlist).getroot()
    ns = {"x": "http://xspf.org/ns/0/"}
    tracks = list(root.iterfind(".//x:track", ns))
    locations = [t.findtext("x:location", namespaces=ns) for t in tracks]
    assert [unquote_to_bytes(urlsplit(u).path) for u in locations] == [os.fsencode(s.path) for s in songs]
    # the same text, but that XML parsers read every CR as LF (XML 1.0, end-of-line handling)
    assert [t.findtext("x:title", namespaces=ns) for t in tracks] == [xml_text(s.title).replace("\r", "\n")
                                                                      for s in songs]


# ---- folder scan ----------------------------------------------------------------------------------------------------


def _churn(folder: Path, source: Path, stop: threading.Event) -> None:
    """Make and delete audio files and folders as fast as possible: a library being reorganised mid-scan."""
    i = 0
    while not stop.is_set():
        sub = folder / f"d{i % 3}"
        sub.mkdir(exist_ok=True)
        target = sub / f"{i}.flac"
        os.link(source, target)
        if i % 2:
            target.unlink()
        else:
            shutil.rmtree(sub, ignore_errors=True)
        i += 1


def test_folder_scan_loops_unreadable_and_vanishing(small_library):
    """Symlink loops, an unreadable folder (really unreadable: recsys runs without root's override) and files and
    folders vanishing while the scan runs: the scan finishes, reports what it could not read, and embeds the rest."""
    lib = small_library
    music = lib.music
    (music / "loop").mkdir()
    (music / "loop" / "back up").symlink_to("..", target_is_directory=True)
    (music / "loop" / "self").symlink_to(".", target_is_directory=True)
    (music / "dangling.mp3").symlink_to(music / "nowhere.mp3")
    locked = music / "locked"
    locked.mkdir()
    shutil.copy(lib.songs[0].path, locked / "hidden.flac")
    locked.chmod(0)
    churn = music / "churn"
    churn.mkdir()
    source = Path(next(s.path for s in lib.songs if s.path.endswith(".flac")))
    stable = {s.path for s in lib.songs}
    stop = threading.Event()
    worker = threading.Thread(target=_churn, args=(churn, source, stop))
    worker.start()
    try:
        for _ in range(20):
            result = scan_folders([music])
            found = {t.path for t in result.tracks}
            assert stable <= found
            assert not {p for p in found - stable if not p.startswith(str(churn))} - {str(locked / "hidden.flac")}
        prefix = _unprivileged()
        run = _recsys(lib.home, "embed", "--library", str(music), "--workers", "1", "-q", prefix=prefix)
        if prefix is not None:  # the same scan as recsys ran it: the locked folder is reported, not entered
            code = ("import json, sys\nfrom recsys.library.sources.folders import scan_folders\n"
                    "print(json.dumps(scan_folders([sys.argv[1]]).errors))")
            errors = json.loads(subprocess.run([*prefix, sys.executable, "-c", code, str(music)], capture_output=True,
                                               text=True, check=True).stdout)
            assert [str(locked), "cannot read folder: permission denied"] in errors
            assert [str(music / "dangling.mp3"), "broken symlink"] in errors
    finally:
        stop.set()
        worker.join()
        locked.chmod(0o755)
    assert run.returncode == 0, run.stderr
    embedded = set(_by_key(lib.home))
    assert stable <= embedded
    assert prefix is None or str(locked / "hidden.flac") not in embedded
