"""The one URI rule (recsys/library/uri.py): local hosts only, bytes decoded as file names, its inverse, and the
lookup of `recsys similar file://...` through it, on a real snapshot."""

from __future__ import annotations

import os

import numpy as np
import pytest

from recsys.index.ann import build_snapshot, load_snapshot
from recsys.index.lookup import TrackNotFound, resolve_query
from recsys.index.store import TrackRow, TrackStore
from recsys.library.sources.clementine import location_path
from recsys.library.uri import path_to_uri, uri_to_path
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
