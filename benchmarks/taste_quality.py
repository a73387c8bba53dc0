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

and prints, per draw and on average, the top-20 share of tracks from the liked soundtracks, the number from the
disliked ones, and the R-precision, next to their share of the candidate pool (what a random playlist holds).

    python benchmarks/taste_quality.py [--encoder musicnn] [--draws 4] [--large 4] [--first-seed 100]

Two kinds of owner: ``--draws`` like two of any soundtracks of >= 8 tracks (most leave only 5-16 liked-style tracks
unrated, so a top 20 cannot be 90 % liked: R-precision, the precision at min(20, liked-style candidates), is
reported next to it), ``--large`` like two of the three soundtracks of >= 20 tracks (20 or more stay unrated).

``--eval-only`` runs only step 3 per draw and ends with the figures of every draw pooled: each ranker's mean and
the blend's paired differences from the others, with standard errors over the draws (the independent unit):

    python benchmarks/taste_quality.py --eval-only --draws 20 --large 20 --set recommend.eval_splits=3

``--flat-untagged``: the same corpus as a "Downloads" folder (every file copied into one folder under an anonymous
name, every tag deleted; its own home and database under ``<dir>/<encoder>-flat``, embedded once and reused): only
the sound and the ratings can tell the soundtracks apart.

Development vs reported draws: the settings in recsys/default.yaml (album and artist votes, blend weights, MMR)
were chosen on seeds 0-5 of both kinds; the figures in benchmarks/RESULTS.md come from seeds 100 and up
(``--first-seed``, the default), never used to choose anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.library.sources.folders import read_track
from recsys.recommender.playlist_eval import mean_se
from recsys.synth.player_db import SynthSong, write_clementine_db

MIN_TRACKS = 8  # a soundtrack the owner likes or dislikes has at least this many tracks
RATE_SHARE = 0.4  # the owner rates about this share of a liked or disliked soundtrack's tracks...
RATE_MAX = 10  # ...and at most this many of one soundtrack
NEUTRAL = 8  # 3-star ratings of tracks from other soundtracks
LIFTED = 10_000  # "no cap"
LARGE_TRACKS = 20  # "large" draws like two of the soundtracks with at least this many tracks


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


def flat_untagged(tracks: list[CorpusTrack], folder: Path) -> list[CorpusTrack]:
    """The corpus as a "Downloads" folder: every file copied into ``folder`` under an anonymous name (a seeded
    permutation, so neither the name nor the order says which soundtrack it is) with every tag deleted (mutagen),
    so that neither the folders nor the tags can tell the soundtracks apart: only the sound and the ratings."""
    from mutagen import File

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n, i in enumerate(np.random.default_rng(12345).permutation(len(tracks))):
        dest = folder / f"track{n:03d}.ogg"
        if not dest.exists():
            tmp = folder / f".{dest.name}.tmp"
            shutil.copyfile(tracks[i].path, tmp)
            File(tmp).delete()  # every tag block, written at once
            os.replace(tmp, dest)
        out.append(CorpusTrack(str(dest), tracks[i].soundtrack, "", "", "", 0))
    return sorted(out, key=lambda t: t.path)


def owner(tracks: list[CorpusTrack], seed: int, large: bool = False, rate_share: float = RATE_SHARE,
          rate_max: int = RATE_MAX, neutral: int = NEUTRAL) -> tuple[list[SynthSong], set[str], set[str]]:
    """A seeded owner: the songs of the database (ratings, plays), the liked and the disliked soundtracks.

    ``large``: the two liked soundtracks are drawn among those of at least ``LARGE_TRACKS`` tracks, so that 20 or
    more liked-style tracks stay unrated and a top 20 can be all liked (the small ones leave 5-16). The owner rates
    ``rate_share`` of each liked and disliked soundtrack (at most ``rate_max`` tracks of one) and ``neutral`` tracks
    of other soundtracks at 3 stars.
    """
    rng = np.random.default_rng(seed)
    sizes: dict[str, int] = {}
    for t in tracks:
        sizes[t.soundtrack] = sizes.get(t.soundtrack, 0) + 1
    eligible = sorted(s for s, n in sizes.items() if n >= MIN_TRACKS)
    if large:
        big = [s for s in eligible if sizes[s] >= LARGE_TRACKS]
        rest = [s for s in eligible if s not in big]
        chosen = [big[i] for i in rng.permutation(len(big))[:2]] + [rest[i] for i in rng.permutation(len(rest))[:2]]
    else:
        chosen = [eligible[i] for i in rng.permutation(len(eligible))[:4]]
    liked, disliked = set(chosen[:2]), set(chosen[2:])
    rating: dict[str, float] = {}
    plays: dict[str, tuple[int, int]] = {}
    for s in chosen:
        members = [t.path for t in tracks if t.soundtrack == s]
        n = min(rate_max, max(3, round(rate_share * len(members))))
        picked = rng.permutation(len(members))
        for i in picked[:n]:
            stars = int(rng.integers(4, 6)) if s in liked else int(rng.integers(1, 3))
            rating[members[i]] = stars / 5
            plays[members[i]] = (int(rng.integers(2, 9)), 0) if s in liked else (1, int(rng.integers(1, 4)))
        if s in liked:  # two unrated tracks played often: weak evidence, and not recommended back
            for i in picked[n:n + 2]:
                plays[members[i]] = (int(rng.integers(4, 9)), 0)
    others = [t.path for t in tracks if t.soundtrack not in chosen]
    for i in rng.permutation(len(others))[:neutral]:
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


