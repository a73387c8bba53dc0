"""Bytes a Subsonic library costs over HTTP: per track and format, what recsys fetches from the server's `download`
(bounded Range requests, recsys.library.remote) to decode its excerpts (the default clip policy: three 3 s excerpts
at 25/50/75 %) and to compute its content id, against the file's size.

A real Supysonic 0.7.9 (tests/supysonic_server.py) serves synthetic stereo 44.1 kHz tracks of --seconds seconds in
FLAC, Ogg Vorbis and MP3 (as the synth encoders make them); each track is decoded through the server and locally,
and the samples compared.

    python benchmarks/subsonic_bytes.py [--seconds 240] [--per-format 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from supysonic_server import PASSWORD, USER, Supysonic  # noqa: E402

from recsys.config import load_settings  # noqa: E402
from recsys.embedder.audio import load_crop  # noqa: E402
from recsys.library import remote  # noqa: E402
from recsys.library.content_id import content_id  # noqa: E402
from recsys.library.sources.subsonic import read_subsonic  # noqa: E402
from recsys.synth.audio import STYLES, synth_track, write_audio  # noqa: E402

FORMATS = ("flac", "ogg", "mp3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--per-format", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="recsys-subsonic-bytes-"))
    music = folder / "music"
    music.mkdir()
    for fmt in FORMATS:
        for i in range(args.per_format):
            samples = synth_track(STYLES[i % len(STYLES)], args.seconds, sample_rate=44100, seed=i)
            write_audio(music / f"{fmt}-{i}.{fmt}", samples, 44100, fmt)
    server = Supysonic(folder / "server", music).start()
    try:
        os.environ["RECSYS_SUBSONIC_PASSWORD"] = PASSWORD
        settings = load_settings(overrides={"library": {"subsonic": server.url}, "subsonic": {"user": USER}},
                                 remembered=False)
        library = read_subsonic(settings.library.subsonic, settings.subsonic)
        rows: dict[str, list[tuple[float, float, int, float]]] = {f: [] for f in FORMATS}
        for track in library.tracks:
            name = track.path.rsplit("/", 1)[1]
            size = (music / name).stat().st_size
            before = remote.traffic()
            clip = load_crop(track.path, 16000, crop_s=3.0, count=3, max_duration_s=0)
            middle = remote.traffic()
            cid = content_id(track.path, size)
            after = remote.traffic()
            local = load_crop(music / name, 16000, crop_s=3.0, count=3, max_duration_s=0)
            assert cid == content_id(music / name), name
            diff = float(np.abs(clip.samples - local.samples).max())
            rows[name.split("-")[0]].append(((middle["bytes"] - before["bytes"]) / size,
                                            (after["bytes"] - middle["bytes"]) / size,
                                            middle["requests"] - before["requests"], diff))
            print(f"{name}: {size / 1e6:.2f} MB, excerpts {middle['bytes'] - before['bytes']} B "
                  f"({middle['requests'] - before['requests']} requests), content id "
                  f"{after['bytes'] - middle['bytes']} B, max |HTTP - local| {diff:g}")
        print(f"\n{args.seconds:g} s stereo 44.1 kHz tracks, {args.per_format} per format (Supysonic 0.7.9):")
        print("format | excerpts: share of the file | requests | content id: share | max sample difference")
        for fmt, found in rows.items():
            print(f"{fmt} | {statistics.mean(r[0] for r in found):.1%} | {statistics.mean(r[2] for r in found):.0f} | "
                  f"{statistics.mean(r[1] for r in found):.1%} | {max(r[3] for r in found):g}")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
