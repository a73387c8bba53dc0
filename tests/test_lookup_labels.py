"""Every label recsys prints finds its track again, and a path that does not exist is said to be missing."""

from __future__ import annotations

import subprocess
import sys

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


def _snapshot(tmp_path, with_search_column: bool, rows=ROWS) -> LibraryVectors:
    artists, titles, paths, starts = (list(c) for c in zip(*rows, strict=True))
    keys = [p if not s else f"{p}@{s:.3f}" for p, s in zip(paths, starts, strict=True)]
    columns = {"key": keys, "path": paths, "start_s": starts, "artist": artists, "title": titles,
               "album": [""] * len(keys)}
    if with_search_column:
        columns[SEARCH_COLUMN] = [search_label(*row) for row in rows]
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


def _by_the_rules(labels: list[str], query: str) -> list[int]:
    """The rows the text rules pick, one Python string per label: the label itself, else every word, else a
    substring, else close spellings (the module docstring's rules, as they were written before the column search)."""
    import difflib

    from recsys.library.text import search_key

    wanted = search_key(query)
    exact = [i for i, label in enumerate(labels) if label == wanted]
    rows = exact or [i for i, label in enumerate(labels) if all(t in label.split() for t in wanted.split())]
    rows = rows or [i for i, label in enumerate(labels) if wanted in label]
    if not rows:
        close = difflib.get_close_matches(wanted, labels, n=5, cutoff=0.6)
        rows = sorted({i for i, label in enumerate(labels) if label in close})
    return rows


WORDY = [  # labels where word, prefix and substring rules part ways; accents, case, CJK and a CUE segment
    ("Band", "Song", "/w/a.flac", 0.0), ("Band", "Song 2", "/w/b.flac", 0.0), ("Band", "Songs", "/w/c.flac", 0.0),
    ("The Band", "Long Song", "/w/d.flac", 0.0), ("Björk", "Jóga", "/w/e.flac", 0.0),
    ("BJORK", "joga", "/w/f.flac", 0.0), ("東京事変", "群青日和", "/w/g.flac", 0.0),
    ("Анна", "Песня 5", "/w/h.flac", 0.0), ("AC/DC", "Back in Black", "/w/i", 0.0),
    ("", "", "/w/live.flac", 0.0), ("", "", "/w/live.flac", 61.0), ("Band", "Song", "/w/copy/a.flac", 0.0),
    ("Sonic Band", "xsong", "/w/j.flac", 0.0), ("Band", "Song_2", "/w/k.flac", 0.0),
]


@pytest.mark.parametrize("query", [
    "Band - Song", "band song", "song band", "Song", "Songs", "song 2", "ong", "band s", "Bjork - Joga", "björk",
    "JÓGA", "東京事変", "群青", "анна песня", "песня 5", "AC/DC - Back in Black", "ac dc", "back in", "in black",
    "live", "live flac 01 01", "Sonic", "son", "xsong", "song_2", "Baand - Songg", "Bnd Sng", "zzzzzz", "2",
])
def test_the_column_search_picks_what_the_rules_pick(tmp_path, query):
    """The text rules run in the label column's Arrow buffers now: every rule, with its ties, picks the rows the
    rules say (one match: that row; several: all of them, listed; none: not found)."""
    lib = _snapshot(tmp_path, with_search_column=True, rows=WORDY)
    expected = _by_the_rules([search_label(*row) for row in WORDY], query)
    if len(expected) == 1:
        assert resolve_query(lib, query) == expected[0]
    elif expected:
        with pytest.raises(AmbiguousQuery, match=f"matches {len(expected)} tracks") as info:
            resolve_query(lib, query)
        assert [f"[{lib.row(i)['key']}]" in str(info.value) for i in expected] == [True] * len(expected)
    else:
        with pytest.raises(TrackNotFound, match="no embedded track matches"):
            resolve_query(lib, query)


def test_a_query_by_name_path_or_key_reads_no_column_as_python_strings(tmp_path, monkeypatch):
    """At a million tracks a Python string per row cost more than the whole of `recsys similar` may take: the
    lookup compares in the columns' Arrow buffers."""
    lib = _snapshot(tmp_path, with_search_column=True, rows=WORDY)

    def refuse(self, name):
        pytest.fail(f"the lookup made the column {name} a list of Python strings")

    monkeypatch.setattr(LibraryVectors, "values", refuse)
    assert resolve_query(lib, "Band - Song 2") == 1
    assert resolve_query(lib, "long song band") == 3
    assert resolve_query(lib, "/w/e.flac") == 4
    assert resolve_query(lib, "file:///w/g.flac") == 6
    assert resolve_query(lib, "/w/live.flac@61.000") == 10


def test_similar_imports_no_pandas(tmp_path):
    """``pa.array`` of Python strings and numpy views of Arrow columns import pandas (~0.3 s of a query that must
    answer in 0.5 s): the lookup builds its Arrow values from bytes."""
    lib_dir = tmp_path / "snap"
    lib_dir.mkdir()
    _snapshot(lib_dir, with_search_column=True, rows=WORDY)
    code = ("import sys, numpy as np, pyarrow.parquet as pq\n"
            "from recsys.index.ann import LibraryVectors\n"
            "import recsys.app.similar\n"
            "from recsys.index.lookup import resolve_query\n"
            f"lib = LibraryVectors(np.eye(14, 8, dtype=np.float32), pq.ParquetFile({str(lib_dir / 'meta.parquet')!r}),"
            " 'enc', 1)\n"
            "rows = [resolve_query(lib, q) for q in ('Band - Song 2', 'long song', '/w/e.flac', 'Анна - Пессня 5')]\n"
            "print(rows, 'pandas' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 3, 4, 7] False", done.stdout
