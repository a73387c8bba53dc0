"""Playlist files: XSPF read back with the stdlib XML parser and checked against the XSPF 1 element rules, M3U,
URI round trips of awkward names, XML-hostile tag text, atomic writes and no silent overwrite."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit
from xml.etree import ElementTree as ET

import pytest

from recsys import atomic
from recsys.library.uri import path_to_uri as file_uri
from recsys.playlists import Inputs, PlaylistEntry, PlaylistWriteError, write_playlist

NS = {"x": "http://xspf.org/ns/0/", "vlc": "http://www.videolan.org/vlc/playlist/ns/0/"}
# XSPF 1's track children, in the order its schema's <xsd:sequence> requires.
TRACK_ORDER = ["location", "identifier", "title", "creator", "annotation", "info", "image", "album", "trackNum",
               "duration", "link", "meta", "extension"]
NAMES = ["plain.flac", "with space.mp3", "hash #1.ogg", "100% sure.flac", "rock & roll.opus", "quote ' \" .m4a",
         "日本語の歌.flac", "Кино - Группа крови.mp3", "question?.wav", "semi;colon=eq+plus.flac",
         "caf\udce9 latin-1.mp3"]


def ranked(path: str, **kw) -> PlaylistEntry:
    base = dict(key=path, path=path, start_s=0.0, artist="Artist", title="Title", album="Album", track_number=3,
                duration_s=201.5, annotation="predicted 4.2 stars, close to A - Liked")
    base.update(kw)
    return PlaylistEntry(**base)


def uri_to_path(uri: str) -> str:
    parts = urlsplit(uri)
    assert parts.scheme == "file" and parts.netloc == ""
    return os.fsdecode(unquote_to_bytes(parts.path))


@pytest.mark.parametrize("name", NAMES)
def test_file_uri_round_trips(tmp_path, name):
    path = str(tmp_path / "Música" / name)
    uri = file_uri(path)
    assert uri.startswith("file:///") and " " not in uri and "#" not in uri[7:] and "&" not in uri
    assert uri_to_path(uri) == path


def test_xspf_reads_back_with_every_field(tmp_path):
    music = tmp_path / "music"
    tracks = [ranked(str(music / name), title=f"T{i} <&> \"q\"", artist=f"Art'ist {i}", track_number=i + 1)
              for i, name in enumerate(NAMES)]
    tracks.append(ranked(str(music / "album.flac"), start_s=312.25, duration_s=180.0, title="CUE part"))
    out = write_playlist(tmp_path / "out" / "mix.xspf", tracks, title="Taste & more")
    root = ET.parse(out).getroot()
    assert root.tag == f"{{{NS['x']}}}playlist" and root.get("version") == "1"
    assert root.find("x:title", NS).text == "Taste & more" and root.find("x:creator", NS).text == "recsys"
    datetime.fromisoformat(root.find("x:date", NS).text)
    got = root.findall("x:trackList/x:track", NS)
    assert len(got) == len(tracks)
    for element, track in zip(got, tracks, strict=True):
        children = [c.tag.split("}")[1] for c in element]
        assert children == sorted(children, key=TRACK_ORDER.index)
        assert uri_to_path(element.find("x:location", NS).text) == track.path
        assert element.find("x:title", NS).text == track.title
        assert element.find("x:creator", NS).text == track.artist
        assert element.find("x:album", NS).text == "Album"
        assert int(element.find("x:trackNum", NS).text) == track.track_number
        assert int(element.find("x:duration", NS).text) == round(track.duration_s * 1000)
        assert element.find("x:annotation", NS).text == "predicted 4.2 stars, close to A - Liked"
    cue = got[-1].find("x:extension", NS)
    assert cue.get("application") == "http://www.videolan.org/vlc/playlist/0"
    assert [o.text for o in cue.findall("vlc:option", NS)] == ["start-time=312.250", "stop-time=492.250"]
    assert got[0].find("x:extension", NS) is None


def test_a_ranked_track_is_written_as_a_neutral_entry_saying_why_it_is_there(tmp_path):
    """The one conversion of the recommender's RankedTrack to the writers' entry (``app/output.ranked_entries``):
    the fields the writers print, the annotation from the predicted stars and the liked tracks it is close to (the
    score only when there are neither); an entry without an annotation is written without one."""
    from recsys.app.output import ranked_entries
    from recsys.recommender.rank import RankedTrack

    base = dict(key="/m/x.flac@12.500", path="/m/x.flac", start_s=12.5, score=0.5, artist="Ar", title="Ti",
                album="Al", track_number=3, duration_s=201.5)
    liked, plain = ranked_entries([RankedTrack(**base, predicted=0.84, because=["A - Liked", "B - Too"]),
                                   RankedTrack(**base, predicted=None)])
    fields = {k: v for k, v in base.items() if k != "score"}
    assert liked == PlaylistEntry(**fields, annotation="predicted 4.2 stars, close to A - Liked; B - Too")
    assert plain.annotation == "score 0.500" and plain.segment and plain.label == "Ar - Ti"
    out = write_playlist(tmp_path / "bare.xspf", [ranked("/m/a.flac", annotation="")], title="x")
    assert ET.parse(out).getroot().find("x:trackList/x:track/x:annotation", NS) is None


def test_xml_hostile_tags_are_stripped_not_fatal(tmp_path):
    nasty = "bad\x00ctl\x07 \x1b[31m tab\tok \ud800lone \ufffe end"
    out = write_playlist(tmp_path / "n.xspf", [ranked("/m/x.flac", title=nasty, artist="Ar\x0btist", album="")],
                         title="t\x01")
    track = ET.parse(out).getroot().find("x:trackList/x:track", NS)
    assert track.find("x:title", NS).text == "badctl [31m tab\tok lone  end"
    assert track.find("x:creator", NS).text == "Artist"
    assert track.find("x:album", NS) is None


def test_m3u8(tmp_path):
    tracks = [ranked("/m/日本 #1.flac", artist="A\nB", title="T\ud800\x00", duration_s=61.6),
              ranked("/m/b.mp3", duration_s=None)]
    out = write_playlist(tmp_path / "p.m3u8", tracks, title="x\ny", fmt="m3u8")
    assert out.read_text(encoding="utf-8").splitlines() == [  # #PLAYLIST: is the name Navidrome imports it as
        "#EXTM3U", "#PLAYLIST:x y", "#EXTINF:62,A B - T", "/m/日本 #1.flac", "#EXTINF:-1,Artist - Title", "/m/b.mp3"]


def test_never_overwrites_unless_asked(tmp_path):
    target = tmp_path / "p.xspf"
    target.write_text("keep me")
    with pytest.raises(PlaylistWriteError, match=r"p\.xspf exists: pass --force or choose another --out"):
        write_playlist(target, [ranked("/m/a.flac")], title="x")
    with pytest.raises(PlaylistWriteError, match="is not a playlist: --force only replaces XSPF or M3U"):
        write_playlist(target, [ranked("/m/a.flac")], title="x", overwrite=True)  # not ours to replace
    assert target.read_text() == "keep me"
    target.unlink()
    for fmt in ("m3u8", "xspf", "xspf"):  # an existing playlist of either format is replaced with --force
        write_playlist(target, [ranked("/m/a.flac")], title="x", fmt=fmt, overwrite=True)
    assert ET.parse(target).getroot().get("version") == "1"


def _inputs(tmp_path) -> tuple[Inputs, dict[str, Path]]:
    music = tmp_path / "music"
    (music / "album").mkdir(parents=True)
    song = music / "album" / "song.flac"
    song.write_bytes(b"fLaC music")
    elsewhere = tmp_path / "other" / "track.mp3"  # a database track outside the scanned folder
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"ID3 music")
    db = tmp_path / "player" / "clementine.db"
    db.parent.mkdir()
    db.write_bytes(b"SQLite format 3\x00")
    (tmp_path / "player" / "clementine.db-wal").write_bytes(b"wal")
    link = tmp_path / "link.xspf"
    link.symlink_to(elsewhere)
    return Inputs(db, [str(music)], {str(song), str(elsewhere)}), {
        "db": db, "wal": Path(f"{db}-wal"), "shm (absent)": Path(f"{db}-shm"), "song": song, "new in music":
        music / "album" / "new.xspf", "db track": elsewhere, "link to a track": link,
        "via a linked folder": tmp_path / "music-link" / "album" / "x.xspf"}


def test_inputs_are_never_written_even_with_force(tmp_path):
    """`--out clementine.db --force` once replaced the player database with a playlist: every input, whatever the
    spelling of its path, is refused with a reason, and not one byte of it changes."""
    inputs, targets = _inputs(tmp_path)
    (tmp_path / "music-link").symlink_to(tmp_path / "music")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for what, target in targets.items():
        with pytest.raises(PlaylistWriteError, match="never writes|symbolic link") as err:
            write_playlist(target, [ranked("/m/a.flac")], title="x", overwrite=True, inputs=inputs)
        assert "\n" not in str(err.value), what
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not targets["shm (absent)"].exists() and not targets["new in music"].exists()
    write_playlist(tmp_path / "fine.xspf", [ranked("/m/a.flac")], title="x", inputs=inputs)  # elsewhere: written


def test_only_regular_files_are_replaced(tmp_path):
    """`--force` onto a device node (as root) replaced it with a regular file; a FIFO, folder or device is refused."""
    fifo = tmp_path / "fifo.xspf"
    os.mkfifo(fifo)
    (tmp_path / "folder.xspf").mkdir()
    for target in (Path("/dev/null"), fifo, tmp_path / "folder.xspf"):
        with pytest.raises(PlaylistWriteError, match="is not a regular file"):
            write_playlist(target, [ranked("/m/a.flac")], title="x", overwrite=True)
    assert Path("/dev/null").is_char_device() and fifo.is_fifo()


def test_failure_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "p.xspf"
    target.write_text("#EXTM3U\nold playlist\n")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(PlaylistWriteError, match="No space left on device") as err:
        write_playlist(target, [ranked("/m/a.flac")], title="x", overwrite=True)
    assert "\n" not in str(err.value)
    assert target.read_text() == "#EXTM3U\nold playlist\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.xspf"]


def test_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    # Simulated: the tests may run as root, who can write into a read-only folder.
    def denied(**kwargs):
        raise PermissionError(13, "Permission denied", kwargs["dir"])

    monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    with pytest.raises(PlaylistWriteError, match=r"\(Permission denied\): choose a writable folder with --out"):
        write_playlist(tmp_path / "p.xspf", [], title="x")
    assert not (tmp_path / "p.xspf").exists()


def test_unwritable_parent_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PlaylistWriteError, match="choose a writable folder with --out"):
        write_playlist(blocker / "p.xspf", [], title="x")
    with pytest.raises(PlaylistWriteError, match="unknown playlist format 'pls'"):
        write_playlist(tmp_path / "p.pls", [], title="x", fmt="pls")
    assert not Path(tmp_path / "p.pls").exists()


def test_vlc_plays_cue_segments_in_the_playlist_s_order(tmp_path):
    """VLC 3 (modules/demux/playlist/xspf.c) appends every track that carries a <vlc:id> after all the tracks that do
    not, in id order: a segment ranked first was played last (seen with cvlc 3.0.24). Read as VLC reads it, the order
    is the ranking's."""
    music = tmp_path / "music"
    tracks = [ranked(str(music / "medley.flac"), key=f"{music / 'medley.flac'}@{s:.3f}", start_s=s, duration_s=10.0,
                     title=f"part {s:g}") for s in (10.0, 20.0, 0.0)]
    tracks.insert(1, ranked(str(music / "plain.flac"), title="plain"))
    root = ET.parse(write_playlist(tmp_path / "cue.xspf", tracks, title="cue")).getroot()
    with_id, without_id = [], []
    for element in root.findall("x:trackList/x:track", NS):
        vlc_id = element.find("x:extension/vlc:id", NS)
        (without_id if vlc_id is None else with_id).append((int(vlc_id.text) if vlc_id is not None else 0, element))
    vlc_order = [e for _, e in without_id] + [e for _, e in sorted(with_id, key=lambda p: p[0])]
    assert [e.find("x:title", NS).text for e in vlc_order] == [t.title for t in tracks]
    starts = [[o.text for o in e.findall("x:extension/vlc:option", NS)][:1] for e in vlc_order]
    assert starts == [["start-time=10.000"], [], ["start-time=20.000"], ["start-time=0.000"]]