def draw_plan(draws: int, large: int, first_seed: int) -> list[tuple[int, bool]]:
    """(seed, large) of every owner: ``draws`` drawn among all soundtracks, then ``large`` liking two large ones."""
    return [(first_seed + i, False) for i in range(draws)] + [(first_seed + i, True) for i in range(large)]


def summary(rows: list[dict]) -> str:
    keys = [("pool_liked", "pool liked"), ("pool_disliked", "pool disliked"), ("lifted_top20_liked", "top 20 liked"),
            ("lifted_top20_disliked_n", "top 20 disliked (tracks)"), ("lifted_rprec", "R-precision"),
            ("default_top20_liked", "default caps top 20 liked"),
            ("default_top20_disliked_n", "default caps top 20 disliked (tracks)")]
    parts = []
    for key, name in keys:
        value = statistics.mean(r[key] for r in rows)
        parts.append(f"{name} {value:.2f}" if key.endswith("_n") else f"{name} {value:.0%}")
    return ", ".join(parts)


def _mean_se(values: list[float]) -> str:
    mean, se = mean_se(values)
    return f"{mean:+.2f}" if math.isnan(se) else f"{mean:+.2f} ± {se:.2f}"


def eval_summary(reports: list[dict]) -> str:
    """`eval --playlist` over all draws: each ranker's mean, and the blend's paired differences, with standard errors
    over the DRAWS (the splits of one draw share its owner, so the draw is the independent unit)."""
    lines = [f"eval --playlist over {len(reports)} draws (mean per split; ± standard error over the draws):"]
    rankers = list(dict.fromkeys(name for r in reports for name in r["rankers"]))
    for name in rankers:
        rows = [r["rankers"][name] for r in reports if name in r["rankers"]]
        cells = [_mean_se([x[key] for x in rows]).lstrip("+") for key in ("top20_liked", "top20_disliked",
                                                                         "top100_liked", "top100_disliked")]
        lines.append(f"  {name:16s} top 20 hidden liked {cells[0]}, disliked {cells[1]}; top 100 {cells[2]}, "
                     f"{cells[3]} ({len(rows)} draws)")
    others = list(dict.fromkeys(c["other"] for r in reports for c in r["comparisons"]))
    for other in others:
        got = [c for r in reports for c in r["comparisons"] if c["other"] == other]
        lines.append(f"  blend - {other:16s} top 20 hidden liked {_mean_se([c['liked'] for c in got])}, disliked "
                     f"{_mean_se([c['disliked'] for c in got])} ({len(got)} draws; 'better' in "
                     f"{sum(c['better'] for c in got)})")
    return "\n".join(lines)


