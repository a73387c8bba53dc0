"""Reading playlists for seeds: what recsys writes reads back to the same keys; other players' XSPF and M3U too."""

from __future__ import annotations

import os

import pytest

from recsys.library.track import make_key
from recsys.library.uri import path_to_uri as file_uri
from recsys.playlists import PlaylistEntry, write_playlist
from recsys.playlists.read import PlaylistReadError, read_playlist

NAMES = ["plain.flac", "with space #1 & 100%.ogg", "日本語の歌.flac", "caf\udce9 latin-1.mp3"]


def _ranked(path: str, start: float = 0.0, segment: bool = False) -> PlaylistEntry:
    return PlaylistEntry(key=make_key(path, start, segment), path=path, start_s=start, artist="A", title="T", album="",
                         track_number=None, duration_s=60.0)


@pytest.fixture
def music(tmp_path):
    folder = tmp_path / "music"
    folder.mkdir()
    for name in NAMES + ["sheet.flac", "café.flac"]:
        (folder / os.fsdecode(os.fsencode(name))).write_bytes(b"x")
    return folder


@pytest.mark.parametrize("fmt", ["xspf", "m3u8"])
def test_what_recsys_writes_reads_back_to_the_same_keys(tmp_path, music, fmt):
    tracks = [_ranked(str(music / n)) for n in NAMES]
    tracks += [_ranked(str(music / "sheet.flac"), 0.0, True), _ranked(str(music / "sheet.flac"), 185.25, True)]
    out = write_playlist(tmp_path / f"p.{fmt}", tracks, "t", fmt=fmt)
    read = read_playlist(out)
    assert [e.key for e in read.entries] == [t.key for t in tracks] and not read.problems


def test_other_players_xspf_relative_stream_and_missing(tmp_path, music):
    playlist = music / "mine.xspf"
    playlist.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<playlist version="1" xmlns="http://xspf.org/ns/0/"><trackList>
 <track><location>with%20space%20%231%20%26%20100%25.ogg</location></track>
 <track><location>http://radio.example/stream</location></track>
 <track><location>{file_uri(str(music / "gone.flac"))}</location></track>
 <track><title>no location</title></track>
 <track><location>file://localhost{music}/plain.flac</location></track>
</trackList></playlist>""", encoding="utf-8")
    read = read_playlist(playlist)
    assert [e.key for e in read.entries] == [str(music / NAMES[1]), str(music / "plain.flac")]
    assert read.problems == ["entry 2: http://radio.example/stream is not a local file",
                             f"entry 3: {music}/gone.flac does not exist", "entry 4: (no location) is not a local file"]


def test_m3u_relative_paths_comments_uris_and_latin1(tmp_path, music):
    sub = music / "lists"
    sub.mkdir()
    (sub / "old.m3u").write_bytes(b"\xef\xbb\xbf#EXTM3U\n#EXTINF:60,A - T\n../plain.flac\n\n# a comment\n"
                                  + f"{file_uri(str(music / NAMES[2]))}\r\n".encode()
                                  + b"../caf\xe9 latin-1.mp3\n../caf\xe9.flac\n../missing.flac\n")
    read = read_playlist(sub / "old.m3u")
    assert [e.path for e in read.entries] == [str(music / "plain.flac"), str(music / NAMES[2]),
                                              str(music / NAMES[3]),  # the file system's bytes, as they are
                                              str(music / "café.flac")]  # Latin-1 text naming a UTF-8 file name
    assert read.problems == [f"entry 5: {music}/missing.flac does not exist"]


def test_unreadable_or_not_a_playlist_is_one_clear_error(tmp_path):
    with pytest.raises(PlaylistReadError, match=r"cannot read playlist .*nope\.xspf \(No such file"):
        read_playlist(tmp_path / "nope.xspf")
    (tmp_path / "bad.xspf").write_text("<playlist><trackList>", encoding="utf-8")
    with pytest.raises(PlaylistReadError, match="bad.xspf is not a valid XSPF playlist"):
        read_playlist(tmp_path / "bad.xspf")
    (tmp_path / "song.m3u8").write_bytes(b"fLaC\0\0\x01binary")
    with pytest.raises(PlaylistReadError, match="song.m3u8 is not a playlist"):
        read_playlist(tmp_path / "song.m3u8")
