"""Every label recsys prints finds its track again, and a path that does not exist is said to be missing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.index.ann import SEARCH_COLUMN, LibraryVectors
from recsys.index.lookup import AmbiguousQuery, TrackNotFound, hit, resolve_query
from recsys.library.text import search_label

ARTIST = 'Firstname "Nick" Lastname'
ROWS = [  # (artist, title, path, start_s): the untitled files beside tagged, untagged and CUE tracks
    *[(ARTIST, "", f"/m/nick/Nick-Battle0{i}.ogg", 0.0) for i in (1, 3, 4, 5)],
    (ARTIST, "", "/m/copies/Nick-Battle01.ogg", 0.0),
    ("Band", "Song", "/m/band/song.flac", 0.0),
    ("", "", "/m/loose/untagged-thing.mp3", 0.0),
    ("", "", "/m/live/concert.flac", 0.0),
    ("", "", "/m/live/concert.flac", 312.5),
]


def _snapshot(tmp_path, with_search_column: bool) -> LibraryVectors:
    artists, titles, paths, starts = (list(c) for c in zip(*ROWS, strict=True))
    keys = [p if not s else f"{p}@{s:.3f}" for p, s in zip(paths, starts, strict=True)]
    columns = {"key": keys, "path": paths, "start_s": starts, "artist": artists, "title": titles,
               "album": [""] * len(keys)}
    if with_search_column:
        columns[SEARCH_COLUMN] = [search_label(*row) for row in ROWS]
    pq.write_table(pa.table(columns), tmp_path / "meta.parquet")
    vectors = np.eye(len(keys), 8, dtype=np.float32)
    return LibraryVectors(vectors, pq.ParquetFile(tmp_path / "meta.parquet"), "enc", 1)


@pytest.mark.parametrize("with_search_column", [True, False])
def test_every_printed_label_finds_its_track(tmp_path, with_search_column):
    lib = _snapshot(tmp_path, with_search_column)
    for row in range(len(ROWS)):
        label = hit(lib, row, 0.0).label
        if row in (0, 4):  # two copies of Nick-Battle01 share a label: the lookup lists both, with their keys
            with pytest.raises(AmbiguousQuery, match="matches 2 tracks"):
                resolve_query(lib, label)
            continue
        assert resolve_query(lib, label) == row, label


@pytest.mark.parametrize("query", ["Battle03", "Nick-Battle03", "Lastname - Battle03", "nick battle03 ogg"])
def test_an_untitled_track_is_found_by_its_file_name_next_to_its_artist(tmp_path, query):
    lib = _snapshot(tmp_path, with_search_column=True)
    assert resolve_query(lib, query) == 1


def test_a_path_that_does_not_exist_is_named_as_missing(tmp_path):
    lib = _snapshot(tmp_path, with_search_column=True)
    nowhere = tmp_path / "nope" / "song.flac"
    with pytest.raises(TrackNotFound, match="does not exist") as info:
        resolve_query(lib, str(nowhere))
    assert str(nowhere) in str(info.value)


def test_a_folder_is_named_as_a_folder_not_as_a_track_to_embed(tmp_path):
    """By hand: `similar ~/Music/Album` said "not in the index: run `recsys embed`", which embedding never fixes."""
    lib = _snapshot(tmp_path, with_search_column=True)
    folder = tmp_path / "Album"
    folder.mkdir()
    with pytest.raises(TrackNotFound, match="is a folder") as info:
        resolve_query(lib, str(folder))
    assert "recsys embed" not in str(info.value)
