"""`recsys tags`: the tags a track's sound carries, from the encoder's tag head (musicnn: MSD's 50 last.fm tags).

Reads the index snapshot only (``tags.npy`` beside the vectors): no torch, no lancedb. A tag is shown as the track's
when its probability reaches that tag's threshold on this library (``recsys.library.filters.TagScores``), the same
rule ``--where tag:`` selects by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.index.ann import LibraryVectors, current_snapshot
from recsys.index.lookup import Hit, hit, resolve_query
from recsys.library.filters import TagScores


@dataclass
class TagProbability:
    tag: str
    probability: float
    has: bool  # at or above the tag's threshold on this library (what --where tag: selects)
    threshold: float

    def as_json(self) -> dict:
        return {"tag": self.tag, "probability": round(self.probability, 4), "has": self.has,
                "threshold": round(self.threshold, 4)}


@dataclass
class TrackTags:
    track: Hit
    tags: list[TagProbability]  # every tag, most probable first
    note: str | None = None


def library_tags(settings: Settings, lib: LibraryVectors) -> TagScores:
    """The snapshot's tag scores, or a one-line error when its encoder has no tag head."""
    if lib.tags is None or not lib.tag_names:
        raise RecsysError(f"the index in {settings.home_path} holds no tags from the sound: its encoder "
                          f"({lib.encoder_id}) has no tag head (or it was embedded before tags were kept); "
                          "`recsys embed --encoder musicnn` stores them")
    return TagScores(lib.tag_names, lib.tags)


def track_tags(settings: Settings, query: str) -> TrackTags:
    """Every tag of the track ``query`` names (as for `recsys similar`) with its probability, most probable first."""
    lib = current_snapshot(settings.home_path, settings.index)
    scores = library_tags(settings, lib)
    row = resolve_query(lib, query)
    probs = np.asarray(lib.tags[row], dtype=np.float32)
    track = hit(lib, row, 1.0)
    if np.isnan(probs).any():
        raise RecsysError(f"{track.path} was stored without tags (embedded before tags were kept): run `recsys "
                          "embed` to embed it again")
    thresholds = scores.thresholds()
    order = np.argsort(-probs, kind="stable")
    tags = [TagProbability(lib.tag_names[i], float(probs[i]), bool(probs[i] >= thresholds[i]), float(thresholds[i]))
            for i in order]
    return TrackTags(track=track, tags=tags, note=lib.behind)
