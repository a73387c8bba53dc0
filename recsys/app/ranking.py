"""The ranked playlist that `recsys playlist` and `recsys radio` write and `recsys eval --playlist` scores: the request,
the classifier (or the neighbour votes alone), the seeds, the ranking from the settings, and the file written."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from recsys.app.output import as_written, playlist_format, playlist_path, ranked_entries, with_fingerprints
from recsys.app.taste import Taste, load_taste, require_history, vote_search
from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.home import models_dir
from recsys.home.recent import Written, remember_playlist, resting, taste_of
from recsys.index.ann import LibraryVectors
from recsys.library import remote
from recsys.library.filters import TagScores, parse, selected_mask, snapshot_column
from recsys.library.track import Track
from recsys.playlists import write_playlist
from recsys.playlists.read import read_playlist
from recsys.recommender.persistence import ClassifierError, RatingModel
from recsys.recommender.rank import COPY, RankedTrack, Ranking, RankSettings, rank


@dataclass
class PlaylistRequest:
    """What `recsys playlist` was asked for; None means the configured default."""

    top_n: int | None = None
    out: str | None = None
    name: str | None = None
    seeds: Sequence[str] = ()
    include_rated: bool = False
    mode: str = "taste"
    min_stars: float | None = None
    include_played: bool = False
    max_per_artist: int | None = None
    max_per_album: int | None = None
    fmt: str | None = None
    force: bool = False
    where: Sequence[str] = ()  # filter terms (recsys.library.filters): only matching tracks are candidates
    seed_playlists: Sequence[str] = ()  # playlist files whose tracks are seeds (and are left out of the result)
    seed_tracks: Sequence[str] = ()  # track keys as seeds (the tracks a beets query picks); those not embedded: a note
    local_player: bool = False  # the file goes to a player on this machine (radio --play): its paths stay ours
    rest: bool = False  # the tracks of recent playlists of the same taste rest (recsys.home.recent; `playlist`)
    tag: str | None = None  # only tracks with this tag from the sound, ranked by taste x its probability

    @property
    def terms(self) -> list[str]:
        """The filter terms: ``where`` and, with ``tag``, the tag: term (spaces as underscores, one shell word)."""
        return [*self.where, *([f"tag:{self.tag.replace(' ', '_')}"] if self.tag else [])]


@dataclass
class Playlist:
    path: Path
    title: str
    tracks: list[RankedTrack]
    scorer: str  # what ranked: 'blend (logistic + neighbours)', 'neighbours', ...
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None  # why it is shorter than asked


def usable_model(settings: Settings, lib: LibraryVectors, notes: list[str]) -> RatingModel | None:
    """The trained classifier, or None (the neighbour votes alone) with a note saying why."""
    try:
        model = RatingModel.load(models_dir(settings.home_path), lib.encoder_id)
    except ClassifierError as exc:
        notes.append(f"no usable classifier ({exc}); ranking by the neighbour votes alone")
        return None
    if not model.blend:
        notes.append(f"the classifier: {model.verdict} (see `recsys train-classifier`)")
    return model


def _seed_keys(lib: LibraryVectors, seeds: Sequence[str]) -> list[str]:
    from recsys.index.lookup import resolve_query

    return [lib.keys[resolve_query(lib, seed)] for seed in seeds]


def playlist_seeds(lib: LibraryVectors, files: Sequence[str], notes: list[str]) -> list[str]:
    """The track keys of the embedded tracks of the playlist ``files``, in order; entries that are not local files,
    whose file is missing or that have no vector are counted in ``notes``, never fatal while some track is left."""
    if not files:
        return []
    known = set(lib.keys)
    keys: list[str] = []
    for file in files:
        read = read_playlist(file)
        found = [e.key for e in read.entries if e.key in known]
        if read.problems:
            more = f" (and {len(read.problems) - 1} more)" if len(read.problems) > 1 else ""
            notes.append(f"{_entries(len(read.problems))} of {read.path} left out: {read.problems[0]}{more}")
        if len(found) < len(read.entries):
            notes.append(f"{_entries(len(read.entries) - len(found))} of {read.path} not in the index (not embedded "
                         "yet?): left out")
        keys += found
    if not keys:
        raise RecsysError(f"no track of {', '.join(map(str, files))} is in the index: check the playlist, or run "
                          "`recsys embed` first")
    return list(dict.fromkeys(keys))


def track_seeds(lib: LibraryVectors, keys: Sequence[str], notes: list[str]) -> list[str]:
    """The ``keys`` that are in the index; those that are not (not embedded yet) are counted in ``notes``, never fatal
    while some track is left."""
    if not keys:
        return []
    wanted = list(dict.fromkeys(keys))
    known = set(lib.keys)
    found = [key for key in wanted if key in known]
    if not found:
        raise RecsysError(f"none of the {len(wanted)} seed tracks is in the index: run `recsys embed` first")
    if len(found) < len(wanted):
        notes.append(f"{len(wanted) - len(found)} of the {len(wanted)} seed tracks are not in the index (not embedded "
                     "yet?): left out")
    return found


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def rank_settings(settings: Settings) -> RankSettings:
    """The ranking's section of the settings (the one place it is built): ``recommend.*`` of the same names, and
    the classifier's ``knn_k`` and ``pseudo_until``."""
    r = settings.recommend
    same = {f.name: getattr(r, f.name) for f in dataclasses.fields(RankSettings) if hasattr(r, f.name)}
    return RankSettings(**same, neighbours_k=settings.classifier.knn_k, pseudo_until=settings.classifier.pseudo_until)


