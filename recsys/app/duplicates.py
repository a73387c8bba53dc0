"""`recsys duplicates`: the files of the library that hold one recording (a re-encode, another bitrate, a copy cut
shorter or made quieter), grouped, with the evidence for each pair. Reads the index snapshot and the audio files;
never deletes, moves or writes anything but the fingerprints it caches in the home.

Candidates are cheap: each track's nearest neighbours in the snapshot's search (a batched k-nearest query, no N x N
matrix) closer than :data:`recsys.library.groups.DUPLICATE_CANDIDATE_COS`, and tracks that share a performer and a
title (:func:`recsys.library.groups.recording_key`). Each candidate pair is then judged by
:func:`recsys.library.groups.same_recording` on the two files' acoustic fingerprints
(:mod:`recsys.embedder.fingerprint`, cached in the home by content id, where the lists' rule finds them;
byte-identical files need none). Groups are the connected pairs, so a copy of
a copy joins its original's group.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from recsys.config import Settings
from recsys.embedder.fingerprint import FingerprintCache, match
from recsys.index.ann import LibraryVectors, Searcher, current_snapshot
from recsys.library.groups import DUPLICATE_CANDIDATE_COS, recording_key, same_recording
from recsys.pipeline.fingerprints import close_pairs

NEIGHBOURS = 10  # nearest neighbours looked at per track
MAX_TAG_GROUP = 20  # more tracks than this with one artist and title ("Unknown Artist - Track 1") nominate nothing


@dataclass
class PairEvidence:
    """Why two files are one recording."""

    a: str
    b: str
    cosine: float  # of their vectors
    duration_a_s: float
    duration_b_s: float
    same_tags: bool  # same performer and title
    same_file: bool  # byte-identical content
    agreement: float | None  # fingerprint bits equal at the best offset (None: not compared, the files are identical)
    offset_s: float | None  # second t of b is second t + offset_s of a (b cut 5 s into a: +5)
    overlap_s: float | None  # how long the two line up

    def as_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class DuplicateGroup:
    """The files of one recording, and the evidence of each pair that joined them."""

    paths: list[str]
    durations_s: list[float]
    pairs: list[PairEvidence] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"paths": self.paths, "durations_s": [round(d, 2) for d in self.durations_s],
                "evidence": [p.as_json() for p in self.pairs]}


@dataclass
class DuplicatesResult:
    groups: list[DuplicateGroup]
    tracks: int
    compared: int  # candidate pairs judged
    fingerprinted: int  # files whose fingerprint was compared (decoded now or found in the home's cache)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of files that could not be decoded
    note: str | None = None  # why the index may lag the table


def candidate_pairs(lib: LibraryVectors, searcher: Searcher, neighbours: int = NEIGHBOURS,
                    min_cosine: float = DUPLICATE_CANDIDATE_COS) -> dict[tuple[int, int], float]:
    """Row pairs (i < j) worth judging, with their cosine: each track's nearest neighbours above ``min_cosine``, and
    tracks of one performer and title (up to :data:`MAX_TAG_GROUP` of them)."""
    vectors = lib.vectors
    pairs = close_pairs(lib, searcher, neighbours, min_cosine)
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, (artist, title) in enumerate(zip(lib.values("artist"), lib.values("title"), strict=True)):
        key = recording_key(artist, title)
        if key:
            by_key[key].append(i)
    for rows in by_key.values():
        if len(rows) > MAX_TAG_GROUP:  # placeholder tags, not a song: comparing every pair would decode for hours
            continue
        for x, a in enumerate(rows):
            for b in rows[x + 1:]:
                if (a, b) not in pairs:
                    pairs[(a, b)] = float(np.asarray(vectors[a], np.float32) @ np.asarray(vectors[b], np.float32))
    return pairs


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def find_duplicates(settings: Settings, min_cosine: float | None = None) -> DuplicatesResult:
    """Every group of two or more files that hold one recording, largest first, then by first path; neighbours
    closer than ``min_cosine`` (default :data:`~recsys.library.groups.DUPLICATE_CANDIDATE_COS`) are compared."""
    lib = current_snapshot(settings.home_path, settings.index)
    searcher = Searcher(lib, settings.home_path, ef_search=settings.index.hnsw_ef_search,
                        nprobe=settings.index.ivf_nprobe, rerank=settings.index.ivf_rerank)
    paths = lib.values("path")
    durations = [float(d or 0.0) for d in lib.values("duration_s")]
    cids, artists, titles = lib.values("content_id"), lib.values("artist"), lib.values("title")
    starts = lib.values("start_s") if "start_s" in lib.column_names else [0.0] * len(lib)
    cache = FingerprintCache(settings.home_path)  # the lists' rule reads the same fingerprints
    prints: dict[int, np.ndarray | None] = {}

    def fingerprint(i: int) -> np.ndarray | None:
        if i not in prints:  # an undecodable file is that pair's failure (cache.failures), never the library's
            prints[i] = cache.get(str(cids[i] or paths[i]), paths[i], durations[i], float(starts[i] or 0.0))
        return prints[i]

    parent = list(range(len(lib)))
    found: list[tuple[int, PairEvidence]] = []
    pairs = candidate_pairs(lib, searcher, min_cosine=DUPLICATE_CANDIDATE_COS if min_cosine is None else min_cosine)
    for (i, j), cosine in sorted(pairs.items()):
        same_file = cids[i] == cids[j]
        agreement = offset = overlap = None
        if not same_file:
            fa, fb = fingerprint(i), fingerprint(j)
            if fa is None or fb is None:
                continue
            agreement, offset, overlap = match(fa, fb)
        if same_file or same_recording(cosine, agreement):
            key_i = recording_key(artists[i], titles[i])
            found.append((i, PairEvidence(paths[i], paths[j], cosine, durations[i], durations[j],
                                          bool(key_i) and key_i == recording_key(artists[j], titles[j]), same_file,
                                          agreement, offset, overlap)))
            parent[_root(parent, i)] = _root(parent, j)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(lib)):
        members[_root(parent, i)].append(i)
    evidence: dict[int, list[PairEvidence]] = defaultdict(list)
    for i, pair in found:
        evidence[_root(parent, i)].append(pair)
    groups = [DuplicateGroup([paths[r] for r in rows], [durations[r] for r in rows], evidence[root])
              for root, rows in members.items() if len(rows) > 1]
    groups.sort(key=lambda g: (-len(g.paths), g.paths[0]))
    return DuplicatesResult(groups, len(lib), len(pairs), sum(1 for p in prints.values() if p is not None),
                            cache.failures, lib.behind)
