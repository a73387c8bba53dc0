"""The one place where tag and query text is normalised, under two documented rules.

- :func:`tag_key`, for *grouping* (album and artist caps, same-title duplicates, album/artist labels of the
  retrieval metrics, rating groups): Unicode NFKC (full-width and compatibility forms fold to their plain letters),
  ``casefold`` (case-insensitive, ß = ss), every run of white space one space, no leading or trailing space.
  Punctuation and accents are kept: "Café" and "Cafe" are two albums, "AC/DC" is not "ACDC".
- :func:`search_key`, for *loose matching* of what a person types (`recsys similar "artist - title"`, ``--seed``):
  ``casefold``, accents stripped (NFKD, combining marks dropped), every run of non-word characters one space.
  "Björk - Jóga" finds "bjork joga". :func:`search_label` is what a track is matched against.

The two differ on purpose: grouping must not merge what the owner's tags keep apart; matching must forgive what a
person cannot type.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from recsys.library.track import display_label

_NON_WORD = re.compile(r"[^\w]+")


@lru_cache(maxsize=1 << 17)
def tag_key(text: str | None) -> str:
    """Case-, width- and space-insensitive form of a tag, for grouping and caps ('' for None). Remembered: a
    playlist asks for the same few thousand album and artist names (a compilation's album artist on each of its
    tracks) tens of thousands of times."""
    return " ".join(unicodedata.normalize("NFKC", text or "").casefold().split())


def search_key(text: str) -> str:
    """Case-, accent- and punctuation-insensitive form for loose matching."""
    text = text.casefold()
    if not text.isascii():  # accents to strip; ASCII labels skip this (5x faster over 100,000 labels)
        text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return " ".join(_NON_WORD.sub(" ", text).split())


def search_label(artist: str | None, title: str | None, path: str, start_s: float = 0.0) -> str:
    """What a text query is matched against: the label recsys shows for the track (``display_label``: 'artist -
    title', the file name for what the tags leave out), made loose, so every label recsys prints finds its track."""
    return search_key(display_label(artist, title, path, start_s))
