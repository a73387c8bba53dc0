"""What `recsys train-classifier`, `recsys playlist` and `recsys eval --playlist` share: the index snapshot joined
to the owner's taste, read live.

They read the index snapshot (vectors and tags, no lancedb or torch on the way) and the player's history afresh on
every run, so ratings given a minute ago count and no rating is ever copied out of the player (what does not change
between runs -- paths, tags -- is kept in the home: ``recsys.library.kept``). Of the library they
keep as Track records only the tracks with a rating, plays or skips; every track is in the catalogue (its key, file,
album and artist tags: ``recsys.library.catalogue``), which is what keeps them fast on a large library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.home.claim import is_own
from recsys.index.ann import LibraryVectors, Searcher, current_snapshot
from recsys.index.hubness import hub_search
from recsys.library.catalogue import Catalogue
from recsys.library.kept import folder as kept_folder
from recsys.library.sources import load_taste_library
from recsys.library.track import Track
from recsys.playlists import AnyOf, Inputs

if TYPE_CHECKING:  # training is `recsys train-classifier`'s: a playlist never imports it
    from recsys.recommender.classifier import ClassifierReport


class NotEmbeddedError(RecsysError):
    """The player's tracks have no vectors yet."""


@dataclass
class Taste:
    """The index snapshot, the library's tracks with a rating, plays or skips (read just now) and every track."""

    lib: LibraryVectors
    tracks: list[Track]  # those with a rating, plays or skips (Track.has_history)
    source: str
    library: Catalogue  # every track of the library
    inputs: Inputs = field(default_factory=Inputs)  # what the playlist must never overwrite
    db_kind: str | None = None  # the source of the ratings: 'clementine', 'navidrome' ...


def load_taste(settings: Settings) -> Taste:
    """The snapshot and the live library; an error naming what to run when none of the tracks is embedded."""
    lib = current_snapshot(settings.home_path, settings.index, read_ahead=["key"])  # read while the library is
    library, catalogue = load_taste_library(settings.library.db, settings.library.folders, settings=settings,
                                            keep=kept_library_folder(settings.home_path))
    source = library.source()
    if not lib.holds_any("key", catalogue.keys):
        raise NotEmbeddedError(f"none of the {len(catalogue)} tracks of {source} is embedded yet: "
                               "run `recsys embed` first")
    inputs = taste_inputs(library.db_path, library.folders, catalogue, lib)
    return Taste(lib, library.tracks, source, catalogue, inputs, library.db_kind)


def kept_library_folder(home: Path) -> Path | None:
    """Where the player's library is kept between runs (``recsys.library.kept``): under a home recsys made (its
    marker), nowhere else (None): a folder that is not recsys's is never written to."""
    return kept_folder(home) if is_own(home) else None


def require_history(taste: Taste, seeds: bool = False) -> None:
    """One line naming the library when it is music folders alone, which carry no ratings (recsys reads stars from a
    player or a server), before any ranking: after `embed --library DIR` (remembered) the playlist blamed the
    evidence rule ("rate more tracks"), train-classifier "the player database" and eval --playlist offered --seed.
    ``seeds``: the command can build around tracks instead (`playlist --seed`). A player's database without
    ratings is left to each command's own words (how many more to rate)."""
    if taste.tracks or taste.db_kind is not None:
        return
    instead = ", or build around tracks with --seed" if seeds else ""
    raise RecsysError(f"{taste.source} holds no ratings: music folders carry none (recsys reads your stars from a "
                      f"player or a server): give your player's database with --db (or --mpd, --subsonic){instead}")


def taste_inputs(db: str | Path | None, folders: Sequence[str | Path], catalogue: Catalogue,
                 lib: LibraryVectors) -> Inputs:
    """What a playlist must never write: the player database, the music folders, every file of the library and
    every file the snapshot names (a track gone from the player may still be in the index). Both are asked about
    the one destination (``recsys.guard.AnyOf``): a set of every path cost a playlist a second at a million
    tracks."""
    return Inputs(db, folders, AnyOf((catalogue.paths, lib.files)))


VOTE_EF_SEARCH = 64  # HNSW breadth for the neighbour votes: recall@21 1.000 at 100k (128 for `similar`), 1.7x faster


def vote_search(settings: Settings, lib: LibraryVectors, hubness: bool = True):
    """The snapshot's FAISS search (exact, HNSW or compressed: ann.index_kind) as ``(queries, k) -> arrays``,
    re-ranked against hubs (``recsys.index.hubness``) unless ``index.hubness`` is off or ``hubness`` is False."""
    searcher = Searcher(lib, settings.home_path, ef_search=settings.index.hnsw_ef_search,
                        nprobe=settings.index.ivf_nprobe, rerank=settings.index.ivf_rerank)
    return hub_search(lambda queries, k: searcher.search_arrays(queries, k, ef_search=VOTE_EF_SEARCH),
                      lib.hub if hubness and settings.index.hubness == "csls" else None)


def train(settings: Settings, taste: Taste, tracks: Sequence[Track], models: Path,
          tracking: str | None) -> ClassifierReport:
    """Train the classifier on ``tracks`` with the configured settings, into ``models`` (tracked when ``tracking``)."""
    from recsys.recommender.classifier import train_classifier

    c = settings.classifier
    return train_classifier(taste.lib, tracks, models, tracking, min_ratings=c.min_ratings, seed=c.seed,
                            pseudo_until=c.pseudo_until, neighbours_k=c.knn_k, search=vote_search(settings, taste.lib),
                            w_model=settings.recommend.w_model, w_knn=settings.recommend.w_knn,
                            library=taste.library)
