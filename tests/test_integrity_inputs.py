"""Inputs that broke a whole run or lied (issue 21): a file rewritten with its size and mtime kept, a tag out of range,
a NUL byte in a database location, a file whose read blocks, a damaged newest table version, bad CUE rows, UTF-16
text named .mp3. Each is that item's failure (or news), never the library's; the user's files and databases are
fingerprinted before and after every command and never change.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import time
from pathlib import Path

import mutagen
import pytest
from conftest import SR, fingerprint

from recsys.index.store import TrackStore
from recsys.library.content_id import track_content_id
from recsys.library.reading import ReadDeadline, ReadTimeout
from recsys.pipeline.checked import identity, read_checked, write_checked
from recsys.synth.audio import STYLES, synth_track, write_audio
from recsys.synth.navidrome_db import NavidromeSong, write_navidrome_db
from recsys.synth.player_db import SynthSong


def _embed(lib, *extra: str, source: tuple[str, ...] | None = None):
    return lib.run("embed", *(source or ("--db", str(lib.db))), "--encoder", "dsp", "--workers", "1", "-q", *extra)


def _rows(home: Path) -> dict[str, dict]:
    meta, vectors = TrackStore.open(home).read_all()
    return {row["key"]: {**row, "vector": vectors[i]} for i, row in enumerate(meta.to_pylist())}


@pytest.fixture(autouse=True)
def _watchdog():
    """A test here that hangs (the very failure of item 6) ends the session with a traceback instead of forever."""
    faulthandler.dump_traceback_later(600, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# ---- a file rewritten with its size and mtime kept ---------------------------------------------------------------


def _rewrite_keeping_times(path: Path, data: bytes) -> None:
    """What `cp -p` or `rsync -t` leave: new bytes, the same size and mtime."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_file_rewritten_with_size_and_mtime_kept_is_embedded_again(small_library, tmp_path):
    """`cp -p` of other audio over a track (same size, mtime restored) stayed "up to date" with the old vector."""
    lib = small_library
    assert _embed(lib).exit_code == 0
    victim = Path(next(s.path for s in lib.songs if s.path.endswith(".wav")))
    before = _rows(lib.home)[str(victim)]
    other = tmp_path / "other.wav"
    write_audio(other, synth_track(STYLES[3], 8.0, sample_rate=SR, seed=77), SR, "wav")
    _rewrite_keeping_times(victim, other.read_bytes())
    st = victim.stat()
    assert (st.st_size, st.st_mtime_ns) == (before["size"], before["mtime_ns"])
    user = fingerprint(lib.music, lib.db)

    r = _embed(lib)
    assert r.exit_code == 0, r.output
    assert "embedded 1," in r.output and "up to date 11" in r.output, r.output
    assert "1 hold new bytes" in r.output, r.output
    after = _rows(lib.home)[str(victim)]
    assert after["content_id"] == track_content_id(victim, st.st_size) != before["content_id"]
    assert float(after["vector"] @ before["vector"]) < 0.9999
    r = _embed(lib)  # recorded: the next run is a no-op again
    assert "embedded 0," in r.output and "up to date 12" in r.output and "content compared" not in r.output
    assert fingerprint(lib.music, lib.db) == user

    # a broken download fails; the good bytes copied over it, timestamps kept: tried again, not a "known" failure
    broken = lib.music / "download.wav"
    broken.write_bytes(bytes(len(other.read_bytes())))
    lib.songs.append(SynthSong(path=str(broken), title="download"))
    lib.rewrite_db()
    r = _embed(lib)
    assert "embedded 0," in r.output and "failed 1 new" in r.output, r.output
    _rewrite_keeping_times(broken, other.read_bytes())
    user = fingerprint(lib.music, lib.db)
    r = _embed(lib)
    assert "reused 1 " in r.output and "failed" not in r.output, r.output  # the victim's bytes now
    assert str(broken) in _rows(lib.home)
    assert fingerprint(lib.music, lib.db) == user


