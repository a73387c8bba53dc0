"""`recsys eval --playlist` in process: the classifier gate in train-classifier's words, why a playlist row equals
the votes alone, a line of progress per split (issue 27 item 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from test_classifier import make_library
from test_rank import rank

from recsys.recommender.classifier import train_classifier
from recsys.recommender.cross_validation import gate_verdict
from recsys.recommender.playlist_eval import evaluate_playlist


@dataclass
class Lib:
    keys: list[str]
    vectors: np.ndarray
    meta: dict
    encoder_id: str = "enc-a"


def _lib(learnable: bool):
    lib, tracks = make_library(12, 4, 8, seed=2, learnable=learnable)
    meta = {"key": lib.keys, "path": lib.keys, "artist": [t.artist for t in tracks],
            "album": [t.album for t in tracks], "title": [t.title for t in tracks]}
    return Lib(lib.keys, lib.vectors, meta), tracks


def _run(lib, tracks, splits=2):
    reports, lines = [], []

    def train(visible, folder):
        reports.append(train_classifier(lib, visible, folder, None, seed=0))
        return reports[-1]

    def build(visible, model, top_n, scorer):
        return rank(lib, visible, model, top_n=top_n, scorer=scorer, exists=lambda p: True, min_audio_votes=0.0)

    result = evaluate_playlist(lib, tracks, build, train, splits=splits, progress=lines.append)
    return result, reports, lines


def test_eval_playlist_words_the_gate_as_train_classifier_does_and_shows_progress():
    lib, tracks = _lib(learnable=False)  # noise ratings: the gate keeps the classifier out
    result, reports, lines = _run(lib, tracks)
    assert len(reports) == 2 and not any(r.blend for r in reports)
    for report in reports:  # train-classifier's reason opens with the verdict eval --playlist counts
        verdict = next(v for v in result.gate if report.reason.startswith(v))
        assert verdict == gate_verdict(report.kind, False, clear=False)
    assert sum(result.gate.values()) == 2
    # the playlist row equals the votes alone, and a note per split says why, in the gate's words
    assert result.rankers["playlist"] == result.rankers["neighbours only"]
    why = [n for n in result.notes if "playlist row is the neighbour votes alone" in n]
    assert len(why) == 2 and all("not blended" in n for n in why)
    assert len(lines) == 2 and lines[0].startswith("split 1/2: ") and lines[1].startswith("split 2/2: ")
    assert all("ratings hidden" in line and " s)" in line for line in lines)


def test_comparison_verdict_says_which_half_of_the_rule_failed():
    from recsys.recommender.playlist_eval import Comparison

    noisy = Comparison("neighbours only", 5, 1.59, 1.42, -1.07, 0.5)
    assert not noisy.better and "+1.59 liked is within two standard errors (2.84)" in noisy.verdict
    costly = Comparison("neighbours only", 5, 2.0, 0.5, 1.0, 0.3)
    assert not costly.better and "+1.00 disliked too" in costly.verdict
    assert Comparison("random", 5, 2.0, 0.5, 0.0, 0.0).verdict == "better"
