"""Recommendation quality on real music: an owner who likes two soundtracks and dislikes two others.

The development corpus (``/tmp/devcorpus``, see /work/shared/corpus/README.md: 14 game soundtracks, the package is
the label) becomes a library as a player would list it: a Clementine-shaped database over the files, tags as the
files carry them (most are untagged: folders stand in, as they do for the player), written with
``recsys/synth/player_db.py``. For each seeded draw the owner likes two soundtracks and dislikes two others, and
rates a minority of the tracks, about 50 in all (liked: 4-5 stars, disliked: 1-2 stars, a few 3-star tracks of other
soundtracks), with a little play history; everything else is unrated. Then, with the real CLI in fresh processes:

1. ``recsys embed --db`` into a temporary home (once per encoder; later runs reuse the table),
2. ``recsys train-classifier``,
3. ``recsys eval --playlist --json`` (hidden ratings, grouped by album, over several seeded splits),
4. ``recsys playlist --json`` with the caps lifted and with the default caps,

and prints, per draw and on average, the top-20 share of tracks from the liked and from the disliked soundtracks
next to their share of the candidate pool (the base rate a random playlist would have).

    python benchmarks/taste_quality.py [--encoder dsp] [--draws 4] [--corpus /tmp/devcorpus] [--dir /tmp/recsys-taste]

Tuning note: the blend weights and the MMR trade-off in recsys/default.yaml were chosen with this measure on this
corpus (``--set recommend.w_model=...`` tries other values); figures from it are development figures, not a held-out
test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.library.sources.folders import read_track
from recsys.synth.player_db import SynthSong, write_clementine_db

MIN_TRACKS = 8  # a soundtrack the owner likes or dislikes has at least this many tracks
RATE_SHARE = 0.4  # the owner rates about this share of a liked or disliked soundtrack's tracks...
RATE_MAX = 10  # ...and at most this many of one soundtrack
NEUTRAL = 8  # 3-star ratings of tracks from other soundtracks
LIFTED = 10_000  # "no cap"


@dataclass
class CorpusTrack:
    path: str
    soundtrack: str
    title: str
    artist: str
    album: str
    track: int


def corpus(root: Path) -> list[CorpusTrack]:
    """Every Ogg file under ``root`` with its tags (as a player reads them) and its soundtrack (the label)."""
    out = []
    for path in sorted(root.rglob("*.ogg")):
        t = read_track(str(path))
        out.append(CorpusTrack(str(path), path.relative_to(root).parts[0], t.title, t.artist, t.album,
                               t.track_number or 0))
    return out


def owner(tracks: list[CorpusTrack], seed: int) -> tuple[list[SynthSong], set[str], set[str]]:
    """A seeded owner: the songs of the database (ratings, plays), the liked and the disliked soundtracks."""
    rng = np.random.default_rng(seed)
    sizes: dict[str, int] = {}
    for t in tracks:
        sizes[t.soundtrack] = sizes.get(t.soundtrack, 0) + 1
    eligible = sorted(s for s, n in sizes.items() if n >= MIN_TRACKS)
    chosen = [eligible[i] for i in rng.permutation(len(eligible))[:4]]
    liked, disliked = set(chosen[:2]), set(chosen[2:])
    rating: dict[str, float] = {}
    plays: dict[str, tuple[int, int]] = {}
    for s in chosen:
        members = [t.path for t in tracks if t.soundtrack == s]
        n = min(RATE_MAX, max(3, round(RATE_SHARE * len(members))))
        picked = rng.permutation(len(members))
        for i in picked[:n]:
            stars = int(rng.integers(4, 6)) if s in liked else int(rng.integers(1, 3))
            rating[members[i]] = stars / 5
            plays[members[i]] = (int(rng.integers(2, 9)), 0) if s in liked else (1, int(rng.integers(1, 4)))
        if s in liked:  # two unrated tracks played often: weak evidence, and not recommended back
            for i in picked[n:n + 2]:
                plays[members[i]] = (int(rng.integers(4, 9)), 0)
    others = [t.path for t in tracks if t.soundtrack not in chosen]
    for i in rng.permutation(len(others))[:NEUTRAL]:
        rating[others[i]] = 0.6
    for i in rng.permutation(len(others))[:6]:  # a few stray plays elsewhere
        plays.setdefault(others[i], (1, 0))
    songs = [SynthSong(path=t.path, title=t.title, artist=t.artist, album=t.album, track=t.track,
                       rating=rating.get(t.path, -1.0), playcount=plays.get(t.path, (0, 0))[0],
                       skipcount=plays.get(t.path, (0, 0))[1]) for t in tracks]
    return songs, liked, disliked


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``recsys`` in a fresh process; its stdout (exits with its error on failure)."""
    done = subprocess.run([sys.executable, "-m", "recsys.cli", "--home", str(home), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"recsys {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def shares(paths: list[str], label: dict[str, str], liked: set[str], disliked: set[str]) -> tuple[float, float]:
    if not paths:
        return float("nan"), float("nan")
    return (sum(label[p] in liked for p in paths) / len(paths), sum(label[p] in disliked for p in paths) / len(paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/devcorpus"))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/recsys-taste"))
    parser.add_argument("--encoder", default="dsp")
    parser.add_argument("--draws", type=int, default=4, help="seeded owners (pairs of liked / disliked soundtracks)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="SECTION.KEY=VALUE passed to recsys as RECSYS_SECTION__KEY (tuning runs)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    a = parser.parse_args()
    if not a.corpus.is_dir():
        raise SystemExit(f"no corpus at {a.corpus}: build it with /work/shared/corpus/build_devcorpus.sh")
    tracks = corpus(a.corpus)
    label = {t.path: t.soundtrack for t in tracks}
    root = a.dir / a.encoder.replace("/", "_").replace(":", "_")
    home, db = root / "home", root / "clementine.db"
    env = {f"RECSYS_{k.split('.')[0].upper()}__{k.split('.')[1].split('=')[0].upper()}": k.split("=", 1)[1]
           for k in a.overrides}
    env["HOME"] = str(root / "user")  # the default playlist folder lands inside the run folder

    write_clementine_db(db, owner(tracks, 0)[0])
    print(cli(home, "embed", "--db", str(db), "--encoder", a.encoder, "--workers", str(a.workers), "-q",
              env=env).strip().splitlines()[-1])

    results = []
    for draw in range(a.draws):
        songs, liked, disliked = owner(tracks, draw)
        write_clementine_db(db, songs)
        train = cli(home, "train-classifier", "--db", str(db), env=env)
        decision = train.strip().splitlines()[-2]
        report = json.loads(cli(home, "eval", "--playlist", "--db", str(db), "--json", env=env))
        pool = [s.path for s in songs if s.rating < 0 and s.playcount < 3]
        base = shares(pool, label, liked, disliked)
        row = {"draw": draw, "liked": sorted(liked), "disliked": sorted(disliked), "decision": decision,
               "ratings": sum(s.rating >= 0 for s in songs), "pool": len(pool), "pool_liked": base[0],
               "pool_disliked": base[1], "eval": report}
        for name, caps in (("lifted", {"RECSYS_RECOMMEND__MAX_PER_ARTIST": str(LIFTED),
                                       "RECSYS_RECOMMEND__MAX_PER_ALBUM": str(LIFTED)}), ("default", {})):
            out = root / f"draw{draw}-{name}.xspf"
            picks = json.loads(cli(home, "playlist", "--db", str(db), "--json", "--out", str(out), "--force",
                                   env={**env, **caps}))
            paths = [p["path"] for p in picks]
            row[f"{name}_n"] = len(paths)
            row[f"{name}_top20_liked"], row[f"{name}_top20_disliked"] = shares(paths[:20], label, liked, disliked)
        results.append(row)
        print(f"draw {draw}: likes {'+'.join(sorted(liked))}, dislikes {'+'.join(sorted(disliked))}; "
              f"{row['ratings']} ratings; {decision}")
        print(f"  pool {row['pool']} tracks: {row['pool_liked']:.0%} liked, {row['pool_disliked']:.0%} disliked")
        for name in ("lifted", "default"):
            print(f"  top 20, caps {name:7s}: {row[f'{name}_top20_liked']:.0%} liked, "
                  f"{row[f'{name}_top20_disliked']:.0%} disliked ({row[f'{name}_n']} tracks in the playlist)")
        for ranker, values in report["rankers"].items():
            print(f"  eval --playlist {ranker:16s}: top 20 hidden liked {values['top20_liked']:.2f} / disliked "
                  f"{values['top20_disliked']:.2f}; top 100 {values['top100_liked']:.2f} / "
                  f"{values['top100_disliked']:.2f}")
    keys = ["pool_liked", "pool_disliked", "lifted_top20_liked", "lifted_top20_disliked", "default_top20_liked",
            "default_top20_disliked"]
    print(f"mean over {len(results)} draws ({a.encoder}): "
          + ", ".join(f"{k} {statistics.mean(r[k] for r in results):.0%}" for k in keys))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