def test_a_playlist_never_replaces_a_file_of_the_library_or_of_the_index(tmp_path, monkeypatch):
    """The taste commands' guard is asked about the one destination, without a set of every path: a file only the
    player lists and a file only the index snapshot names are refused, by their path, through a link to them, and
    by another name of the same file (a hard link, as a bind mount would show it); other files are written."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.app.taste import taste_inputs
    from recsys.index.ann import LibraryVectors
    from recsys.library.catalogue import Catalogue
    from recsys.library.track import Track

    files = {}
    for name in ("player-only.flac", "index-only.flac", "both.flac"):
        files[name] = tmp_path / "music" / name
        files[name].parent.mkdir(exist_ok=True)
        files[name].write_bytes(b"fLaC " + name.encode())
    paths = [str(files["index-only.flac"]), str(files["both.flac"])]
    pq.write_table(pa.table({"key": paths, "path": paths}), tmp_path / "meta.parquet")
    lib = LibraryVectors(np.eye(2, 4, dtype=np.float32), pq.ParquetFile(tmp_path / "meta.parquet"), "enc", 1)
    catalogue = Catalogue.of([Track(path=str(files["player-only.flac"])), Track(path=str(files["both.flac"]))])

    def no_list(self, name):
        pytest.fail(f"the guard made the snapshot's {name} column a Python list")

    monkeypatch.setattr(LibraryVectors, "values", no_list)
    inputs = taste_inputs(None, [], catalogue, lib)  # no music folder: the file rule alone must hold
    (tmp_path / "elsewhere").mkdir()
    before = {p: p.read_bytes() for p in files.values()}
    for name, path in files.items():
        hard = tmp_path / "elsewhere" / name
        os.link(path, hard)
        (tmp_path / f"link-{name}").symlink_to(path)
        for target in (path, hard, tmp_path / f"link-{name}"):
            with pytest.raises(PlaylistWriteError, match="a music file of your library") as err:
                write_playlist(target, [ranked("/m/a.flac")], title="x", overwrite=True, inputs=inputs)
            assert "recsys never writes it" in str(err.value), target
    assert {p: p.read_bytes() for p in files.values()} == before
    copy = tmp_path / "copies" / "index-only.flac"  # the same name, another file: not the library's
    copy.parent.mkdir()
    copy.write_text("#EXTM3U\n")
    write_playlist(copy, [ranked("/m/a.flac")], title="x", fmt="m3u8", overwrite=True, inputs=inputs)
    write_playlist(tmp_path / "fine.xspf", [ranked("/m/a.flac")], title="x", inputs=inputs)