def in_process(tracks: list[CorpusTrack], label: dict[str, str], home: Path, db: Path,
               plan: list[tuple[int, bool]], settings: dict[str, float], ratings: dict[str, float]) -> None:
    """The tuning loop: ``rank()`` in this process with ``settings`` as its keywords, caps lifted, no classifier."""
    import dataclasses

    from recsys.app.ranking import rank_settings
    from recsys.config import IndexSettings, Settings
    from recsys.index.ann import current_snapshot
    from recsys.library.sources import load_library
    from recsys.recommender.rank import RankSettings, rank

    lib = current_snapshot(home, IndexSettings())
    names = {f.name for f in dataclasses.fields(RankSettings)}
    rows = []
    for seed, large in plan:
        songs, liked, disliked = owner(tracks, seed, large, **ratings)
        write_clementine_db(db, songs)
        keywords = {"top_n": 20, "max_per_artist": LIFTED, "max_per_album": LIFTED, **settings}
        knobs = dataclasses.replace(rank_settings(Settings()), **{k: v for k, v in keywords.items() if k in names})
        others = {k: v for k, v in keywords.items() if k not in names}  # the request's: mode, scorer, ...
        picks = rank(lib, load_library(db, []).tracks, None, knobs, **others).tracks
        styles = [label[t.path] for t in picks]
        cut = min(20, sum(label[s.path] in liked for s in songs if s.rating < 0 and s.playcount < 3))
        rows.append((large, sum(x in liked for x in styles[:20]) / 20, sum(x in disliked for x in styles[:20]),
                     sum(x in liked for x in styles[:cut]) / max(cut, 1), len(picks),
                     sum(x in disliked for x in styles),
                     sum(x in liked for x in styles[:20]) / max(1, len(styles[:20])),
                     sum(s.rating >= 0 for s in songs)))
    for kind, name in ((False, "any"), (True, "large")):
        got = [r[1:] for r in rows if r[0] == kind]
        if got:
            print(f"{name:5s} draws ({len(got)}): top 20 liked {statistics.mean(g[0] for g in got):.2f}, disliked "
                  f"{statistics.mean(g[1] for g in got):.2f}, R-precision {statistics.mean(g[2] for g in got):.2f}, "
                  f"length {statistics.mean(g[3] for g in got):.1f} ({'/'.join(str(g[3]) for g in got)}), disliked "
                  f"in the whole list {statistics.mean(g[4] for g in got):.2f}, liked share of its top 20 "
                  f"{statistics.mean(g[5] for g in got):.2f}, draws whose top 20 is >= 90 % liked with no disliked "
                  f"track {sum(g[5] >= 0.9 and g[1] == 0 for g in got)} of {len(got)}, ratings "
                  f"{statistics.mean(g[6] for g in got):.0f}  ({settings or 'defaults'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/devcorpus"))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/recsys-taste"))
    parser.add_argument("--encoder", default="musicnn")
    parser.add_argument("--draws", type=int, default=4, help="seeded owners liking two of any soundtracks")
    parser.add_argument("--large", type=int, default=4,
                        help="seeded owners liking two of the soundtracks of >= 20 tracks (a top 20 can be all liked)")
    parser.add_argument("--first-seed", type=int, default=100,
                        help="seed of the first owner: 100 and up are the REPORTED draws; settings were chosen on "
                             "seeds 0-5 (development draws), never on these")
    parser.add_argument("--flat-untagged", action="store_true",
                        help="the corpus copied into one folder, anonymous file names, tags deleted (a Downloads "
                             "folder): its own home and database beside the tagged run's")
    parser.add_argument("--no-eval", action="store_true", help="skip `recsys eval --playlist` (faster)")
    parser.add_argument("--eval-only", action="store_true",
                        help="only `recsys eval --playlist` per draw (no playlists written), e.g. over many draws")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate-share", type=float, default=RATE_SHARE,
                        help="share of each liked and disliked soundtrack the owner rates")
    parser.add_argument("--rate-max", type=int, default=RATE_MAX, help="at most this many rated tracks per soundtrack")
    parser.add_argument("--neutral", type=int, default=NEUTRAL, help="3-star ratings of other soundtracks' tracks")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="SECTION.KEY=VALUE passed to recsys as RECSYS_SECTION__KEY (tuning runs)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    parser.add_argument("--rank", dest="rank_settings", action="append", default=None, metavar="KEYWORD=VALUE",
                        help="tuning: rank() in this process with these keywords (e.g. album_vote=0.5; none for "
                             "None; caps lifted and top_n=20 unless given), no classifier; needs the home an earlier "
                             "run embedded")
    a = parser.parse_args()
    if not a.corpus.is_dir():
        raise SystemExit(f"no corpus at {a.corpus}: build it with /work/shared/corpus/build_devcorpus.sh")
    tracks = corpus(a.corpus)
    root = a.dir / a.encoder.replace("/", "_").replace(":", "_")
    if a.flat_untagged:
        root = root.with_name(root.name + "-flat")
        tracks = flat_untagged(tracks, root / "Downloads")
    label = {t.path: t.soundtrack for t in tracks}
    home, db = root / "home", root / "clementine.db"
    env = {f"RECSYS_{k.split('.')[0].upper()}__{k.split('.')[1].split('=')[0].upper()}": k.split("=", 1)[1]
           for k in a.overrides}
    env["HOME"] = str(root / "user")  # the default playlist folder lands inside the run folder
    env["RECSYS_RECOMMEND__REST_PLAYLISTS"] = "0"  # every draw is a new owner: no playlist rests another's tracks
    plan = draw_plan(a.draws, a.large, a.first_seed)
    ratings = {"rate_share": a.rate_share, "rate_max": a.rate_max, "neutral": a.neutral}
    if a.rank_settings is not None:
        settings = {k: None if v == "none" else float(v) if "." in v else int(v)
                    for k, v in (x.split("=", 1) for x in a.rank_settings if x)}
        in_process(tracks, label, home, root / "tuning.db", plan, settings, ratings)  # never the CLI runs' db
        return

    write_clementine_db(db, owner(tracks, 0)[0])
    print(cli(home, "embed", "--db", str(db), "--encoder", a.encoder, "--workers", str(a.workers), "-q",
              env=env).strip().splitlines()[-1])

    results = []
    for seed, large in plan:
        songs, liked, disliked = owner(tracks, seed, large, **ratings)
        write_clementine_db(db, songs)
        train = cli(home, "train-classifier", "--db", str(db), env=env)
        decision = train.strip().splitlines()[-2]
        report = None if a.no_eval else json.loads(cli(home, "eval", "--playlist", "--db", str(db), "--json",
                                                       env=env))
        pool = [s.path for s in songs if s.rating < 0 and s.playcount < 3]
        base = shares(pool, label, liked, disliked)
        n_liked = sum(label[p] in liked for p in pool)
        cut = min(20, n_liked)  # R-precision: a top list cannot hold more liked-style tracks than the pool has
        row = {"seed": seed, "large": large, "liked": sorted(liked), "disliked": sorted(disliked),
               "decision": decision, "ratings": sum(s.rating >= 0 for s in songs), "pool": len(pool),
               "pool_liked": base[0], "pool_disliked": base[1], "pool_liked_n": n_liked, "eval": report}
        for name, caps in () if a.eval_only else (("lifted", {"RECSYS_RECOMMEND__MAX_PER_ARTIST": str(LIFTED),
                                                             "RECSYS_RECOMMEND__MAX_PER_ALBUM": str(LIFTED)}),
                                                  ("default", {})):
            out = root / f"draw{seed}{'L' if large else ''}-{name}.xspf"
            picks = json.loads(cli(home, "playlist", "--db", str(db), "--json", "--out", str(out), "--force",
                                   env={**env, **caps}))
            paths = [p["path"] for p in picks]
            row[f"{name}_n"] = len(paths)
            row[f"{name}_top20_liked"], row[f"{name}_top20_disliked"] = shares(paths[:20], label, liked, disliked)
            row[f"{name}_top20_disliked_n"] = sum(label[p] in disliked for p in paths[:20])
            row[f"{name}_rprec"] = sum(label[p] in liked for p in paths[:cut]) / max(cut, 1)
        results.append(row)
        print(f"draw {seed}{' (large)' if large else ''}: likes {'+'.join(sorted(liked))}, dislikes "
              f"{'+'.join(sorted(disliked))}; {row['ratings']} ratings; {decision}")
        print(f"  pool {row['pool']} tracks: {row['pool_liked']:.0%} liked ({n_liked}), "
              f"{row['pool_disliked']:.0%} disliked")
        for name in () if a.eval_only else ("lifted", "default"):
            print(f"  top 20, caps {name:7s}: {row[f'{name}_top20_liked']:.0%} liked, "
                  f"{row[f'{name}_top20_disliked_n']} disliked; precision at {cut} {row[f'{name}_rprec']:.0%} "
                  f"({row[f'{name}_n']} tracks in the playlist)")
        for ranker, values in (report or {}).get("rankers", {}).items():
            print(f"  eval --playlist {ranker:16s}: top 20 hidden liked {values['top20_liked']:.2f} / disliked "
                  f"{values['top20_disliked']:.2f}; top 100 {values['top100_liked']:.2f} / "
                  f"{values['top100_disliked']:.2f}")
    for kind, rows in (("any soundtracks", [r for r in results if not r["large"]]),
                       ("large liked soundtracks", [r for r in results if r["large"]])):
        if rows and not a.eval_only:
            print(f"mean over {len(rows)} draws liking {kind} ({a.encoder}): {summary(rows)}")
    if not a.no_eval:
        print(eval_summary([r["eval"] for r in results]))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
