"""`recsys demo`: a small synthetic library, end to end, in a few minutes on two CPU cores (README has the figure).

Tracks of a few distinct styles, written in every format recsys reads, some with file names that break naive URL
handling, listed in a Clementine-shaped database whose owner rated some styles high and others low. The demo embeds
the library and shows that neighbours share the query's style far more often than chance would give, learns the
owner's taste from the ratings and writes a playlist that leans to the liked styles, then trains the cnn encoder for a
few epochs and compares it with the current one. Every figure it prints is measured, never assumed.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recsys.config import Settings, load_settings
from recsys.errors import RecsysError
from recsys.synth.audio import FORMATS, STYLES, synth_track, write_audio
from recsys.synth.player_db import SynthSong, write_clementine_db

TRACKS_PER_STYLE = 8
SECONDS = 36.0
SAMPLE_RATE = 22050
# The demo owner's taste: stars per style; 4 stars and up is liked.
STARS = {STYLES[0]: 5, STYLES[1]: 4, STYLES[2]: 1, STYLES[3]: 2, STYLES[4]: 3}
RATED_PER_STYLE = 5  # tracks 2..6 of each style are rated; the others (hostile names among them) are left to recommend
PLAYLIST_N = 6
DEMO_EPOCHS = 5
DEMO_CHANNELS = [16, 32, 64, 64]  # a small cnn: caching and 5 epochs over the demo's 40 tracks take ~30 s on 2 cores
DEMO_HOLDOUT = 0.6  # of the demo's 10 albums of 4: 3 validation and 3 test albums (12 tracks, enough for p@10)
# Names that break naive handling: '#', '%', '&', quotes, spaces and non-Latin scripts.
HOSTILE_TITLES = ["Track #1 & 100% \"quoted\"", "Ünïcödé — Ночь 夜", "it's a  double  space?"]


@dataclass(frozen=True)
class DemoTrack:
    path: Path
    style: str
    artist: str
    album: str
    title: str


def build_library(root: Path) -> list[DemoTrack]:
    """Write the demo's audio files: one artist per style, two albums each, formats taken in turn."""
    formats = list(FORMATS)
    tracks: list[DemoTrack] = []
    n = 0
    for s, style in enumerate(STYLES):
        artist = f"The {style.replace('_', ' ').title()} Ensemble"
        for i in range(TRACKS_PER_STYLE):
            album = f"{style.replace('_', ' ').title()} Vol. {i % 2 + 1}"
            title = HOSTILE_TITLES[s] if i == 0 and s < len(HOSTILE_TITLES) else f"{style} study {i + 1}"
            fmt = formats[n % len(formats)]
            folder = root / artist / album
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{i + 1:02d} {title.replace('/', '-')}.{FORMATS[fmt]}"
            samples = synth_track(style, SECONDS, sample_rate=SAMPLE_RATE, seed=1000 * s + i)
            write_audio(path, samples, SAMPLE_RATE, fmt)
            tracks.append(DemoTrack(path, style, artist, album, title))
            n += 1
    return tracks


def write_demo_db(db_path: Path, tracks: list[DemoTrack]) -> Path:
    """A Clementine database rating most tracks of every style; the rest stay unrated, to be recommended."""
    songs = []
    for t in tracks:
        stars = STARS[t.style]
        rated = 2 <= int(t.path.name[:2]) <= RATED_PER_STYLE + 1
        songs.append(SynthSong(path=str(t.path), title=t.title, artist=t.artist, album=t.album,
                               track=int(t.path.name[:2]), year=2020, genre=t.style,
                               rating=stars / 5.0 if rated else -1.0, playcount=stars * 3 if rated else 0,
                               length_ns=int(SECONDS * 1e9)))
    return write_clementine_db(db_path, songs)


class DemoHomeError(RecsysError):
    """The home given to the demo holds someone's real table, which the demo's library would replace."""


_q = shlex.quote  # the commands the demo prints can be pasted into a shell as they are

DEMO_MARKER = "recsys-demo-home"  # a file in every home the demo made: only such a home (or an empty one) is reused


def demo_settings(root: Path, home: str | Path | None = None) -> Settings:
    """The demo's settings: nothing from the user's config or environment, the home given (else ``root/home``)."""
    settings = load_settings(environ={})
    settings.home = str(Path(home).expanduser().resolve() if home else root / "home")
    settings.library.db = str(root / "clementine.db")
    return settings


def _claim_home(home: Path) -> None:
    """Refuse a home that holds anything but an earlier demo: embedding the demo library there would drop the rows
    of every track the demo does not have."""
    if home.is_dir() and any(home.iterdir()) and not (home / DEMO_MARKER).exists():
        raise DemoHomeError(f"{home} is not empty and not a demo's home: the demo would replace its table; "
                            "give --home a new or empty folder (or leave it out)")
    home.mkdir(parents=True, exist_ok=True)
    (home / DEMO_MARKER).write_text("made by `recsys demo`: safe to delete\n", encoding="utf-8")


def _show_similar(settings: Settings, tracks: list[DemoTrack], echo: Callable[[str], None]) -> float:
    """Query one track per style; returns the share of neighbours that share the query's style."""
    from recsys.app.similar import find_similar

    style_of = {str(t.path): t.style for t in tracks}
    k, agree = 5, 0
    for style in STYLES:
        query = next(t for t in tracks if t.style == style)
        result = find_similar(settings, str(query.path), k=k)
        same = sum(style_of.get(h.path) == style for h in result.neighbours)
        agree += same
        echo(f"\n$ recsys --home {_q(settings.home)} similar {_q(str(query.path))}   "
             f"({style}: {same}/{k} neighbours share its style)")
        for rank, h in enumerate(result.neighbours, 1):
            echo(f"  {rank}. {h.score:.3f}  {h.label}  [{style_of.get(h.path, '?')}]")
    return agree / (k * len(STYLES))


