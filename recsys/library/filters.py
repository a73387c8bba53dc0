"""Filters on candidate tracks: a small query language in the spirit of beets queries.

A filter is a list of terms, all of which must hold (AND)::

    genre:ambient              genre tag contains "ambient" (case- and accent-insensitive substring)
    artist:"boards of canada"  artist or album artist contains the words (quote a value with spaces)
    album:selected title:xtal  album / title contain the text
    year:1990..1999            a year range; also 1990.. (from), ..1999 (up to), 1995 (that year)
    rating:3..                 rated 3 stars or more (stars 0-5, halves allowed: rating:3.5..); rating:none = unrated
    played:0                   never played (play count; ranges as for year: played:5..)
    path:~/Music/Jazz          the file is inside this folder (a folder prefix, case-sensitive like the file system)
    tag:chill                  the sound carries the tag (the encoder's tag head: musicnn's 50 MSD tags)
    -genre:christmas           negation: any term prefixed with '-' (or '^', which no shell or option parser minds)
    aphex                      a bare word: artist, album or title contains it

A text term with an empty value (``genre:``) matches the tracks whose tag is empty. A track with no year never matches
``year:`` (so ``-year:1990..`` keeps it), an unrated one never matches ``rating:`` unless it is ``rating:none``.

A track has tag T (``tag:T``) when its probability of T is at or above T's threshold on this library: the 90th
percentile of T over the library's tracks (the top 10 % of the library for T), but never below an absolute floor of
0.1 and never above 0.5. Why: MusiCNN's sigmoid outputs are not calibrated per tag (common tags like "rock" sit near
0.3 on much of any library, rare ones like "metal" under 0.05 on most music), so one absolute threshold either tags
everything with "rock" or nothing with "metal"; a percentile alone would give 10 % of a library with no metal at all the
tag "metal", hence the floor; and a library where most tracks carry a tag confidently (p >= 0.5) keeps all of them,
hence the ceiling. A track stored without tags never has one (so ``-tag:T`` keeps it).

On the command line the terms are given to ``--where``, one string split like a shell would
(``--where 'genre:ambient -artist:enya'``), or one term per ``--where`` (repeatable). Why an option and not
positional arguments: click takes ``-genre:x`` for an unknown option when it stands alone, while the value of an
option is taken as it is; ``^genre:x`` is accepted everywhere for the same reason.

Text is compared in :func:`recsys.library.text.search_key` form (case, accents and punctuation ignored). numpy is
imported on first use: the CLI imports this module for :data:`HELP`.

The API is two calls: :func:`parse` turns terms into a :class:`Filter`, and :meth:`Filter.mask` gives a boolean array
over columns of tags (the index snapshot's columns, or :func:`track_columns` of ``Track`` records) with each row's
stars and play count; :meth:`Filter.matches` does the same for one track.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recsys.errors import RecsysError, shown
from recsys.library.text import search_key
from recsys.library.track import Track, is_under

if TYPE_CHECKING:
    import numpy as np

TEXT_FIELDS = ("artist", "album", "title", "genre")
RANGE_FIELDS = ("year", "rating", "played")
FIELDS = (*TEXT_FIELDS, *RANGE_FIELDS, "path", "tag")
TAGS = "tags"  # the column a tag: term reads: a TagScores
TAG_TOP_SHARE, TAG_FLOOR, TAG_CEILING = 0.10, 0.1, 0.5  # see the module docstring
BARE_FIELDS = ("artist", "album", "title")  # what a bare word is looked for in
# what mask() reads (albumartist optional)
COLUMNS = ("artist", "albumartist", "album", "title", "genre", "year", "path")
NEGATIONS = ("-", "^")

HELP = """Filter the candidates (repeatable; all terms must hold). Terms: genre:ambient, artist:"boards of canada",
album:X, title:X (substring, case- and accent-insensitive), year:1990..1999 (or 1990.., ..1999, 1995),
rating:3.. (stars; rating:none = unrated), played:0 (play count), path:~/Music/Jazz (folder), tag:chill (a tag the
sound carries: top 10 % of the library for it, probability at least 0.1; `recsys tags` lists them), a bare word
(artist, album or title); prefix a term with - or ^ to negate it: --where '-genre:christmas'."""


class FilterError(RecsysError):
    """A filter term that cannot be parsed; the message names the term and the valid fields."""


@dataclass(frozen=True)
class TagScores:
    """The tag probabilities of a set of tracks (N x T, NaN rows for tracks without tags) and the T tag names."""

    names: Sequence[str]
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.probs)

    def index(self, tag: str) -> int:
        """The column of ``tag`` (matched in :func:`tag_key` form), or a FilterError listing the tags."""
        wanted = tag_key(tag)
        for i, name in enumerate(self.names):
            if tag_key(name) == wanted:
                return i
        raise FilterError(f"unknown tag {shown(tag)}: the encoder's tags are {', '.join(self.names)}")

    def thresholds(self) -> np.ndarray:
        """Per tag, the probability at or above which a track of this library has it (module docstring)."""
        import numpy as np

        probs = np.asarray(self.probs, dtype=np.float32)
        known = probs[~np.isnan(probs).any(axis=1)] if len(probs) else probs
        if len(known) == 0:
            return np.full(len(self.names), TAG_CEILING, np.float32)
        top = np.quantile(known, 1.0 - TAG_TOP_SHARE, axis=0)
        return np.clip(top, TAG_FLOOR, TAG_CEILING).astype(np.float32)

    def has(self, tag: str) -> np.ndarray:
        """Which tracks have ``tag``: a boolean per row."""
        import numpy as np

        i = self.index(tag)
        column = np.asarray(self.probs[:, i], dtype=np.float32)
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(column, nan=-1.0) >= self.thresholds()[i]


def tag_key(tag: str) -> str:
    """How a tag is matched: search_key with underscores as spaces ("Hip-Hop" = hip_hop = "hip hop")."""
    return search_key(tag.replace("_", " "))


@dataclass(frozen=True)
class Term:
    """One condition: a field (or ``''`` for a bare word), its value, and whether it is negated."""

    field: str
    text: str = ""  # normalised text for text fields and bare words, the absolute folder for path
    low: float | None = None  # inclusive range for year/rating/played; None = open
    high: float | None = None
    none: bool = False  # rating:none
    negate: bool = False
    source: str = ""  # the term as written, for messages

    def test(self, columns: Mapping[str, Sequence], stars: Sequence[float | None], plays: Sequence[int],
             n: int) -> np.ndarray:
        hit = self._hit(columns, stars, plays, n)
        return ~hit if self.negate else hit

    def _hit(self, columns: Mapping[str, Sequence], stars: Sequence[float | None], plays: Sequence[int],
             n: int) -> np.ndarray:
        import numpy as np  # on first use: the CLI imports this module for its --help text

        if self.field in ("", *TEXT_FIELDS):
            names = BARE_FIELDS if self.field == "" else ("artist", "albumartist") if self.field == "artist" \
                else (self.field,)
            present = [columns[name] for name in names if columns.get(name) is not None]
            if not self.text:  # field: (empty) means that tag is empty (for artist: the album artist too)
                return np.logical_and.reduce([_contains(v, "") for v in present]) if present \
                    else np.ones(n, dtype=bool)
            return np.logical_or.reduce([_contains(v, self.text) for v in present]) if present \
                else np.zeros(n, dtype=bool)
        if self.field == "tag":
            scores = columns.get(TAGS)
            if not isinstance(scores, TagScores):
                raise FilterError(f"filter {shown(self.source)} needs tags from the sound, and this index holds none: "
                                  "embed with an encoder that has a tag head (--encoder musicnn) and run `recsys "
                                  "embed` again")
            return scores.has(self.text)
        if self.field == "path":
            return np.fromiter((_inside(p, self.text) for p in _column(columns, "path", n)), dtype=bool, count=n)
        values = _column(columns, "year", n) if self.field == "year" else stars if self.field == "rating" else plays
        if self.none:
            return np.fromiter((v is None for v in values), dtype=bool, count=n)
        return np.fromiter((v is not None and (self.low is None or v >= self.low)
                            and (self.high is None or v <= self.high) for v in values), dtype=bool, count=n)


@dataclass(frozen=True)
class Filter:
    """Terms that must all hold; an empty filter keeps every track."""

    terms: tuple[Term, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.terms)

    def __str__(self) -> str:
        return " ".join(t.source for t in self.terms)

    def mask(self, columns: Mapping[str, Sequence], stars: Sequence[float | None] | None = None,
             plays: Sequence[int] | None = None) -> np.ndarray:
        """Which rows pass: ``columns`` maps names of :data:`COLUMNS` to equal-length sequences (missing text columns
        count as empty), ``stars`` (0-5 or None when unrated) and ``plays`` are per row (default: unrated, unplayed)."""
        n = len(next(iter(columns.values()))) if columns else len(stars or plays or ())
        import numpy as np

        stars = [None] * n if stars is None else stars
        plays = [0] * n if plays is None else plays
        keep = np.ones(n, dtype=bool)
        for term in self.terms:
            keep &= term.test(columns, stars, plays, n)
        return keep

    @property
    def needs_taste(self) -> bool:
        """Whether a term reads the owner's ratings or plays (so the player database must be read)."""
        return any(t.field in ("rating", "played") for t in self.terms)

    @property
    def columns(self) -> set[str]:
        """The tag columns the terms read (so a snapshot reads only those)."""
        names = {"": BARE_FIELDS, "artist": ("artist", "albumartist"), "tag": (TAGS,)}
        return {c for t in self.terms if t.field not in ("rating", "played") for c in names.get(t.field, (t.field,))}

    def matches(self, track: object, stars: float | None = None, plays: int = 0) -> bool:
        """Whether one track passes; ``track`` is anything with the attributes of :data:`COLUMNS` (e.g. ``Track``)."""
        return bool(self.mask(track_columns([track]), [stars], [plays])[0])


