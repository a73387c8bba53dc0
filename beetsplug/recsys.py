"""recsys inside beets: ``beet similar QUERY`` and ``beet recplay QUERY``, with beets' own query language.

Enabled by ``plugins: recsys`` in beets' config (beets imports ``beetsplug.recsys``; ``beetsplug`` is a namespace
package, so this file, installed with recsys, is found beside beets' own plugins). Options, all optional, under
``recsys:`` in beets' config: ``home`` (recsys's home, where the index is), ``config`` (recsys's config file),
``format`` (``xspf`` or ``m3u8``, for ``recplay``), ``count`` (how many neighbours or tracks).

A thin front end like ``recsys/cli.py``: it turns beets' query into the files of the matched items, calls one recsys
use case, and prints. The library recsys reads is beets' own (its ``library.db``, the paths resolved through beets'
``directory``), so the ratings, plays and skips in beets' flexible fields drive ``recplay``. It never writes beets'
library: no item is stored or modified, only recsys's playlist file is written.
"""

from __future__ import annotations

import os

from beets import ui
from beets.dbcore.query import OrQuery, PathQuery
from beets.plugins import BeetsPlugin

from recsys.errors import RecsysError


class RecsysPlugin(BeetsPlugin):
    """The ``similar`` and ``recplay`` commands."""

    def __init__(self) -> None:
        super().__init__("recsys")
        self.config.add({"home": None, "config": None, "format": None, "count": 10})

    def commands(self) -> list[ui.Subcommand]:
        similar = ui.Subcommand("similar", help="print the tracks that sound most like the matched ones (recsys)")
        similar.parser.usage += " QUERY\nThe neighbours of the tracks QUERY matches, nearest first (recsys's index)."
        similar.parser.add_option("-n", "--count", type="int", help="how many neighbours [default: recsys.count]")
        similar.parser.add_path_option()
        similar.parser.add_format_option(target="item")
        similar.func = self._similar
        recplay = ui.Subcommand("recplay", help="write a recsys playlist seeded by the matched tracks")
        recplay.parser.usage += (" QUERY\nA playlist around the tracks QUERY matches, ranked by recsys under the rules "
                                 "of `recsys playlist` (your ratings in beets vote against what you dislike).")
        recplay.parser.add_option("-n", "--count", type="int", help="how many tracks [default: recsys.count]")
        recplay.parser.add_option("-o", "--out", help="the playlist file [default: a new file in recsys's "
                                                      "recommend.out_dir]")
        recplay.parser.add_option("--force", action="store_true", default=False,
                                  help="replace --out when it is an existing playlist")
        recplay.parser.add_path_option()
        recplay.parser.add_format_option(target="item")
        recplay.func = self._recplay
        return [similar, recplay]

    def _settings(self, lib):
        """recsys's settings for this beets library: its library.db as the library, beets' directory for the paths."""
        from recsys.app.settings import command_settings

        home, config = (self.config[k].get() for k in ("home", "config"))
        return command_settings(os.path.expanduser(config) if config else None,
                                os.path.expanduser(home) if home else None, db=os.fsdecode(lib.path),
                                beets={"directory": os.fsdecode(lib.directory)})

    def _matched(self, lib, args: list[str]) -> list[str]:
        """The files of the items beets' query ``args`` matches (the track keys recsys gives them)."""
        paths = [os.fsdecode(item.path) for item in lib.items(args)]
        if not paths:
            raise ui.UserError(f"no track matches the query {' '.join(args) or '(everything)'!r}")
        return paths

    def _print(self, lib, paths: list[str], fmt: str | None) -> None:
        """Each file as beets prints items (``-f``, ``-p``, beets' ``format_item``); a file beets does not list, as
        it is."""
        queries = [PathQuery("path", os.fsencode(p)) for p in paths]
        items = {os.fsdecode(item.path): item for item in lib.items(OrQuery(queries))} if queries else {}
        for path in paths:
            item = items.get(path)
            ui.print_(format(item, fmt or "") if item is not None else path)

    def _count(self, opts) -> int:
        count = opts.count if opts.count is not None else self.config["count"].get(int)
        if count < 1:
            raise ui.UserError(f"--count must be 1 or more, not {count}")
        return count

    def _similar(self, lib, opts, args: list[str]) -> None:
        from recsys.app.similar import find_similar_to_tracks

        paths = self._matched(lib, args)
        try:
            result = find_similar_to_tracks(self._settings(lib), paths, self._count(opts))
        except RecsysError as exc:
            raise ui.UserError(str(exc)) from None
        for note in result.notes:
            self._log.warning("{}", note)
        self._print(lib, [n.path for n in result.neighbours], getattr(opts, "format", None))

    def _recplay(self, lib, opts, args: list[str]) -> None:
        from recsys.app.playlist import PlaylistRequest, make_playlist

        paths = self._matched(lib, args)
        fmt = self.config["format"].get()
        try:
            result = make_playlist(self._settings(lib), PlaylistRequest(
                top_n=self._count(opts), out=opts.out, fmt=fmt, force=opts.force, seed_tracks=paths))
        except RecsysError as exc:
            raise ui.UserError(str(exc)) from None
        for note in result.notes:
            self._log.warning("{}", note)
        self._print(lib, [t.path for t in result.tracks], getattr(opts, "format", None))
        self._log.warning("wrote {} tracks to {}", len(result.tracks), result.path)
