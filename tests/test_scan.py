"""Folder scan on tiny synthesised audio: formats by content, tags, symlink loops, unreadable and vanishing files."""

from __future__ import annotations

import os
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf
from mutagen.flac import FLAC
from mutagen.wave import WAVE

from recsys.library.sources import folders as scan
from recsys.library.sources.folders import ScanError, scan_folders, sniff_audio

SR = 8000


def _tone(path: Path, fmt: str, seconds: float = 0.5) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), SR, format=fmt)
    return path


@pytest.fixture
def music(tmp_path) -> Path:
    root = tmp_path / "music"
    flac = _tone(root / "Artist" / "Album" / "01 first #1 & 100%.flac", "FLAC")
    tags = FLAC(flac)
    tags.update({"title": "First", "artist": "Artist", "album": "Album", "albumartist": "Various",
                 "genre": "Rock", "date": "2004-05-01", "tracknumber": "1/12"})
    tags.save()
    ogg = _tone(root / "Artist" / "Album" / "02 ünïcödé 夜.ogg", "OGG")
    tags = mutagen.File(ogg, easy=True)
    tags.update({"title": "Second", "artist": "Artist", "tracknumber": "2"})
    tags.save()
    wav = _tone(root / "Other" / "tagged.wav", "WAV")
    tags = WAVE(wav)
    tags.add_tags()
    tags.tags.add(mutagen.id3.TIT2(encoding=3, text=["Wave title"]))
    tags.tags.add(mutagen.id3.TPE1(encoding=3, text=["Wave artist"]))
    tags.save()
    _tone(root / "Other" / "really a wav.mp3", "WAV")
    (root / "Other" / "text.mp3").write_text("this is not audio\n" * 20)
    (root / "Artist" / "Album" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200))
    (root / "Artist" / "Album" / "album.cue").write_text('FILE "x.flac" WAVE\n')
    (root / "notes.txt").write_text("hello\n")
    return root


def test_formats_by_content(music):
    names = {p.name: sniff_audio(p) for p in music.rglob("*") if p.is_file()}
    assert names == {"01 first #1 & 100%.flac": "flac", "02 ünïcödé 夜.ogg": "ogg", "tagged.wav": "wav",
                     "really a wav.mp3": "wav", "text.mp3": None, "cover.jpg": None, "album.cue": None,
                     "notes.txt": None}


def test_sniff_other_magic(tmp_path):
    cases = {
        "mp3": b"\xff\xfb\x90\x64" + bytes(60),  # MPEG-1 layer III frame header
        "mp3-id3": b"ID3\x04\x00\x00\x00\x00\x00\x05" + bytes(5) + b"\xff\xfb\x90\x64" + bytes(40),
        "flac-id3": b"ID3\x04\x00\x00\x00\x00\x00\x05" + bytes(5) + b"fLaC" + bytes(40),
        "aiff": b"FORM\x00\x00\x10\x00AIFF" + bytes(40),
        "aifc": b"FORM\x00\x00\x10\x00AIFC" + bytes(40),
        "m4a": b"\x00\x00\x00\x20ftypM4A " + bytes(40),
        "adts": b"\xff\xf1\x50\x80" + bytes(60),  # raw AAC: same sync bits, layer 00, not MP3
        "short": b"\xff",
        "empty": b"",
    }
    got = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        got[name] = sniff_audio(tmp_path / name)
    assert got == {"mp3": "mp3", "mp3-id3": "mp3", "flac-id3": "flac", "aiff": "aiff", "aifc": "aiff",
                   "m4a": "mp4", "adts": None, "short": None, "empty": None}