def candidate_mask(flt: Filter, keys: Sequence[str], column: Callable[[str], Sequence | None],
                   tracks: Sequence[Track] = ()) -> np.ndarray:
    """``flt`` over rows named by ``keys`` (an index snapshot's rows): ``column(name)`` gives a tag column (None when
    the rows have none, e.g. ``lambda c: lib.values(c) if c in lib.column_names else None``), ``tracks`` the library
    with the owner's ratings and plays, matched to the rows by key (a row no track names is unrated, unplayed)."""
    columns = {name: values for name in sorted(flt.columns) if (values := column(name)) is not None}
    if not flt.needs_taste:
        return flt.mask(columns or {"key": keys})
    by_key = {t.key: t for t in tracks}
    known = [by_key.get(k) for k in keys]
    return flt.mask(columns or {"key": keys}, [t.stars if t else None for t in known],
                    [t.playcount if t else 0 for t in known])


def selected_mask(flt: Filter, keys: Sequence[str], column: Callable[[str], Sequence | None],
                  tracks: Sequence[Track] = ()) -> np.ndarray:
    """:func:`candidate_mask`, refusing a filter that selects no track at all with one line naming its terms: that
    is what went wrong, whatever else (ratings, caps, the evidence rule) would have removed, so `playlist`,
    `similar`, `radio` and `map` say it in these same words."""
    mask = candidate_mask(flt, keys, column, tracks)
    if not mask.any():
        raise FilterError(f"no embedded track matches --where '{flt}': loosen the terms (`--help` lists them; "
                          "`recsys tags TRACK` the tags a track has), or embed that music first")
    return mask