def build_ranking(settings: Settings, taste: Taste, tracks: Sequence[Track], model: RatingModel | None,
                  req: PlaylistRequest, scorer: str = "blend", seed_keys: Sequence[str] = (),
                  rested: Collection[str] = ()) -> Ranking:
    """The ranking `recsys playlist` writes (and `recsys eval --playlist` scores), from the settings and request;
    ``seed_keys`` are seeds already resolved to track keys (a seed playlist's tracks), ``rested`` the keys that
    come last (those of recent playlists)."""
    r = settings.recommend
    with_fingerprints(settings, taste.lib)  # no recording twice: close tracks' fingerprints are compared
    seeds = list(dict.fromkeys([*_seed_keys(taste.lib, req.seeds), *seed_keys]))
    where = parse(req.terms)
    allowed = selected_mask(where, taste.lib.keys, snapshot_column(taste.lib), tracks) if where else None
    boost = None
    if req.tag:  # the tag: term above has checked that the snapshot has tags and knows this one
        scores = TagScores(taste.lib.tag_names, taste.lib.tags)
        boost = np.nan_to_num(np.asarray(scores.probs[:, scores.index(req.tag)], np.float32), nan=0.0)
    knobs = dataclasses.replace(
        rank_settings(settings), top_n=req.top_n or r.top_n, max_per_artist=req.max_per_artist or r.max_per_artist,
        max_per_album=req.max_per_album or r.max_per_album,
        scale_caps=r.scale_caps and req.max_per_artist is None and req.max_per_album is None)
    return rank(taste.lib, tracks, model, knobs, mode=req.mode, seeds=seeds, include_rated=req.include_rated,
                include_played=req.include_played, min_rating=None if req.min_stars is None else req.min_stars / 5.0,
                scorer=scorer, search=vote_search(settings, taste.lib), exists=remote.exists, allowed=allowed,
                library=taste.library, rested=rested, boost=boost)


def _loosen(req: PlaylistRequest, where: object) -> list[str]:
    """What the owner could loosen when nothing is left: only what this request did not already loosen (a flag
    given is never suggested again)."""
    return [*([f"a looser --where than '{where}'"] if where else []),
            *([] if req.include_rated else ["--include-rated"]), *([] if req.include_played else ["--include-played"]),
            *(["a lower --min-rating"] if req.min_stars is not None else [])]


def make_playlist(settings: Settings, req: PlaylistRequest) -> Playlist:
    """Rank the library for the owner's taste (or around seed tracks) and write the playlist file."""
    fmt = playlist_format(req.out, req.fmt, settings)
    where = parse(req.terms)  # a bad term fails before anything is read
    taste = load_taste(settings)
    if not (req.seeds or req.seed_playlists or req.seed_tracks):
        require_history(taste, seeds=True)
    notes: list[str] = [taste.lib.behind] if taste.lib.behind else []
    from_playlists = playlist_seeds(taste.lib, req.seed_playlists, notes) + track_seeds(taste.lib, req.seed_tracks,
                                                                                        notes)
    model = usable_model(settings, taste.lib, notes)
    r = settings.recommend
    fresh = taste_of(req.mode, [*req.seeds, *req.seed_playlists, *req.seed_tracks], req.terms)
    rested = resting(settings.home_path, fresh, r.rest_playlists, r.rest_days) if req.rest else set()
    ranking = build_ranking(settings, taste, taste.tracks, model, req, seed_keys=from_playlists, rested=rested)
    if not ranking.tracks:
        raise RecsysError(f"no track is left to recommend ({ranking.stopped or 'every candidate was filtered'}): "
                          f"try {', '.join(_loosen(req, where))}, rate more tracks, or embed more music")
    if ranking.stopped:
        notes.append(f"the playlist is short: {ranking.stopped}")
    elif ranking.removed.get(COPY):  # a short playlist's note counts them with the other rules
        n = ranking.removed[COPY]
        notes.append(f"{n} {'copy' if n == 1 else 'copies'} of tracks you rated or play often left out (one "
                     "recording, as `recsys duplicates` finds them; --include-rated lets the rated ones' in)")
    name = req.name or settings.recommend.name
    title = f"{name} ({req.mode}, {date.today().isoformat()})"
    written, note = as_written(ranked_entries(ranking.tracks), fmt, settings, taste.db_kind,
                               local_player=req.local_player)
    notes += [note] if note else []
    out, replace = playlist_path(req.out, settings, name, fmt, title)
    path = write_playlist(out, written, title, fmt=fmt, overwrite=req.force or replace, inputs=taste.inputs)
    if ranking.rested:
        notes.append(f"{ranking.rested} tracks of your last {r.rest_playlists} playlists of this taste rest "
                     f"(recommend.rest_playlists, rest_days; --no-rest lets them back)")
    back = sum(t.key in rested for t in ranking.tracks)
    if back:
        notes.append(f"{back} tracks of recent playlists are back: the others your ratings vouch for could not fill "
                     "it")
    note = remember_playlist(settings.home_path, Written(time.time(), fresh, name, str(path),
                                                         tuple(t.key for t in ranking.tracks)))
    notes += [note] if note else []
    return Playlist(path=path, title=title, tracks=ranking.tracks, scorer=ranking.scorer, notes=notes,
                    stopped=ranking.stopped)