def test_scan_finds_audio_with_tags(music):
    result = scan_folders([music])
    paths = [t.path for t in result.tracks]
    assert paths == sorted(paths) and all(os.path.isabs(p) for p in paths)
    assert [Path(p).name for p in paths] == ["01 first #1 & 100%.flac", "02 ünïcödé 夜.ogg", "really a wav.mp3",
                                             "tagged.wav"]
    first, second, plain_wav, wav = result.tracks
    assert (first.title, first.artist, first.album, first.albumartist, first.genre) == (
        "First", "Artist", "Album", "Various", "Rock")
    assert (first.year, first.track_number) == (2004, 1)
    assert (second.title, second.track_number, second.year) == ("Second", 2, None)
    assert (wav.title, wav.artist) == ("Wave title", "Wave artist")
    assert plain_wav.title == "" and plain_wav.length_s == pytest.approx(0.5, abs=0.01)
    assert first.length_s == pytest.approx(0.5, abs=0.01)
    assert all(not t.segment and t.key == t.path and t.rating is None for t in result.tracks)
    assert result.errors == [(str(music / "Other" / "text.mp3"), "not audio (its content is no known audio format)")]


def test_damaged_tags_keep_the_file(music, monkeypatch):
    def broken(*args, **kwargs):
        raise mutagen.MutagenError("bad tag")

    monkeypatch.setattr(scan.mutagen, "File", broken)
    result = scan_folders([music])
    assert len(result.tracks) == 4 and all(t.title == "" for t in result.tracks)


def test_symlink_loops_and_overlaps(music):
    (music / "Artist" / "loop").symlink_to(music, target_is_directory=True)
    (music / "Other" / "self").symlink_to(".", target_is_directory=True)
    outside = _tone(music.parent / "elsewhere" / "linked.flac", "FLAC").parent
    (music / "linked dir").symlink_to(outside, target_is_directory=True)
    (music / "broken.flac").symlink_to(music / "missing.flac")
    (music / "Other" / "alias.flac").symlink_to(music / "Artist" / "Album" / "01 first #1 & 100%.flac")
    result = scan_folders([music, music / "Artist", str(music) + "/", music / "linked dir"])
    names = sorted(Path(t.path).name for t in result.tracks)
    assert names == ["01 first #1 & 100%.flac", "02 ünïcödé 夜.ogg", "linked.flac", "really a wav.mp3", "tagged.wav"]
    assert str(music / "linked dir" / "linked.flac") in {t.path for t in result.tracks}
    assert (str(music / "broken.flac"), "broken symlink") in result.errors


def test_unreadable_folder_is_reported(music, monkeypatch):
    real_scandir = os.scandir
    locked = str(music / "Artist" / "Album")

    def scandir(path):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    result = scan_folders([music])
    assert (locked, "cannot read folder: permission denied") in result.errors
    assert sorted(Path(t.path).name for t in result.tracks) == ["really a wav.mp3", "tagged.wav"]


def test_vanishing_file_is_reported(music, monkeypatch):
    gone = music / "Other" / "tagged.wav"
    real_sniff = scan.sniff_audio

    def sniff(path):
        if path == gone:
            path.unlink()  # deleted between the folder listing and the read
        return real_sniff(path)

    monkeypatch.setattr(scan, "sniff_audio", sniff)
    result = scan_folders([music])
    assert (str(gone), "file vanished during the scan") in result.errors
    assert str(gone) not in {t.path for t in result.tracks} and len(result.tracks) == 3


def test_progress_and_determinism(music):
    for i in range(60):
        _tone(music / "many" / f"{i:03d}.wav", "WAV", seconds=0.01)
    seen = []
    first = scan_folders([music], progress=seen.append)
    assert seen == [50, 64]
    assert scan_folders([music / "many", music]) == first


def test_missing_or_not_a_folder(tmp_path):
    with pytest.raises(ScanError, match="does not exist: check --library"):
        scan_folders([tmp_path / "nope"])
    (tmp_path / "file.flac").write_bytes(b"fLaC")
    with pytest.raises(ScanError, match="is not a folder"):
        scan_folders([tmp_path / "file.flac"])


def test_empty_folder(tmp_path):
    assert scan_folders([tmp_path]) == scan.ScanResult([], [])