def test_tags_rewritten_with_size_and_mtime_kept_are_read_again(small_library):
    """A tag editor that keeps the timestamps (the FLAC padding absorbs the change: same size) left the old title in
    the table for good; with `--recheck` a file system without a real ctime (FAT) is caught up too."""
    lib = small_library
    folder = ("--library", str(lib.music))
    flac = Path(next(s.path for s in lib.songs if s.path.endswith(".flac")))
    audio = mutagen.File(flac)
    audio["title"] = "an old title"
    audio.save()  # with mutagen's padding, which later edits reuse
    assert _embed(lib, source=folder).exit_code == 0
    assert _rows(lib.home)[str(flac)]["title"] == "an old title"
    st = flac.stat()
    audio["title"] = "a new title"
    audio.save()
    os.utime(flac, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert flac.stat().st_size == st.st_size
    user = fingerprint(lib.music)
    r = _embed(lib, source=folder)
    assert r.exit_code == 0 and "embedded 1," in r.output, r.output
    assert _rows(lib.home)[str(flac)]["title"] == "a new title"

    # as on FAT: the rewrite leaves no trace in the ctime (here: the record is told it saw the new inode already)
    audio["title"] = "another title"
    audio.save()
    os.utime(flac, ns=(st.st_atime_ns, st.st_mtime_ns))
    now, row = flac.stat(), _rows(lib.home)[str(flac)]
    write_checked(lib.home, [*read_checked(lib.home),
                             identity(str(flac), now.st_size, now.st_mtime_ns, now.st_ctime_ns, row["content_id"])])
    user = fingerprint(lib.music)
    r = _embed(lib, source=folder)
    assert "embedded 0," in r.output and _rows(lib.home)[str(flac)]["title"] == "a new title", r.output
    r = _embed(lib, "--recheck", source=folder)
    assert r.exit_code == 0 and "embedded 1," in r.output and "content compared for 12 file(s)" in r.output, r.output
    assert _rows(lib.home)[str(flac)]["title"] == "another title"
    assert fingerprint(lib.music) == user


# ---- tags out of range -------------------------------------------------------------------------------------------


def test_number_tags_out_of_range_are_dropped_not_fatal(small_library):
    """DATE=20240101123000 in a file, a year of 2**63 - 1 and a track number of 2**40 in the database aborted every
    embed of the library (ArrowInvalid: the table's year and track number are 32-bit)."""
    lib = small_library
    lib.songs[0].year, lib.songs[1].track = 2**63 - 1, 2**40
    lib.rewrite_db()
    flac = Path(next(s.path for s in lib.songs if s.path.endswith(".flac")))
    audio = mutagen.File(flac)
    audio["date"], audio["tracknumber"] = "20240101123000", "99999999999/12"
    audio.save()
    user = fingerprint(lib.music, lib.db)
    for source in (None, ("--library", str(lib.music))):
        r = _embed(lib, source=source)
        assert r.exit_code == 0, r.output
        assert "failed" not in r.output and "up to date" in r.output, r.output
    rows = _rows(lib.home)
    assert len(rows) == 12
    assert rows[lib.songs[0].path]["year"] is None and rows[lib.songs[1].path]["track_number"] is None
    assert rows[lib.songs[2].path]["track_number"] == 3  # the others keep theirs
    assert fingerprint(lib.music, lib.db) == user


# ---- a NUL byte in a database location ---------------------------------------------------------------------------


def test_a_nul_byte_in_a_database_location_is_that_rows_failure(small_library, tmp_path):
    """Clementine's `%00` and Navidrome's `\\0` in a location ended the run: `ValueError: embedded null byte`."""
    lib = small_library
    first = lib.songs[0].path
    lib.songs.append(SynthSong(path=first[:-4] + "\0.wav", title="nul"))  # its URI holds %00
    lib.rewrite_db()
    assert b"%00.wav" in lib.db.read_bytes()
    navidrome = write_navidrome_db(
        tmp_path / "navidrome.db",
        [NavidromeSong(Path(s.path).name, title=s.title) for s in lib.songs[:3]] + [NavidromeSong("bad\0name.mp3")],
        users={"admin": True}, libraries={1: str(lib.music)})
    user = fingerprint(lib.music, lib.db, navidrome)
    r = _embed(lib)
    assert r.exit_code == 0, r.output
    assert "embedded 12," in r.output and "left out, cannot be read or stored: 1" in r.output, r.output
    assert "NUL byte" in r.output and "\0" not in r.output
    r = _embed(lib, source=("--db", str(navidrome)))
    assert r.exit_code == 0 and "library: 3 tracks" in r.output and "NUL byte" in r.output, r.output
    assert fingerprint(lib.music, lib.db, navidrome) == user


# ---- reads that block --------------------------------------------------------------------------------------------


class _Opens:
    """Every file the process opens while ``watching`` (an audit hook: hooks cannot be removed, so it stays idle)."""

    watching: set[str] = set()
    opened: list[str] = []
    installed = False

    @classmethod
    def start(cls, paths: set[str]) -> None:
        if not cls.installed:
            sys.addaudithook(cls._hook)
            cls.installed = True
        cls.opened, cls.watching = [], paths

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        if event == "open" and cls.watching and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            if os.path.realpath(path) in cls.watching or path in cls.watching:
                cls.opened.append(path)


def test_fifos_and_pseudo_files_are_never_opened(small_library, tmp_path):
    """A library link to /proc/kmsg (a regular file of size 0 whose read blocks), or a database row naming it, hung
    the folder scan's sniff and the plan's content-id read for good. Nothing that is not a regular file with bytes
    is ever opened: a FIFO stands for the devices, an empty regular file for the pseudo-files (reading the real
    /proc/kmsg needs root and drains the kernel's log)."""
    lib = small_library
    fifo, pseudo = tmp_path / "a.fifo", tmp_path / "pseudo"
    os.mkfifo(fifo)
    pseudo.touch()
    (lib.music / "kmsg.mp3").symlink_to(pseudo)
    (lib.music / "fifo.flac").symlink_to(fifo)
    lib.songs += [SynthSong(path=str(pseudo), title="pseudo"), SynthSong(path=str(fifo), title="fifo")]
    lib.rewrite_db()
    user = fingerprint(lib.music, lib.db, fifo, pseudo)
    _Opens.start({str(fifo), str(pseudo)})
    try:
        r = _embed(lib, source=("--db", str(lib.db), "--library", str(lib.music)))
        status = lib.run("status", "--db", str(lib.db), "--library", str(lib.music))
    finally:
        _Opens.watching = set()
    assert _Opens.opened == []
    assert r.exit_code == 0 and "embedded 12," in r.output and "failed 2 new" in r.output, r.output
    assert "kmsg.mp3: the file is empty (0 bytes)" in r.output, r.output
    assert status.exit_code == 0, status.output
    assert fingerprint(lib.music, lib.db, fifo, pseudo) == user


def test_a_read_that_blocks_is_cut_by_its_deadline(tmp_path):
    """A read that blocks on a file that passed every check (a hung network share) is that file's failure: the
    deadline interrupts it. A FIFO opened for reading blocks the same way."""
    fifo = tmp_path / "share"
    os.mkfifo(fifo)
    started = time.monotonic()
    with ReadDeadline(0.3) as deadline, pytest.raises(ReadTimeout) as caught:
        deadline.read(fifo, lambda: open(fifo, "rb").read(1))
    assert time.monotonic() - started < 5 and caught.value.filename == str(fifo)
    with ReadDeadline(0.3) as deadline:
        assert deadline.read(fifo, len, b"abc") == 3  # a read that finishes is untouched


# ---- a damaged newest table version ------------------------------------------------------------------------------


def test_repair_rolls_back_a_damaged_newest_manifest(small_library):
    """A truncated newest manifest (a crash or a full disk mid-commit) made `status`, `embed` and `repair` all fail
    with Lance's internal error, though every older version was whole. `status` and `embed` now say to run `recsys
    repair`, in one line; `repair` rolls back to the newest readable version, says which version went, and keeps
    the damaged file."""
    lib = small_library
    assert _embed(lib).exit_code == 0
    versions = lib.home / "tracks.lance" / "_versions"
    newest = max(versions.glob("*.manifest"), key=lambda p: (p.stat().st_mtime_ns, -int(p.stem)))
    damaged = newest.read_bytes()[: newest.stat().st_size // 2]
    newest.write_bytes(damaged)
    user = fingerprint(lib.music, lib.db)
    for command in (["status"], ["embed", "--encoder", "dsp", "-q"]):
        r = lib.run(*command, "--db", str(lib.db))
        assert r.exit_code != 0, r.output
        assert r.output.count("\n") == 1 and "cannot be opened" in r.output and "`recsys repair`" in r.output, r.output
        assert "internal error" not in r.output and ".rs:" not in r.output
    r = lib.run("repair")
    assert r.exit_code == 0, r.output
    assert "cannot be opened (its manifest is damaged; kept as _versions/" in r.output, r.output
    assert "rolled back to version" in r.output and "the last commit held 12" in r.output, r.output
    kept = [p for p in lib.home.rglob("*.damaged-*") if p.is_file()]
    assert [p.read_bytes() for p in kept] == [damaged]  # moved aside, never deleted
    r = _embed(lib)
    assert r.exit_code == 0 and "embedded 0," in r.output and "up to date 12" in r.output, r.output
    assert lib.run("status", "--db", str(lib.db)).exit_code == 0
    assert fingerprint(lib.music, lib.db) == user


# ---- CUE rows and sniffing ---------------------------------------------------------------------------------------


def test_bad_cue_rows_fail_alone_and_say_which_and_why(small_library):
    """A negative CUE start was embedded (a vector from the file's start); segments past the file's end each printed
    the same line ('<file>: no audio could be decoded ... corrupt or truncated'), naming neither segment nor cause."""
    lib = small_library
    whole = lib.split_first_into_cue_parts()
    cue = whole + ".cue"
    lib.songs += [SynthSong(path=whole, title=f"late {i}", beginning_ns=(20 + 10 * i) * 10**9, length_ns=4 * 10**9,
                            cue_path=cue) for i in range(2)]
    lib.songs.append(SynthSong(path=whole, title="early", beginning_ns=-3 * 10**9, length_ns=4 * 10**9, cue_path=cue))
    lib.rewrite_db()
    user = fingerprint(lib.music, lib.db)
    r = _embed(lib)
    assert r.exit_code == 0, r.output
    assert "embedded 13," in r.output and "failed 2 new" in r.output, r.output
    assert f"{whole}@-3.000: the CUE segment starts at -3 s" in r.output, r.output
    for start in ("20.000", "30.000"):
        assert f"failed: {whole}@{start}: the CUE segment starting at {start} s lies after the end of the file" \
            in r.output, r.output
    assert f"{whole}@-3.000" not in _rows(lib.home)
    assert fingerprint(lib.music, lib.db) == user


def test_utf16_text_named_mp3_is_not_audio(tmp_path):
    """A UTF-16 text file starts 0xFF 0xFE: a valid MPEG frame header for many first characters, so notes saved as
    .mp3 were taken for audio. A real MPEG stream has a second frame where the first ends."""
    from recsys.library.sources.folders import scan_folders

    music = tmp_path / "music"
    music.mkdir()
    (music / "notes.mp3").write_bytes("liner notes: recorded live, 1997\n".encode("utf-16") * 40)
    (music / "short.mp3").write_bytes("hi".encode("utf-16"))
    write_audio(music / "real.mp3", synth_track(STYLES[0], 3.0, sample_rate=SR, seed=1), SR, "mp3")
    user = fingerprint(music)
    result = scan_folders([music])
    assert [Path(t.path).name for t in result.tracks] == ["real.mp3"]
    assert {Path(p).name: why for p, why in result.errors} == {
        "notes.mp3": "not audio (its content is no known audio format)",
        "short.mp3": "not audio (its content is no known audio format)"}
    assert fingerprint(music) == user
