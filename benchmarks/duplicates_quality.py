"""Precision and recall of `recsys duplicates` on the development corpus's copies, beside two naive rules.

Truth: ``make_format_twins.sh``'s twins (the first 60 s of 6 tracks as FLAC/MP3/M4A/Opus/WAV, and the Opus edge
case) and the copies this script's ``--make-copies`` writes under ``<corpus>/_copies`` (8 tracks: cut to 60 % from
8 s in, re-encoded as 48 kb/s mono MP3, 8 dB quieter) are one recording with their original; byte-identical files
(``_hostile``) are one with theirs. Pairs are counted among all files of the embedded home.

    PYTHONPATH=. python benchmarks/duplicates_quality.py --home /tmp/dupes/home --corpus /tmp/dupes/corpus
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import time
from pathlib import Path

import numpy as np

from recsys.app.duplicates import find_duplicates
from recsys.app.settings import command_settings
from recsys.index.ann import load_snapshot
from recsys.library.groups import recording_key, same_recording

COPIES = ["hedgewars-data/Desert.ogg", "colobot-common-sounds/Proton.ogg", "openclonk-data/Cavern.ogg",
          "flare-game/town_theme.ogg", "fillets-ng-data/rybky05.ogg",
          "lincity-ng-data/02 - Robert van Herk - City Blues.ogg", "supertux-data/castle/darkforestkeep.ogg",
          "xmoto-data/foxrun.ogg"]


def make_copies(corpus: Path) -> None:
    out = corpus / "_copies"
    out.mkdir(exist_ok=True)
    for rel in COPIES:
        src, base = corpus / rel, rel.removesuffix(".ogg").replace("/", "_").replace(" ", "_")
        duration = float(subprocess.check_output(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                                                  "-of", "csv=p=0", str(src)], text=True))
        ff = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
        meta = ["-map", "0:a:0", "-map_metadata", "0:s:a:0"]
        subprocess.run([*ff, "-ss", "8", "-t", str(max(20.0, duration * 0.6)), "-i", str(src), *meta,
                        "-c:a", "libvorbis", "-q:a", "4", str(out / f"{base}_trunc.ogg")], check=True)
        subprocess.run([*ff, "-i", str(src), *meta, "-c:a", "libmp3lame", "-b:a", "48k", "-ac", "1",
                        str(out / f"{base}_lowbr.mp3")], check=True)
        subprocess.run([*ff, "-i", str(src), *meta, "-af", "volume=-8dB", "-c:a", "libvorbis", "-q:a", "4",
                        str(out / f"{base}_gain.ogg")], check=True)


def truth(rel: list[str], cids: list[str]) -> set[tuple[int, int]]:
    """Row pairs (i < j) that are one recording."""
    original = {r.rsplit(".", 1)[0].replace("/", "_").replace(" ", "_"): r for r in rel if not r.startswith("_")}
    first_of_cid = {}
    for r, c in zip(rel, cids, strict=True):
        if not r.startswith("_"):
            first_of_cid.setdefault(c, r)

    def source(r: str, c: str) -> str | None:
        if not r.startswith("_"):
            return r
        if r.startswith("_edge/"):
            return "colobot-common-sounds/music003.ogg"
        if r.startswith("_hostile/"):
            return first_of_cid.get(c)
        base = r.split("/", 1)[1].rsplit(".", 1)[0]
        for suffix in ("_trunc", "_lowbr", "_gain"):
            base = base.removesuffix(suffix)
        return original.get(base)

    src = [source(r, c) for r, c in zip(rel, cids, strict=True)]
    return {(i, j) for i, j in itertools.combinations(range(len(rel)), 2)
            if (src[i] is not None and src[i] == src[j]) or cids[i] == cids[j]}


def report(name: str, flagged: set, true: set) -> None:
    hit = len(flagged & true)
    precision = hit / len(flagged) if flagged else float("nan")
    print(f"| {name} | {len(flagged)} | {hit} | {precision:.3f} | {hit / len(true):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--make-copies", action="store_true", help="write the copies (then `recsys embed` again)")
    args = ap.parse_args()
    if args.make_copies:
        make_copies(args.corpus)
        return
    lib = load_snapshot(args.home)
    root = str(args.corpus).rstrip("/") + "/"
    paths = lib.values("path")
    rel = [p.removeprefix(root) for p in paths]
    cids = lib.values("content_id")
    true = truth(rel, cids)
    x = np.asarray(lib.vectors, dtype=np.float32)
    keys = [recording_key(a, t) for a, t in zip(lib.values("artist"), lib.values("title"), strict=True)]
    pairs = list(itertools.combinations(range(len(rel)), 2))
    row = {p: i for i, p in enumerate(paths)}
    t0 = time.perf_counter()
    result = find_duplicates(command_settings(None, str(args.home)))
    seconds = time.perf_counter() - t0
    grouped = {(min(row[a], row[b]), max(row[a], row[b])) for g in result.groups
               for a, b in itertools.combinations(g.paths, 2)}
    print(f"{len(rel)} files, {len(true)} true pairs; duplicates: {seconds:.0f} s, {result.compared} pairs compared, "
          f"{result.fingerprinted} files fingerprinted, {len(result.failures)} failures\n")
    print("| rule | pairs flagged | true | precision | recall |\n|---|---|---|---|---|")
    report("`recsys duplicates` (groups)", grouped, true)
    report("same artist + title (naive)", {p for p in pairs if keys[p[0]] and keys[p[0]] == keys[p[1]]}, true)
    report("cosine > 0.995 alone (naive)", {p for p in pairs if same_recording(float(x[p[0]] @ x[p[1]]))}, true)
    missed = sorted(true - grouped)
    print(f"\nmissed pairs ({len(missed)}):")
    for i, j in missed[:40]:
        print(f"  {float(x[i] @ x[j]):.3f}  {rel[i]} | {rel[j]}")
    print("false pairs:")
    for i, j in sorted(grouped - true):
        print(f"  {float(x[i] @ x[j]):.3f}  {rel[i]} | {rel[j]}")


if __name__ == "__main__":
    main()
