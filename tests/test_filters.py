"""The candidate filter language: every field, ranges, negation, quoting, accents, and one-line errors."""

from __future__ import annotations

import pytest

from recsys.library.filters import FilterError, parse, track_columns
from recsys.library.track import Track

TRACKS = [
    Track(path="/m/Jazz/Miles/kind.flac", artist="Miles Davis", album="Kind of Blue", title="So What", genre="Jazz",
          year=1959),
    Track(path="/m/Electronic/BoC/roygbiv.flac", artist="Boards of Canada", albumartist="Boards of Canada",
          album="Music Has the Right to Children", title="Roygbiv", genre="Electronic; Ambient", year=1998),
    Track(path="/m/Electronic/Björk/joga.flac", artist="Björk", album="Homogenic", title="Jóga", genre="Electronic",
          year=1997),
    Track(path="/m/Xmas/carol.mp3", artist="Choir", album="Christmas Carols", title="Silent Night",
          genre="Christmas"),
    Track(path="/m/Jazz-fusion/x.flac", title="untagged year", albumartist="Various Artists"),
]
STARS = [5.0, 4.0, None, 1.0, 3.5]
PLAYS = [12, 0, 3, 0, 1]


def titles(terms) -> list[str]:
    keep = parse(terms).mask(track_columns(TRACKS), STARS, PLAYS)
    return [t.title for t, k in zip(TRACKS, keep, strict=True) if k]


def test_text_fields_are_case_and_accent_insensitive_substrings():
    assert titles("genre:AMBIENT") == ["Roygbiv"]
    assert titles("artist:bjork") == ["Jóga"]
    assert titles("title:joga") == ["Jóga"]
    assert titles('artist:"boards of canada"') == ["Roygbiv"]
    assert titles("album:blue") == ["So What"]
    assert titles("artist:various") == ["untagged year"]  # the album artist counts as the artist


def test_bare_words_match_artist_album_or_title():
    assert titles("silent") == ["Silent Night"]
    assert titles("homogenic") == ["Jóga"]
    assert titles("jazz") == []  # a genre is not looked for by a bare word


def test_year_ranges():
    assert titles("year:1990..1999") == ["Roygbiv", "Jóga"]
    assert titles("year:1998..") == ["Roygbiv"]
    assert titles("year:..1960") == ["So What"]
    assert titles("year:1997") == ["Jóga"]
    assert titles("-year:1990..") == ["So What", "Silent Night", "untagged year"]  # no year: not in the range


def test_rating_played_and_path():
    assert titles("rating:3..") == ["So What", "Roygbiv", "untagged year"]
    assert titles("rating:3.5..4") == ["Roygbiv", "untagged year"]
    assert titles("rating:none") == ["Jóga"]
    assert titles("played:0") == ["Roygbiv", "Silent Night"]
    assert titles("played:3..") == ["So What", "Jóga"]
    assert titles("path:/m/Jazz") == ["So What"]  # a folder: /m/Jazz-fusion is not inside /m/Jazz
    assert titles("path:/m/Jazz/") == ["So What"]


def test_negation_and_and():
    assert titles("-genre:christmas") == ["So What", "Roygbiv", "Jóga", "untagged year"]
    assert titles("^genre:christmas genre:electronic") == ["Roygbiv", "Jóga"]
    assert titles(["genre:electronic", "-artist:bjork", "year:1990..1999"]) == ["Roygbiv"]
    assert titles("genre:") == ["untagged year"]  # an empty value: the tag is empty
    assert titles([]) == [t.title for t in TRACKS] and not parse([])


def test_matches_one_track_and_columns_without_albumartist():
    f = parse("artist:miles rating:4..")
    assert f.matches(TRACKS[0], 5.0, 0) and not f.matches(TRACKS[0], 3.0, 0) and not f.matches(TRACKS[1], 5.0, 0)
    columns = {"artist": ["A", "B"], "title": ["x", "y"], "year": [2000, None], "path": ["/a", "/b"]}
    assert list(parse("artist:b").mask(columns)) == [False, True]
    assert list(parse("year:2000 played:0").mask(columns)) == [True, False]


@pytest.mark.parametrize("terms, message", [
    ("colour:red", "unknown filter field 'colour' in 'colour:red': valid fields are artist, album, title, genre, "
                   "year, rating, played, path"),
    ("year:199x", "bad value '199x' in filter 'year:199x': year takes a number or a range"),
    ("year:2000..1990", "bad value '2000..1990'"),
    ("year:..", "bad value '..'"),
    ("rating:7", "ratings are stars from 0 to 5"),
    ("played:lots", "played takes a number or a range"),
    ("path:", "needs a folder"),
    ('artist:"open', "cannot be read"),
    ("-", "has no letters or digits"),
])
def test_errors_are_one_line_naming_the_term(terms, message):
    with pytest.raises(FilterError) as err:
        parse(terms)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_candidate_mask_over_snapshot_rows_joins_the_library_by_key():
    from recsys.library.filters import candidate_mask

    keys = [t.key for t in TRACKS] + ["/m/not-in-library.flac"]
    columns = {name: [getattr(t, name) for t in TRACKS] + [""] for name in ("artist", "album", "title", "genre")}
    library = [Track(path=t.path, rating=None if s is None else s / 5, playcount=p)
               for t, s, p in zip(TRACKS, STARS, PLAYS, strict=True)]
    f = parse("played:0 -genre:christmas")
    assert f.needs_taste and f.columns == {"genre"}
    assert list(candidate_mask(f, keys, columns.get, library)) == [False, True, False, False, False, True]
    assert list(candidate_mask(parse("rating:4.."), keys, columns.get, library)) == [True, True] + [False] * 4
    assert not parse("genre:x").needs_taste