def _show_playlist(settings: Settings, root: Path, tracks: list[DemoTrack],
                   echo: Callable[[str], None]) -> tuple[float, float]:
    """Train the classifier, write a playlist; returns (share of it in liked styles, what random choice gives)."""
    from recsys.app.playlist import PlaylistRequest, make_playlist
    from recsys.app.train_classifier import train_from_player

    echo(f"\n$ recsys --home {_q(settings.home)} train-classifier --db {_q(settings.library.db)}")
    report = train_from_player(settings)
    echo(report.table())
    echo(report.reason)
    out = root / "demo-playlist.xspf"
    echo(f"\n$ recsys --home {_q(settings.home)} playlist --db {_q(settings.library.db)} --top-n {PLAYLIST_N} "
         f"--out {_q(str(out))}")
    result = make_playlist(settings, PlaylistRequest(top_n=PLAYLIST_N, out=str(out), force=True))
    style_of = {str(t.path): t.style for t in tracks}
    liked = {style for style, stars in STARS.items() if stars >= 4}
    for note in result.notes:
        echo(f"note: {note}")  # as the CLI shows them: a short playlist says which rule stopped it
    for rank, t in enumerate(result.tracks, 1):
        stars = "" if t.predicted is None else f"{t.predicted * 5:.1f} stars  "
        echo(f"  {rank}. {stars}{t.label}  [{style_of.get(t.path, '?')}]")
    share = sum(style_of.get(t.path) in liked for t in result.tracks) / len(result.tracks)
    unrated = [t for t in tracks if not 2 <= int(t.path.name[:2]) <= RATED_PER_STYLE + 1]
    chance = sum(t.style in liked for t in unrated) / len(unrated)
    echo(f"wrote {result.path}: {share:.0%} of it in the styles the demo owner likes "
         f"(random unrated tracks would give {chance:.0%})")
    return share, chance


def demo_training(settings: Settings, epochs: int = 5, echo: Callable[[str], None] = print,
                  progress: Callable[[int, str], object] | None = None) -> dict:
    """A short training run for `recsys demo`; returns the before/after metrics on the held-out test albums and
    whether the new encoder was activated."""
    from recsys.app.train_encoder import train_encoder  # imports torch: only when the demo trains

    settings.train.base = "cnn"
    settings.train.epochs = epochs
    settings.train.channels = list(DEMO_CHANNELS)
    settings.train.holdout = DEMO_HOLDOUT
    settings.train.min_tracks = min(settings.train.min_tracks, 8)
    report = train_encoder(settings, progress=progress, echo=echo)
    before, after = report.scores
    for name, s in (("current encoder", before), (f"trained cnn ({len(report.fit.history)} epochs)", after)):
        echo(f"{name} ({s.label}), held-out albums: same-album precision@10 {s.metrics['album_p10']:.3f}, "
             f"same-artist {s.metrics['artist_p10']:.3f}")
    echo(report.decision)
    return {"before": before.as_json(), "after": after.as_json(), "activated": report.activated,
            "decision": report.decision, "seconds": report.seconds}


def _show_training(settings: Settings, echo: Callable[[str], None]) -> dict:
    """A short stage-1 run: the cnn trained on the demo library, compared with the current encoder."""
    echo(f"\n$ recsys --home {_q(settings.home)} train-encoder --db {_q(settings.library.db)} --epochs {DEMO_EPOCHS}  "
         "(short; real runs are longer)")
    return demo_training(settings, epochs=DEMO_EPOCHS, echo=echo)


def run_demo(directory: str | None, echo: Callable[[str], None] = print,
             progress: Callable[[int], object] | None = None, home: str | Path | None = None) -> dict:
    """Build the demo library, embed it, show similar tracks, learn the owner's taste, write a playlist and train
    the encoder briefly; returns what was measured. ``home`` (``recsys --home X demo``) replaces ``<dir>/home``; it
    must be new, empty or an earlier demo's."""
    from recsys.app.embed import embed_library

    root = Path(directory).expanduser().resolve() if directory else Path(tempfile.mkdtemp(prefix="recsys-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(root, home)
    _claim_home(settings.home_path)
    echo(f"building a demo library of {len(STYLES) * TRACKS_PER_STYLE} tracks in {root} "
         f"({len(STYLES)} styles, formats: {', '.join(FORMATS)})")
    tracks = build_library(root / "music")
    write_demo_db(root / "clementine.db", tracks)
    echo(f"$ recsys --home {_q(settings.home)} embed --db {_q(settings.library.db)}")
    report = embed_library(settings, progress=progress)
    echo(f"embedded {report.embedded} tracks ({report.failed} failed) in {report.seconds:.1f} s "
         f"with the '{report.encoder}' encoder")
    share = _show_similar(settings, tracks, echo)
    chance = (TRACKS_PER_STYLE - 1) / (len(tracks) - 1)
    echo(f"\nneighbours sharing the query's style: {share:.0%} (random choice would give {chance:.0%})")
    liked_share, liked_chance = _show_playlist(settings, root, tracks, echo)
    training = _show_training(settings, echo)
    echo(f"\ntry it yourself: recsys --home {_q(settings.home)} similar "
         f"{_q(tracks[1].artist + ' - ' + tracks[1].title)}")
    return {"root": str(root), "style_agreement": share, "chance": chance, "embedded": report.embedded,
            "playlist_liked_share": liked_share, "playlist_liked_chance": liked_chance, "training": training}
