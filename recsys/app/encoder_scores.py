"""An encoder's retrieval scores on the user's tracks, shared by `recsys eval` and `recsys train-encoder`.

Vectors come from the cheapest honest source: the table when it holds the encoder's rows, else the encoder runs over
decoded crops (exactly what `recsys embed` would store) in a temporary table. Encoders compared in one call are scored
on the same tracks (those every one of them has).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.config import Settings
from recsys.embedder.active import ResolvedEncoder
from recsys.embedder.decoding import decode_spec, default_workers
from recsys.errors import RecsysError
from recsys.index.retrieval import retrieval_metrics
from recsys.index.store import TrackStore
from recsys.library.track import Track
from recsys.pipeline.run import embed_tracks
from recsys.recommender.persistence import finite

TABLE = "table"


class EvalError(RecsysError):
    """Nothing to evaluate, or no tags to evaluate with."""


@dataclass
class Rows:
    """Vectors by track key with the tags and content ids the metrics need."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    album: dict[str, str] = field(default_factory=dict)
    artist: dict[str, str] = field(default_factory=dict)
    content_id: dict[str, str] = field(default_factory=dict)


@dataclass
class Score:
    spec: str
    label: str
    encoder_id: str
    source: str
    metrics: dict[str, float | int]

    @property
    def comparable(self) -> bool:
        """False when no track has a same-album partner: the tags cannot judge this library."""
        return not math.isnan(float(self.metrics["album_p10"]))

    def as_json(self) -> dict:
        return {"encoder": self.spec, "label": self.label, "encoder_id": self.encoder_id, "source": self.source,
                **finite(dict(self.metrics))}


def table_rows(store: TrackStore, eid: str) -> Rows:
    meta, vectors = store.read_all(eid)
    rows = Rows()
    for i, (key, album, artist, cid) in enumerate(zip(*(meta.column(c).to_pylist() for c in
                                                       ("key", "album", "artist", "content_id")), strict=True)):
        rows.vectors[key], rows.album[key], rows.artist[key], rows.content_id[key] = vectors[i], album, artist, cid
    return rows


def _decoded_rows(settings: Settings, resolved: ResolvedEncoder, tracks: Sequence[Track]) -> Rows:
    spec = decode_spec(settings.audio, resolved.encoder.sample_rate)
    with tempfile.TemporaryDirectory(prefix="recsys-eval-") as tmp:
        store = TrackStore.open(Path(tmp))
        embed_tracks(tracks, store, resolved.encoder, spec.vector_id(resolved.encoder_id), spec,
                     workers=default_workers(settings.embed.workers), batch_size=settings.embed.batch_size)
        return table_rows(store, spec.vector_id(resolved.encoder_id))


def shown_id(settings: Settings, resolved: ResolvedEncoder) -> str:
    """The one id people see for an encoder, in every command: the id of the vectors it stores
    (``DecodeSpec.vector_id``: the encoder and the clip policy), as `recsys status` and `recsys embed` show it and
    the table's rows carry it."""
    return decode_spec(settings.audio, resolved.encoder.sample_rate).vector_id(resolved.encoder_id)


def encoder_rows(settings: Settings, resolved: ResolvedEncoder, tracks: Sequence[Track], store: TrackStore,
                 progress: Callable[[int], object] | None = None) -> tuple[Rows, str]:
    """(rows, source) of one encoder for ``tracks``: its table rows, else decoded crops."""
    vid = shown_id(settings, resolved)
    if store.count and vid in {s.encoder_id for s in store.states().values()}:
        rows = table_rows(store, vid)
        wanted = {t.key for t in tracks}
        rows.vectors = {k: v for k, v in rows.vectors.items() if k in wanted}
        return rows, TABLE
    return _decoded_rows(settings, resolved, tracks), "decoded"


def score_rows(named: Sequence[tuple[str, str, str, str, Rows]]) -> list[Score]:
    """Score (spec, label, encoder_id, source, rows) entries on the keys they all have."""
    common = sorted(set.intersection(*(set(r.vectors) for *_, r in named))) if named else []
    if not common:
        raise EvalError("the encoders compared share no embedded track: run `recsys embed` (or check the library)")
    scores = []
    for spec, label, eid, source, rows in named:
        vectors = np.stack([rows.vectors[k] for k in common])
        metrics = retrieval_metrics(vectors, [rows.album[k] for k in common], [rows.artist[k] for k in common],
                                    [rows.content_id[k] for k in common])
        scores.append(Score(spec, label, eid, source, metrics))
    return scores