def snapshot_column(lib: object) -> Callable[[str], Sequence | None]:
    """The ``column`` argument of :func:`candidate_mask` for an index snapshot (``LibraryVectors``)."""
    names = set(lib.column_names)  # type: ignore[attr-defined]

    def column(name: str) -> Sequence | TagScores | None:
        if name == TAGS:
            probs = getattr(lib, "tags", None)
            return None if probs is None else TagScores(lib.tag_names, probs)  # type: ignore[attr-defined]
        return lib.values(name) if name in names else None  # type: ignore[attr-defined]

    return column


def track_columns(tracks: Sequence[object]) -> dict[str, list]:
    """The columns :meth:`Filter.mask` reads, from records with those attributes (``Track``)."""
    return {name: [getattr(t, name, None) for t in tracks] for name in COLUMNS}


def parse(terms: str | Sequence[str]) -> Filter:
    """Parse terms (a string is split like a shell line; each item of a sequence is split the same way)."""
    words: list[str] = []
    for item in [terms] if isinstance(terms, str) else terms:
        try:
            words.extend(shlex.split(item))
        except ValueError as exc:  # an unclosed quote
            raise FilterError(f"filter {shown(item)} cannot be read ({exc}): close the quote") from None
    return Filter(tuple(_term(w) for w in words))


