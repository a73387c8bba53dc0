"""The one URI rule (recsys/library/uri.py): local hosts only, bytes decoded as file names, its inverse, and the
lookup of `recsys similar file://...` through it, on a real snapshot."""

from __future__ import annotations

import os

import numpy as np
import pytest

from recsys.index.ann import build_snapshot, load_snapshot
from recsys.index.lookup import TrackNotFound, resolve_query
from recsys.index.store import TrackRow, TrackStore
from recsys.library.sources.clementine import location_path, location_paths
from recsys.library.uri import path_to_uri, uri_to_path, uri_to_paths
from recsys.player.mpris import local_path

LATIN1 = os.fsdecode(b"/m/caf\xe9.flac")  # what os.listdir and the player readers give for that file


@pytest.mark.parametrize("uri, path", [
    ("file:///m/caf%C3%A9.flac", "/m/café.flac"),
    ("file:///m/caf%E9.flac", LATIN1),
    (b"file:///m/caf%E9.flac", LATIN1),
    (b"file:///m/caf\xe9.flac", LATIN1),
    ("file://localhost/m/a%20b.flac", "/m/a b.flac"),
    ("file://LOCALHOST/m/x.flac", "/m/x.flac"),
    ("file:/m/x.flac", "/m/x.flac"),
    ("file:///m/a.flac?x=1#y", "/m/a.flac"),
    ("file://otherhost/m/x.flac", None),
    ("http://host/m/x.flac", None),
    ("file:m/x.flac", None),
])
def test_one_decoder_for_every_reader(uri, path):
    assert uri_to_path(uri) == path
    assert location_path(uri) == path  # the Clementine/Strawberry rows
    if isinstance(uri, str) and uri.startswith("file://"):
        assert local_path(uri) == path  # MPRIS


@pytest.mark.parametrize("path", ["/m/café.flac", LATIN1, "/m/a b/#1 100%?.flac", "/m/\"'&<>.ogg"])
def test_path_to_uri_round_trips(path):
    uri = path_to_uri(path)
    assert uri.isascii() and " " not in uri and "#" not in uri and "?" not in uri
    assert uri_to_path(uri) == path


def _column(seed: int, n: int) -> list:
    """Random locations of every shape: usual and not, bytes, text and None, escapes valid and not."""
    rng = np.random.default_rng(seed)
    parts = ["a", "/", "%", "%4", "%41", "%e9", "%C3%A9", "%00", "%0A", "%0a", "?", "#", " ", "\t", "\n", "é", "東",
             "%ZZ", "%%", "\x7f", "\x01", ";", "%FF", "%c3", "%a9", "%2F", "%25"]
    heads = ["file:///", "file:///", "file:///", "file://localhost/", "file://host/", "http://x/", "/", "FILE:///",
             "file:", ""]
    out: list = []
    for _ in range(n):
        body = "".join(parts[i] for i in rng.integers(len(parts), size=rng.integers(9)))
        uri = heads[rng.integers(len(heads))] + body
        out.append(uri.encode("utf-8", "surrogateescape") if rng.random() < 0.5 else uri)
    return [*out, None, b"file:///", "file:///", b"file:///a%2", b"file:///a%", b"/bare/caf\xe9", "/bare/x"]


@pytest.mark.parametrize("seed", range(4))
def test_the_column_rule_is_the_row_rule(seed):
    """uri_to_paths (a player database's million locations at once) gives what uri_to_path gives row by row, for
    every shape of location; so does the readers' location_paths against location_path."""
    column = _column(seed, 3000)
    assert uri_to_paths(column) == [None if u is None else uri_to_path(u) for u in column]
    assert location_paths(column) == [location_path(u) for u in column]
    usual = [path_to_uri(p).encode() for p in ("/m/café/01 a b.flac", "/m/東京/x%.flac", "/m/plain.flac")]
    assert uri_to_paths(usual) == ["/m/café/01 a b.flac", "/m/東京/x%.flac", "/m/plain.flac"]  # all in bulk
    assert uri_to_paths([b"file:///m/caf%E9.flac", b"file:///m/ok"]) == [LATIN1, "/m/ok"]  # not UTF-8: per row
    assert uri_to_paths([]) == [] and uri_to_paths([None]) == [None]


def test_a_nul_byte_is_decoded_for_the_row_to_reject():
    """``%00`` names no file: the decoder returns it as it is (the readers report that row), it never raises."""
    assert uri_to_path("file:///m/a%00b.flac") == "/m/a\0b.flac"


def test_similar_by_uri_names_the_files_the_readers_name(tmp_path):
    """On main lookup decoded UTF-8 only (``caf%E9`` became ``caf\\ufffd``, another file's name) and took any host
    (``file://otherhost/m/t1.flac`` found the local /m/t1.flac)."""
    vectors = np.eye(4, dtype=np.float32)
    paths = ["/m/t0.flac", "/m/café.flac", "/m/a b#.flac", "/m/t3.flac"]
    store = TrackStore.open(tmp_path)
    store.upsert([TrackRow(key=p, path=p, start_s=0.0, content_id=f"c{i}", size=i, mtime_ns=i, duration_s=10.0,
                           artist="a", album="b", title=f"t{i}", genre="", year=None, track_number=None,
                           encoder_id="enc", vector=v) for i, (p, v) in enumerate(zip(paths, vectors, strict=True))])
    build_snapshot(store, tmp_path, "enc")
    lib = load_snapshot(tmp_path)
    assert resolve_query(lib, "file:///m/caf%C3%A9.flac") == 1
    assert resolve_query(lib, "file://localhost/m/a%20b%23.flac") == 2
    with pytest.raises(TrackNotFound, match="names no local file"):
        resolve_query(lib, "file://otherhost/m/t0.flac")
    with pytest.raises(TrackNotFound) as missing:
        resolve_query(lib, "file:///m/caf%E9.flac")
    assert LATIN1 in str(missing.value) and "not valid UTF-8" in str(missing.value)
