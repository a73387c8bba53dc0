"""Tags from the sound against the genre tags some development-corpus tracks carry, next to chance.

For every track whose genre tag names one of MusiCNN's MSD tags (Death Metal -> metal, heavy metal; Rock,
Instrumental Rock -> rock; Ambient -> ambient; House -> House) it reports, per pair (track, MSD tag):
whether `--where tag:` gives the track the tag (chance: the share of the library that has it), and the track's
percentile for the tag among the library (chance 0.5: an AUC against the rest). Genres without an MSD counterpart
(Soundtrack, Orchestral, Reggae) are left out. Reads the index snapshot as `recsys tags` does.

    PYTHONPATH=. python -m recsys.cli --home /tmp/tags-home embed --library /tmp/devcorpus --encoder musicnn
    PYTHONPATH=. python benchmarks/tags_sanity.py --home /tmp/tags-home
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from recsys.index.ann import load_snapshot
from recsys.library.filters import TagScores

GENRE_TAGS = {"death metal": ("metal", "heavy metal"), "rock": ("rock",), "instrumental rock": ("rock",),
              "ambient": ("ambient",), "house": ("House",)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    args = ap.parse_args()
    lib = load_snapshot(args.home)
    if lib.tags is None:
        raise SystemExit("the snapshot holds no tags: embed with --encoder musicnn")
    scores = TagScores(lib.tag_names, np.asarray(lib.tags))
    genres = [(g or "").strip().lower() for g in lib.values("genre")]
    paths = lib.values("path")
    n = len(genres)
    print(f"{n} tracks; {sum(g in GENRE_TAGS for g in genres)} with a genre that names an MSD tag")
    print("| genre | MSD tag | tracks | have the tag (`--where tag:`) | chance (library share) | mean percentile "
          "(chance 0.5) | tag: selects, of which this genre |")
    print("|---|---|---|---|---|---|---|")
    hits = chance = pct = pairs = 0.0
    for genre, tags in GENRE_TAGS.items():
        rows = np.array([i for i, g in enumerate(genres) if g == genre], dtype=int)
        if not len(rows):
            continue
        for tag in tags:
            col = np.asarray(scores.probs[:, scores.index(tag)], np.float64)
            has = scores.has(tag)
            percentile = np.array([(col < col[r]).mean() for r in rows])
            share = has.mean()
            selected = np.flatnonzero(has)
            of_genre = sum(genres[i] == genre for i in selected)
            print(f"| {genre} | {tag} | {len(rows)} | {int(has[rows].sum())}/{len(rows)} | {share:.3f} | "
                  f"{percentile.mean():.3f} | {len(selected)}, {of_genre} |")
            hits += has[rows].sum()
            chance += share * len(rows)
            pct += percentile.sum()
            pairs += len(rows)
    print(f"\nall pairs: {int(hits)}/{int(pairs)} have the tag ({hits / pairs:.3f}; chance {chance / pairs:.3f}); "
          f"mean percentile {pct / pairs:.3f} (chance 0.5)")
    print("\nstrongest 3 tags of the genre-tagged tracks:")
    for i, g in enumerate(genres):
        if g in GENRE_TAGS:
            top = np.argsort(-np.asarray(scores.probs[i]))[:3]
            print(f"  {g:18s} {Path(paths[i]).name:28s} " + ", ".join(
                f"{lib.tag_names[j]} {float(scores.probs[i, j]):.2f}" for j in top))


if __name__ == "__main__":
    main()