def _term(word: str) -> Term:
    negate = word[:1] in NEGATIONS and len(word) > 1
    body = word[1:] if negate else word
    field, sep, value = body.partition(":")
    if not sep:
        if not search_key(body):
            raise FilterError(f"filter {shown(word)} has no letters or digits to look for: give a word, or a field "
                              f"such as genre:ambient (fields: {', '.join(FIELDS)})")
        return Term("", text=search_key(body), negate=negate, source=word)
    field = field.lower()
    if field not in FIELDS:
        raise FilterError(f"unknown filter field {shown(field)} in {shown(word)}: valid fields are {', '.join(FIELDS)} "
                          "(or a bare word, matched against artist, album and title)")
    if field in TEXT_FIELDS:
        return Term(field, text=search_key(value), negate=negate, source=word)
    if field == "tag":
        if not tag_key(value):
            raise FilterError(f"filter {shown(word)} needs a tag: e.g. tag:chill (`recsys tags TRACK` lists them)")
        return Term(field, text=value, negate=negate, source=word)
    if field == "path":
        if not value:
            raise FilterError(f"filter {shown(word)} needs a folder: e.g. path:~/Music/Jazz")
        return Term(field, text=os.path.abspath(os.path.expanduser(value)), negate=negate, source=word)
    if field == "rating" and value.lower() == "none":
        return Term(field, none=True, negate=negate, source=word)
    low, high = _range(word, field, value)
    return Term(field, low=low, high=high, negate=negate, source=word)


def _range(word: str, field: str, value: str) -> tuple[float | None, float | None]:
    example = {"year": "1990..1999, 1990.., ..1999 or 1995", "rating": "3.., 2..4, 5 or none",
               "played": "0, 5.. or ..2"}[field]
    low_text, dots, high_text = value.partition("..")
    try:
        low = float(low_text) if low_text else None
        high = (float(high_text) if high_text else None) if dots else low
    except ValueError:
        low = high = None
        dots = "bad"
    if any(v is not None and not math.isfinite(v) for v in (low, high)):  # nan matches nothing, inf everything
        dots = "bad"
    if dots == "bad" or (low is None and high is None) or (low is not None and high is not None and low > high):
        raise FilterError(f"bad value {shown(value)} in filter {shown(word)}: {field} takes a number or a range, "
                          f"e.g. {example}")
    if field == "rating" and any(v is not None and not 0 <= v <= 5 for v in (low, high)):
        raise FilterError(f"bad value {shown(value)} in filter {shown(word)}: ratings are stars from 0 to 5")
    return low, high


def _column(columns: Mapping[str, Sequence], name: str, n: int) -> Sequence:
    values = columns.get(name)
    return [None] * n if values is None else values


def _contains(values: Sequence, text: str) -> np.ndarray:
    import numpy as np

    if text == "":
        return np.fromiter((not v or not search_key(str(v)) for v in values), dtype=bool, count=len(values))
    return np.fromiter((bool(v) and text in search_key(str(v)) for v in values), dtype=bool, count=len(values))


def _inside(path: str | None, folder: str) -> bool:
    return bool(path) and is_under(path, folder)
