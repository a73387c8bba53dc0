"""The `recsys` command: parses, calls the one function of its use case in :mod:`recsys.app`, renders. Heavy imports
happen inside each command so that `recsys similar` starts fast (it must not import torch)."""

from __future__ import annotations

import json
import math
import os
import sys
import traceback

import click

from recsys.app.settings import WHERE_HELP, command_settings, forget_library, remember_library, remembered_note
from recsys.choices import MAX_PATH_STEPS, RANK_MODES, TRAINABLE_ENCODERS
from recsys.config import (
    BUILTIN_ENCODERS,
    DEFAULT_BUILTIN,
    MAX_TRACKS_ASKED,
    PLAYLIST_FORMATS,
    ClassifierSettings,
    EmbedSettings,
    RecommendSettings,
    Settings,
    TrainSettings,
    rule_of,
)
from recsys.errors import RecsysError, shown

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
INTERNAL_CHARS = 500  # of an internal error's message: whatever it echoes, the line stays readable


def _one_line(text: object) -> str:
    """Tags can hold newlines, tabs and terminal escapes: keep every printed track on one line."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text))


class Count(click.IntRange):
    """A whole number between two bounds, both stated in --help (every count has an upper bound: more is never
    useful and only costs time or memory); a value outside them, or no number at all, gets one line saying what is
    wanted (click's own answer to `--top-n abc` is "'abc' is not a valid integer range")."""

    name = "integer"

    def __init__(self, lo: int, hi: int) -> None:
        super().__init__(lo, hi)

    @classmethod
    def of(cls, section: type, key: str) -> Count:
        """The bounds of the setting ``key`` of ``section``: the flag and the setting allow the same."""
        rule = rule_of(section, key)
        return cls(int(rule.lo), int(rule.hi))

    def convert(self, value, param, ctx) -> int:
        try:
            number = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value).strip())
        except ValueError:  # also a number of over 4,300 digits, which Python refuses to read
            number = None
        if number is None or not self.min <= number <= self.max:
            self.fail(f"{shown(value)}: give a whole number from {self.min} to {self.max}", param, ctx)
        return number


class Finite(click.FloatRange):
    """A number within bounds, never NaN or infinite (click's FloatRange lets `nan` through every bound)."""

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        if not math.isfinite(number):
            self.fail(f"{shown(value)}: give a finite number ({self._describe_range()})", param, ctx)
        return super().convert(number, param, ctx)


_GROUP_OPTIONS = ("--home", "--config", "--table")  # recsys's own options, given before the command


class RecsysGroup(click.Group):
    """Turns every RecsysError into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RecsysError as exc:
            click.echo(f"recsys: error: {_one_line(exc)}", err=True)
            sys.exit(getattr(exc, "exit_code", EXIT_ERROR))
        except KeyboardInterrupt:
            click.echo("recsys: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.exceptions.NoSuchOption as exc:
            if exc.option_name in _GROUP_OPTIONS:  # `recsys embed --table URI`: say where it goes
                exc.message = (f"{exc.option_name} is an option of recsys itself: give it before the command, e.g. "
                               f"recsys {exc.option_name} ... {ctx.invoked_subcommand or 'embed'}")
            raise
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except BrokenPipeError:  # `recsys status | head -1`: the reader left; click's main ends quietly
            raise
        except Exception as exc:  # a bug: still one line, the traceback only on request
            if os.environ.get("RECSYS_DEBUG"):
                traceback.print_exc()
            click.echo(
                f"recsys: internal error: {type(exc).__name__}: {_one_line(str(exc)[:INTERNAL_CHARS])} "
                "(set RECSYS_DEBUG=1 for the traceback and report it)",
                err=True,
            )
            sys.exit(EXIT_ERROR)


def _settings(ctx: click.Context, db: str | None = None, folders: tuple[str, ...] = (), **overrides) -> Settings:
    obj = ctx.find_root().obj
    overrides["store"] = {**overrides.get("store", {}), "table": obj.get("table")}
    return command_settings(obj["config"], obj["home"], db=_with_mpd(ctx, db), folders=folders,
                            subsonic=ctx.meta.get(_SUBSONIC), subsonic_user=ctx.meta.get(_SUBSONIC_USER), **overrides)


def _with_mpd(ctx: click.Context, db: str | None) -> str | None:
    """``--mpd HOST[:PORT]`` is the library database setting ``mpd://HOST:PORT`` (remembered like ``--db``)."""
    address = ctx.meta.get("recsys.mpd")
    if address is None:
        return db
    if db:
        raise click.UsageError("give --db or --mpd, not both")
    from recsys.app.settings import mpd_library

    return mpd_library(address)


def _library_settings(ctx: click.Context, db: str | None = None, folders: tuple[str, ...] = (),
                      **overrides) -> Settings:
    """The settings of a command that reads the library; says when the library is the remembered one."""
    settings = _settings(ctx, db, folders, **overrides)
    note = remembered_note(settings)
    if note:
        click.echo(f"note: {_one_line(note)}", err=True)
    return settings


def _remember(settings: Settings, db: str | None, folders: tuple[str, ...]) -> None:
    """After a command succeeded: remember its --db/--library for the next commands, and say so."""
    context = click.get_current_context()
    line = remember_library(settings, _with_mpd(context, db), folders, context.meta.get(_SUBSONIC))
    if line:
        click.echo(f"note: {_one_line(line)}", err=True)


_SUBSONIC, _SUBSONIC_USER = "recsys.subsonic", "recsys.subsonic_user"  # kept in ctx.meta, not as parameters


def _keep(key: str):
    def callback(ctx: click.Context, _param, value):
        if value is not None:
            ctx.meta[key] = value
    return callback


def _library_options(remembers: bool = True):
    """--db, --library, --subsonic and --subsonic-user, the same on every command that reads the library."""
    kept = " Remembered for the next commands." if remembers else ""

    def add(command):
        command = click.option("--subsonic-user", expose_value=False, callback=_keep(_SUBSONIC_USER),
                               metavar="NAME", help="Whose songs and ratings --subsonic reads [default: setting "
                                                    "subsonic.user].")(command)
        command = click.option("--subsonic", expose_value=False, callback=_keep(_SUBSONIC), metavar="URL",
                               help="A Subsonic server as the library (Navidrome, Gonic, Airsonic, Supysonic...), "
                                    "e.g. http://localhost:4533; the password from RECSYS_SUBSONIC_PASSWORD or "
                                    f"subsonic.password_file, never a flag.{kept}")(command)
        command = click.option("--library", "folders", type=click.Path(file_okay=False), multiple=True,
                               help=f"Music folder (repeatable); without --db, the folders alone.{kept}")(command)
        command = click.option("--mpd", metavar="HOST[:PORT]", expose_value=False,
                               callback=lambda ctx, _, value: ctx.meta.setdefault("recsys.mpd", value) if value
                               else None,
                               help="An MPD server as the library (its database and `rating` stickers), instead of "
                                    f"--db; or the path of MPD's socket.{kept}")(command)
        return click.option("--db", type=click.Path(dir_okay=False), default=None,
                            help="Player database: Clementine, Strawberry, Navidrome or beets (told apart by its "
                                 "tables) [default: the remembered one, else found at its usual place]."
                                 f"{kept}")(command)
    return add


_PUSH, _DRY_RUN = "recsys.push", "recsys.dry_run"


def _push_options(command):
    """--push and --dry-run, the same on every command that writes a playlist."""
    command = click.option("--dry-run", is_flag=True, expose_value=False, callback=_keep(_DRY_RUN),
                           help="With --push: say what would change on the server, change nothing there.")(command)
    return click.option("--push", is_flag=True, expose_value=False, callback=_keep(_PUSH),
                        help="Also create or replace, by name, the playlist on the server the library comes from "
                             "(a Subsonic server: --subsonic); only a playlist recsys created is ever "
                             "replaced.")(command)


def _push(settings: Settings, name: str, tracks) -> None:
    """After a command wrote its playlist: push it when asked (--push), one line saying what happened."""
    meta = click.get_current_context().meta
    if not meta.get(_PUSH):
        if meta.get(_DRY_RUN):
            click.echo("note: --dry-run only applies to --push: nothing was pushed", err=True)
        return
    from recsys.app.push import describe, push_written

    report = push_written(settings, name, tracks, dry_run=bool(meta.get(_DRY_RUN)))
    if report.action == "refused":
        raise RecsysError(describe(report))
    click.echo(_one_line(describe(report)), err=True)


def _where_option(command):
    return click.option("--where", "where", multiple=True, metavar="TERMS", help=WHERE_HELP)(command)


@click.group(cls=RecsysGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(), envvar="RECSYS_HOME", default=None,
              help="Folder for the table, index, models and MLflow runs; also set by RECSYS_HOME "
                   "[default: $XDG_DATA_HOME/recsys, i.e. ~/.local/share/recsys].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file overriding any subset of the packaged defaults (`recsys config --defaults` prints "
                   "them, one comment each) [default: $XDG_CONFIG_HOME/recsys/config.yaml, i.e. "
                   "~/.config/recsys/config.yaml, when it exists].")
@click.option("--table", metavar="URI", default=None,
              help="Where the table of vectors lives, shared by the machines that embed into it: s3://BUCKET/PREFIX, "
                   "with the object store's endpoint and region in the setting store.storage_options and the "
                   "credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (never a flag or a file); every query "
                   "still reads this machine's index in the home [default: store.table, else the home].")
@click.version_option(package_name="recsys")
@click.pass_context
def main(ctx: click.Context, home: str | None, config_file: str | None, table: str | None) -> None:
    """recsys: music recommendations from your own library, by listening to it.

    \b
    Typical use:
      recsys demo                       try it all on a small synthetic library first
      recsys embed                      listen to every track (reads your Clementine/Strawberry database)
      recsys embed --library ~/Music    ... or your music folders, or --db navidrome.db (remembered)
      recsys similar "Artist - Title"   tracks that sound like it
      recsys tags "Artist - Title"      its moods and genres, from the sound (--where tag:chill selects by them)
      recsys train-classifier           learn your taste from your star ratings
      recsys playlist                   up to 100 unrated tracks you will likely like, as XSPF
      recsys train-encoder              teach the encoder your music (optional; GPU when present)
      recsys eval                       how well the encoder groups albums and artists
      recsys status                     what is embedded, stale or failed
      recsys prune / recsys repair      drop tracks whose file is gone / mend a damaged home

    Your music files and player database are only ever read, never written.
    Settings: `recsys config` shows them, `recsys config --defaults` the commented defaults.
    Shell completion (bash; zsh and fish alike): eval "$(_RECSYS_COMPLETE=bash_source recsys)"
    """
    from_env = ctx.get_parameter_source("home") == click.core.ParameterSource.ENVIRONMENT
    ctx.obj = {"home": home, "config": config_file, "home_from_env": from_env, "table": table}


@main.command()
@_library_options()
@click.option("--encoder", default=None,
              help=f"auto (the encoder `recsys train-encoder` activated, else {DEFAULT_BUILTIN}), "
                   f"{', '.join(BUILTIN_ENCODERS)}, "
                   "a trained checkpoint file (.pt), or module:Class for your own "
                   f"[default: embed.encoder, {EmbedSettings.encoder}].")
@click.option("--workers", type=Count.of(EmbedSettings, "workers"), default=None,
              help=f"Decode processes, 0: one per core [default: embed.workers, {EmbedSettings.workers}]; with "
                   "--engine ray the cluster's CPUs decide.")
@click.option("--device", default=None,
              help=f"auto, cpu, cuda, cuda:N [default: embed.device, {EmbedSettings.device}].")
@click.option("--batch-size", type=Count.of(EmbedSettings, "batch_size"), default=None,
              help=f"Clips encoded together [default: embed.batch_size, {EmbedSettings.batch_size}].")
@click.option("--retry-failed", is_flag=True, help="Try again the files that failed before, even unchanged.")
@click.option("--recheck", is_flag=True,
              help="Read every file's content id and embed again those whose bytes changed, even where size and "
                   "times say unchanged (a file system without a real ctime: FAT, some network shares).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: decode and encode on a Ray cluster (pip install 'recsys[ray]'); planning, commits and the "
                   "index stay on this machine. See README, 'Beyond one machine'.")
@click.option("--address", default=None,
              help="With --engine ray: the cluster to join (auto, HOST:PORT); without it a local Ray starts with this "
                   "machine's cores.")
@click.pass_context
def embed(ctx, db, folders, encoder, workers, device, batch_size, retry_failed, recheck, quiet, engine, address):
    """Embed every track of the library into the table and index.

    Incremental and resumable: unchanged tracks are not decoded again, changed files are re-embedded (one rewritten
    with its size and mtime kept, as `rsync -t` or `cp -p` leave it, is found by its inode change time and content),
    a missing file's vector is kept out of the index until the file is back (`recsys prune` removes it), moved or
    copied files keep their vector, and a run stopped with Ctrl-C (or killed) continues where it stopped. Files that
    cannot be decoded are recorded (see `recsys status`) and skipped. Last, the files whose sound is close to
    another's are fingerprinted (cached in the home; `embed.fingerprints: false` skips it), the evidence `similar`,
    `path`, `playlist` and `radio` use to list one version of a recording.
    """
    from recsys.app.embed import embed_library

    if address and engine != "ray":
        raise click.UsageError("--address joins a Ray cluster: give it with --engine ray")
    settings = _library_settings(ctx, db, folders, embed={"encoder": encoder, "workers": workers, "device": device,
                                                          "batch_size": batch_size})
    report = embed_library(settings, retry_failed=retry_failed, progress=None if quiet else _progress_bar,
                           recheck=recheck, engine=engine, address=address)
    _render_embed(report)
    _remember(settings, db, folders)
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)


def _progress_bar(total: int, desc: str = "embedding"):
    from tqdm import tqdm

    return tqdm(total=total, unit="track", desc=desc, dynamic_ncols=True, file=sys.stderr,
                disable=None)


def _failure(path: str, error: str) -> str:
    """One failure as '<path>: <reason>', the path once (decoder messages start with it already)."""
    reason = error[len(path) + 2:] if error.startswith(f"{path}: ") else error
    return f"{_one_line(path)}: {_one_line(reason)}"


def _render_left_out(left_out: list[tuple[str, str]], unreadable: list[tuple[str, str]], limit: int | None) -> None:
    """Every track the settings leave out and every file that cannot be read, with the reason (``limit``: at most
    that many lines of each, the rest counted)."""
    for title, items in (("left out by your settings", left_out), ("left out, cannot be read or stored", unreadable)):
        if not items:
            continue
        click.echo(f"{title}: {len(items)}")
        shown = items if limit is None else items[:limit]
        for path, reason in shown:
            click.echo(f"  {_one_line(path)}: {_one_line(reason)}")
        if len(items) > len(shown):
            click.echo(f"  ... and {len(items) - len(shown)} more (recsys status lists them all)")


def _render_skipped_rows(urls: int, unavailable: int, duplicates: int, indent: str = "") -> None:
    """The database rows that are not tracks of the library, when there are any."""
    if urls or unavailable:
        click.echo(f"{indent}left out: {urls} streams/URLs, {unavailable} marked unavailable")
    if duplicates:
        click.echo(f"{indent}{duplicates} database row(s) name a track another row already lists: kept the row with "
                   "the rating and plays (the player shows the file twice; removing the extra row in the player "
                   "tidies it)")


def _embed_counts(report) -> str:
    """The run's counts: what was embedded and what is up to date always, every other count only when it happened."""
    counts = [(True, f"embedded {report.embedded}"), (report.reused, f"reused {report.reused} (moved/copied)"),
              (True, f"up to date {report.up_to_date}"),
              (report.failed + report.known_failed, f"failed {report.failed} new + {report.known_failed} known"),
              (report.too_long, f"too long {report.too_long}"), (report.missing, f"missing {report.missing}"),
              (report.changed, f"changed while read {report.changed}"),
              (report.deleted, f"dropped {report.deleted} (moved)")]
    return ", ".join(text for shown, text in counts if shown)


def _render_embed(report) -> None:
    lib = report.library
    source = f"{lib.db_kind} database {lib.db_path}" if lib.db_path else "folders"
    source += f" (ratings of Navidrome user {lib.db_user})" if lib.db_user else ""
    source = _one_line(lib.source()) if lib.server else source
    click.echo(f"library: {report.total} tracks from {source}"
               + (f" and {len(lib.folders)} folder(s)" if lib.db_path and lib.folders else ""))
    _render_skipped_rows(lib.skipped_urls, lib.skipped_unavailable, lib.duplicate_rows, indent="  ")
    _render_left_out(lib.left_out, lib.scan_errors, limit=10)
    click.echo(f"encoder: {report.encoder} ({report.encoder_id}) "
               + (f"on {report.device}" if report.device else "not loaded: nothing to encode"))
    if report.stale:
        click.echo(f"  {report.stale} track(s) were embedded by another encoder or clip policy (a changed setting, "
                   "or a new default): embedding them again")
    click.echo(_embed_counts(report))
    if report.content_checked:
        click.echo(f"  content compared for {report.content_checked} file(s) whose size and mtime match their row "
                   f"(inode changed, or --recheck): {report.rewritten} hold new bytes and were embedded again")
    for folder in report.empty_folders:
        click.echo(f"  music folder {_one_line(folder)} holds nothing now (unmounted?): its tracks are kept as they "
                   "were")
    if report.kept_missing:
        click.echo(f"  {_kept_missing(report.kept_missing)}")
    if report.embedded or report.failed:
        click.echo(f"decoded {report.decoded_per_s:.1f} tracks/s over {report.seconds:.1f} s")
    for path, error in report.new_failures[:10]:
        click.echo(f"  failed: {_failure(path, error)}")
    if len(report.new_failures) > 10:
        click.echo(f"  ... and {len(report.new_failures) - 10} more (recsys status --json lists them all)")
    if report.known_failed:
        click.echo(f"  {report.known_failed} file(s) failed before and did not change: --retry-failed tries them again")
    if report.index:
        click.echo(f"index: {report.index.get('kind')} over {report.index.get('count')} tracks")
    if report.fingerprinted:
        click.echo(f"fingerprinted {report.fingerprinted} file(s) whose sound is close to another's (the lists tell "
                   f"versions of one recording apart by them), {len(report.fingerprint_failures)} without one")
    if report.interrupted:
        click.echo("interrupted: everything finished so far is saved; run `recsys embed` again to continue")


@main.command()
@click.argument("track")
@click.option("-k", "k", type=Count(1, MAX_TRACKS_ASKED), default=10, show_default=True,
              help="How many tracks.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Also write the neighbours as a playlist file (XSPF, or M3U8 when it ends in .m3u8).")
@click.option("--format", "fmt", type=click.Choice(PLAYLIST_FORMATS), default=None,
              help="Playlist format of --out [default: xspf, or m3u8 when --out ends in .m3u8].")
@click.option("--force", is_flag=True, help="Overwrite --out when it exists (only a playlist is replaced).")
@_where_option
@_push_options
@click.pass_context
def similar(ctx, track, k, as_json, out, fmt, force, where):
    """Tracks that sound like TRACK.

    TRACK is a file path, a file:// URI, or text such as "artist - title" (matched loosely; when several tracks
    match, they are listed and nothing is searched). The track itself and its other versions are left out, and no
    recording is listed twice (same artist and title, or close sound whose fingerprints agree: `recsys duplicates`;
    `recsys embed` prepares the fingerprints, and a pair it has not fingerprinted is judged by the vectors alone).
    With --where, only the tracks that match (e.g. --where 'year:..1979 -genre:christmas'; rating: and played:
    read your player's database, the remembered one or --db of an earlier command).

    \b
    Examples:
      recsys similar "Nils Frahm - Says" -k 20
      recsys similar ~/Music/a.flac -k 30 --out ~/like-a.m3u8
    """
    from recsys.app.similar import find_similar

    settings = _settings(ctx)
    result = find_similar(settings, track, k, where, out=out, fmt=fmt, force=force)
    if result.note:
        click.echo(f"note: {_one_line(result.note)}", err=True)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in result.neighbours], ensure_ascii=False, indent=1))
    else:
        q = result.query
        click.echo(f"like: {_one_line(q.label)}  [{_one_line(q.key)}]")  # a key is also a query (CUE: path@start)
        for rank, r in enumerate(result.neighbours, 1):
            click.echo(f"{rank:3d}  {r.score:6.3f}  {_one_line(r.label)}  ({_one_line(r.album or '-')})  "
                       f"{_one_line(r.key)}")
    if result.path:
        click.echo(f"wrote {len(result.neighbours)} tracks to {result.path}", err=True)
        _push(settings, "recsys similar", result.neighbours)
    elif click.get_current_context().meta.get(_PUSH):
        raise RecsysError("--push sends the playlist --out writes: give --out (or --format) too")


@main.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list of groups: each has `paths` (the files of one recording) and `evidence`.")
@click.option("--min-cosine", type=click.FloatRange(-1.0, 1.0), default=None,
              help="How close two tracks' vectors must be to be compared by fingerprint [default: 0.9]; lower finds "
                   "more copies that were changed a lot, and decodes more files.")
@click.pass_context
def duplicates(ctx, as_json, min_cosine):
    """Files that hold the same recording: another format or bitrate, a copy cut shorter or made quieter.

    Nothing is deleted, moved or written: this only lists. Tracks whose vectors are close (or that share artist and
    title) are compared by an acoustic fingerprint of the whole file; each group lists its files and, per pair, the
    evidence (vector cosine, durations, fingerprint agreement: about 0.5 for different music, above 0.7 for one
    recording, and where the two line up).

    \b
    Examples:
      recsys duplicates
      recsys duplicates --json > dupes.json
    """
    from recsys.app.duplicates import find_duplicates

    result = find_duplicates(_settings(ctx), min_cosine)
    if result.note:
        click.echo(f"note: {_one_line(result.note)}", err=True)
    for path, why in result.failures:
        click.echo(f"  not compared: {_failure(path, why)}", err=True)
    if as_json:
        click.echo(json.dumps([g.as_json() for g in result.groups], ensure_ascii=False, indent=1))
        return
    for n, group in enumerate(result.groups, 1):
        click.echo(f"recording {n}: {len(group.paths)} files")
        for path, duration in zip(group.paths, group.durations_s, strict=True):
            click.echo(f"  {duration:7.1f} s  {_one_line(path)}")
        for p in group.pairs:
            how = "identical files" if p.same_file else (f"fingerprint {p.agreement:.2f} over {p.overlap_s:.0f} s"
                                                         f" at {p.offset_s:+.1f} s")
            click.echo(f"    {_one_line(p.a)} ~ {_one_line(p.b)}: cosine {p.cosine:.3f}, {how}"
                       f"{', same artist and title' if p.same_tags else ''}")
    click.echo(f"{len(result.groups)} recording(s) held by more than one file, among {result.tracks} tracks "
               f"({result.compared} pairs compared, {result.fingerprinted} files fingerprinted); nothing was changed",
               err=True)


@main.command()
@click.argument("track")
@click.option("-n", "top", type=Count(1, 50), default=5, show_default=True, help="How many of the strongest tags.")
@click.option("--json", "as_json", is_flag=True,
              help="Print every tag as JSON: tag, probability, has (what --where tag: selects) and threshold.")
@click.pass_context
def tags(ctx, track, top, as_json):
    """The tags TRACK's sound carries (moods and genres), strongest first.

    TRACK is named as for `recsys similar`. The probabilities come from the encoder's tag head (musicnn: the
    Million Song Dataset's 50 last.fm tags), stored beside each vector by `recsys embed`. A tag marked * is the
    track's on this library: its probability is in the library's top 10 % for that tag and at least 0.1 (or at
    least 0.5), the rule --where tag:NAME selects by.

    \b
    Examples:
      recsys tags "Nils Frahm - Says"
      recsys tags ~/Music/a.flac --json
    """
    from recsys.app.tags import track_tags

    result = track_tags(_settings(ctx), track)
    if result.note:
        click.echo(f"note: {_one_line(result.note)}", err=True)
    if as_json:
        click.echo(json.dumps({"key": result.track.key, "tags": [t.as_json() for t in result.tags]},
                              ensure_ascii=False, indent=1))
        return
    click.echo(f"{_one_line(result.track.label)}  [{_one_line(result.track.key)}]")
    for t in result.tags[:top]:
        click.echo(f"  {t.probability:5.3f} {'*' if t.has else ' '} {t.tag}")


@main.command()
@_library_options(remembers=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (includes every failure).")
@click.pass_context
def status(ctx, db, folders, as_json):
    """What recsys knows: tracks in the library, embedded, stale, failed; the encoder; the index."""
    from recsys.app.status import library_status

    st = library_status(_library_settings(ctx, db, folders))
    if as_json:
        click.echo(json.dumps(st, ensure_ascii=False, indent=1, default=str))
        return
    click.echo(f"home: {st['home']}")
    if st.get("table"):
        click.echo(f"table: {st['table']}")
    if st["writer"]:
        click.echo(f"busy: {st['writer']} is writing this home: what follows may change as it runs")
    click.echo(f"library: {st['library_tracks']} tracks ({st['library_source']})")
    click.echo(f"encoder: {st['encoder']} ({st['encoder_id']})")
    click.echo(f"embedded: {st['embedded']} current, {st['stale']} stale (other encoder or changed file), "
               f"{st['not_embedded']} not yet, {st['missing']} missing files")
    if st["missing_kept"]:  # rows of files gone: the library may no longer list them ("0 missing files" above)
        click.echo(_kept_missing(st["missing_kept"]))
    click.echo(f"failed: {len(st['failures'])}")
    for f in st["failures"][:10]:
        click.echo(f"  {_failure(f['path'], f['error'])}")
    if len(st["failures"]) > 10:
        click.echo(f"  ... and {len(st['failures']) - 10} more (recsys status --json lists them all)")
    _render_skipped_rows(st["skipped_urls"], st["skipped_unavailable"], st["duplicate_rows"])
    _render_left_out([(t["key"], t["reason"]) for t in st["left_out"]],
                     [(t["path"], t["reason"]) for t in st["unreadable"]], limit=None)
    idx = st["index"]
    click.echo(f"index: {idx['state']}" + (f" ({idx['kind']}, {idx['count']} tracks)" if idx.get("kind") else ""))
    if st["embedded"] + st["stale"] + st["not_embedded"] and (st["stale"] or st["not_embedded"]):
        click.echo("run `recsys embed` to bring it up to date")
    recent = st["recent_playlists"]
    click.echo(f"recent playlists: {len(recent)}" + (" (their tracks rest in the next playlists of the same taste; "
                                                      "--no-rest)" if recent else ""))
    for p in recent[:10]:
        click.echo(f"  {p['written']}  {p['tracks']} tracks  {p['path']}")


def _kept_missing(n: int) -> str:
    """The rows whose file is missing, in the same words for `embed` and `status`."""
    return f"{n} track(s) whose file is missing are kept out of the index until the file is back (`recsys prune` " \
           "removes them)"


@main.command("train-classifier")
@_library_options()
@click.option("--min-ratings", type=Count.of(ClassifierSettings, "min_ratings"), default=None,
              help="Fewest rated, embedded tracks to train on [default: 20].")
@click.option("--seed", type=Count.of(ClassifierSettings, "seed"), default=None,
              help="Seed of the split and the model [default: 0].")
@click.pass_context
def train_classifier(ctx, db, folders, min_ratings, seed):
    """Learn your taste from the star ratings in your player (stage 2).

    Reads the ratings live from the player database, joins them to the embedded tracks, and compares, by
    cross-validation that holds out whole albums and artists, logistic and ridge regression on the vectors, the MLP
    and the neighbour votes, each predicting the probability that you like a track (4 stars and up), against the
    base rate (each held-out prediction is judged against the share of liked tracks its fold trained on, so a fold
    that holds out a liked album does not count against every model). The best is saved; it is blended into
    playlists only if, on the held-out albums, it is clearly better than chance (the 5th percentile of its ROC-AUC
    over bootstrap resamples of the albums above 0.5) AND its blend with the neighbour votes beats the votes alone
    (the votes already cover the albums you rated); else playlists rank by the neighbour votes alone and this says
    so. With few ratings, play and skip counts add weak evidence (see README).
    The run, the metrics, the model and a model card go to MLflow (sqlite:///<home>/mlflow.db by default).
    """
    from recsys.app.train_classifier import train_from_player

    settings = _library_settings(ctx, db, folders, classifier={"min_ratings": min_ratings, "seed": seed})
    report = train_from_player(settings)
    used = ", ".join(f"{k} {v}" for k, v in report.used.items())
    dropped = ", ".join(f"{k} {v}" for k, v in report.dropped.items()) or "none"
    click.echo(f"labels used: {used}; dropped: {dropped}")
    click.echo(f"{report.n_folds}-fold cross-validation grouped by {report.split}: P(liked) of {report.n_ratings} "
               "ratings, each predicted without its album and artist")
    click.echo(report.table())
    click.echo(report.reason)
    click.echo(f"saved the {report.kind} classifier to {os.path.dirname(report.files[0])} in {report.seconds:.1f} s"
               + (f"; MLflow run {report.run_id}" if report.run_id else ""))
    _remember(settings, db, folders)


@main.command()
@click.option("--top-n", type=Count.of(RecommendSettings, "top_n"), default=None,
              help="At most this many tracks (fewer when the rules leave fewer; a note says which) [default: 100].")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Playlist file [default: ~/Music/recommendations/<name>-<date>.xspf, replacing the day's playlist "
                   "recsys wrote there, never another file].")
@click.option("--name", default=None, help="Playlist name (its title and file name) [default: recsys].")
@click.option("--seed", "seeds", multiple=True,
              help="Build the playlist around this track (path, file:// URI or 'artist - title'); repeatable.")
@click.option("--seed-playlist", "seed_playlists", multiple=True, type=click.Path(dir_okay=False),
              help="Expand a playlist (XSPF, M3U, M3U8): its tracks are the seeds and are left out; repeatable.")
@click.option("--mode", type=click.Choice(RANK_MODES), default="taste", show_default=True,
              help="taste: what you will like; uncertain: the tracks near even odds that your ratings say least "
                   "about (rate them to teach it most).")
@click.option("--min-rating", "min_stars", type=Finite(0, 5), default=None,
              help="Drop tracks shown below this many stars (stars = 1 + 4 x the like-probability: 4 keeps 75% "
                   "and up).")
@click.option("--include-rated", is_flag=True, help="Also recommend tracks you have already rated.")
@click.option("--include-played", is_flag=True,
              help="Also recommend unrated tracks you played often (3 times or more by default).")
@click.option("--max-per-artist", type=Count.of(RecommendSettings, "max_per_artist"), default=None,
              help="At most this many tracks of one artist (the album folder's parent when untagged) [default: 3, "
                   "raised to top-n / your liked artists when that is more].")
@click.option("--max-per-album", type=Count.of(RecommendSettings, "max_per_album"), default=None,
              help="At most this many tracks of one album (the folder when untagged) [default: 3, raised to "
                   "top-n / the albums of your liked tracks when that is more].")
@click.option("--format", "fmt", type=click.Choice(PLAYLIST_FORMATS), default=None,
              help="Playlist format [default: xspf, or m3u8 when --out ends in .m3u8].")
@click.option("--force", is_flag=True, help="Overwrite --out when it exists.")
@click.option("--no-rest", is_flag=True,
              help="Let the tracks of your recent playlists back in (by default those of the last 3 playlists of "
                   "this taste within 7 days come last: recommend.rest_playlists, rest_days).")
@click.option("--tag", default=None, metavar="TAG",
              help="Only tracks whose sound carries TAG (as --where tag:TAG; `recsys tags` lists them), ordered by "
                   "your taste times the tag's probability, e.g. --tag chill.")
@_where_option
@_library_options()
@_push_options
@click.option("--json", "as_json", is_flag=True, help="Print the ranked list as JSON (the file is written too).")
@click.option("--explain", is_flag=True,
              help="Show per track the like-probability (the stars shown are 1 + 4 x it) and the nearest liked and "
                   "disliked tracks (stars, similarity); with --json, as fields.")
@click.option("--queue", is_flag=True,
              help="With an MPD library (--mpd): also append the tracks to MPD's queue (nothing queued is removed).")
@click.pass_context
def playlist(ctx, top_n, out, name, seeds, seed_playlists, mode, min_stars, include_rated, include_played,
             max_per_artist, max_per_album, fmt, force, no_rest, tag, where, db, folders, as_json, explain, queue):
    """Write a playlist of unrated tracks you are likely to like (XSPF, opens in Clementine, Strawberry, VLC).

    Score = the probability that you like a track: your rated (and often played) tracks vote for their nearest
    tracks and for the rest of their album and artist, blended with the classifier's estimate when `recsys
    train-classifier` found that it helps.
    Only tracks your ratings vouch for (more than half of their votes from tracks you like,
    `recommend.min_liked_share`; a track that shares no album or artist with one you like needs four liked tracks'
    worth of votes, `recommend.min_audio_votes`, and is left out when its album or artist is one you rated without
    liking any of it, `recommend.block_unliked_albums`): the playlist stops short rather than fill up with tracks
    your ratings argue against. At most 3 tracks per artist and per album (the folder stands in for a missing album
    tag; raised to top-n / the albums and artists of your liked tracks when that is more, unless given), one
    artist twice in a row only when no other is near in the order, no duplicates; a shorter playlist says which
    rule stopped it. Works without a trained classifier (the neighbour votes alone). --where keeps only the
    candidates that match, e.g. --where 'genre:ambient year:1990..1999 -artist:enya'.

    \b
    Examples:
      recsys playlist --top-n 30 --out ~/party.xspf
      recsys playlist --seed-playlist ~/Music/road-trip.m3u8 --out ~/road-trip-more.xspf
      recsys playlist --tag chill --top-n 20
    """
    from recsys.app.playlist import PlaylistRequest, make_playlist

    settings = _library_settings(ctx, db, folders)
    if queue:
        from recsys.app.mpd import queue_playlist, require_mpd

        require_mpd(settings, "--queue")  # before anything is ranked or written
    result = make_playlist(settings, PlaylistRequest(top_n=top_n, out=out, name=name, seeds=seeds,
                                                     include_rated=include_rated, mode=mode, min_stars=min_stars,
                                                     include_played=include_played, max_per_artist=max_per_artist,
                                                     max_per_album=max_per_album, fmt=fmt, force=force,
                                                     where=where, seed_playlists=seed_playlists,
                                                     rest=not no_rest, tag=tag))
    _render_playlist(result, as_json, explain)
    _push(settings, name or settings.recommend.name, result.tracks)
    if queue:
        click.echo(_one_line(queue_playlist(settings, result)), err=True)
    _remember(settings, db, folders)


def _render_playlist(result, as_json: bool, explain: bool) -> None:
    """The notes, then the ranked list (a table or JSON), then where it was written (`playlist`, `radio`)."""
    for note in result.notes:
        click.echo(f"note: {_one_line(note)}", err=True)
    if as_json:
        click.echo(json.dumps([_track_json(t, explain) for t in result.tracks], ensure_ascii=False, indent=1))
    else:
        mark = any(t.shown_from == "rating" for t in result.tracks)  # "yours" marks the owner's own stars
        for rank, t in enumerate(result.tracks, 1):
            whose = ("yours " if t.shown_from == "rating" else " " * 6) if mark else ""
            stars = "" if t.shown is None else f"{t.shown * 5:4.1f}* {whose} "
            line = f"{rank:3d}  {stars}{_one_line(t.label)}  ({_one_line(t.album or '-')})"
            click.echo(line)
            if explain:
                click.echo(f"       {_explain(t)}")
    click.echo(f"wrote {len(result.tracks)} tracks ({result.scorer}) to {result.path}", err=as_json)


def _track_json(t, explain: bool) -> dict:
    stars = None if t.predicted is None else round(t.predicted * 5, 2)
    out = {"key": t.key, "path": t.path, "start_s": t.start_s, "score": round(t.score, 6),
           "predicted_rating": t.predicted, "predicted_stars": stars,
           "stars": None if t.shown is None else round(t.shown * 5, 2), "stars_from": t.shown_from,
           "artist": t.artist, "title": t.title, "album": t.album}
    if explain:
        out["explain"] = {"like_probability": None if t.like is None else round(t.like, 4),
                          "like_classifier": None if t.like_model is None else round(t.like_model, 4),
                          "like_neighbours": None if t.like_neighbours is None else round(t.like_neighbours, 4),
                          "nearest_liked": [n.as_json() for n in t.near_liked],
                          "nearest_disliked": [n.as_json() for n in t.near_disliked],
                          "same_album_voters": dict(zip(("liked", "not_liked"), t.album_voters, strict=True)),
                          "same_artist_voters": dict(zip(("liked", "not_liked"), t.artist_voters, strict=True))}
    return out


def _explain(t) -> str:
    parts = []
    if t.like is not None:
        parts.append(f"like {t.like:.0%}" + (f" (classifier {t.like_model:.0%}, neighbours {t.like_neighbours:.0%})"
                                            if t.like_model is not None else " (neighbours)"))
    for what, near in (("near liked", t.near_liked), ("near disliked", t.near_disliked)):
        if near:
            parts.append(f"{what}: " + "; ".join(f"{_one_line(n.label)} {n.stars:g}* cos {n.similarity:.2f}"
                                                 for n in near))
    for what, (yes, no) in (("its album", t.album_voters), ("its artist", t.artist_voters)):
        if yes or no:
            parts.append(f"{what}: {yes} liked, {no} not liked")
    return "  ".join(parts)


def _named_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="track", desc=desc, dynamic_ncols=True, file=sys.stderr, disable=None,
                leave=False)


def _render_scores(scores) -> None:
    def fmt(value) -> str:
        return "  n/a" if value != value else f"{value:.3f}"  # NaN: no usable query

    for s in scores:
        m = s.metrics
        click.echo(f"  {_one_line(s.label)} ({s.encoder_id}, from {s.source}): same-album precision@10 "
                   f"{fmt(m['album_p10'])} (chance {fmt(m['album_chance'])}) over {m['album_queries']} queries, "
                   f"same-artist {fmt(m['artist_p10'])} (chance {fmt(m['artist_chance'])}) over "
                   f"{m['artist_queries']} queries ({m['tracks']} tracks)")
    if not any(s.comparable for s in scores):
        click.echo("  no two tracks share an album tag: these numbers cannot compare encoders on this library")


@main.command("path")
@click.argument("a")
@click.argument("b")
@click.option("--steps", type=Count(2, MAX_PATH_STEPS), default=20, show_default=True,
              help="Tracks in the path, A and B included.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Playlist file [default: ~/Music/recommendations/path-<date>.xspf, never overwritten].")
@click.option("--format", "fmt", type=click.Choice(PLAYLIST_FORMATS), default=None,
              help="Playlist format [default: xspf, or m3u8 when --out ends in .m3u8].")
@click.option("--max-per-artist", type=Count.of(RecommendSettings, "max_per_artist"), default=None,
              help="At most this many tracks of one artist, A and B included [default: 3].")
@click.option("--max-per-album", type=Count.of(RecommendSettings, "max_per_album"), default=None,
              help="At most this many tracks of one album, A and B included [default: 3].")
@click.option("--force", is_flag=True, help="Overwrite --out when it exists (only a playlist is replaced).")
@click.option("--json", "as_json", is_flag=True, help="Print the path as JSON (the file is written too).")
@_where_option
@_push_options
@click.pass_context
def path_(ctx, a, b, steps, out, fmt, max_per_artist, max_per_album, force, as_json, where):
    """A playlist that leads from track A to track B by sound.

    A and B are named as for `recsys similar` (a path, a file:// URI or "artist - title"). The way between their
    vectors is split into --steps points; each takes the nearest track not used yet, under the playlist's rules
    (artist and album caps, never the same artist twice in a row, no duplicates). A plays first, B last.
    With --where, the tracks on the way must match (e.g. --where 'genre:ambient'; A and B are yours to choose).

    \b
    Example:
      recsys path "Nils Frahm - Says" "Aphex Twin - Xtal" --steps 15 --out ~/frahm-to-aphex.m3u8
    """
    from recsys.app.path import PathRequest, make_path

    settings = _settings(ctx)
    result = make_path(settings, PathRequest(a, b, steps, out, fmt, force, max_per_artist, max_per_album, where))
    for note in result.notes:
        click.echo(f"note: {_one_line(note)}", err=True)
    if as_json:
        click.echo(json.dumps([{"key": t.key, "path": t.path, "start_s": t.start_s, "score": round(score, 6),
                                "artist": t.artist, "title": t.title, "album": t.album}
                               for t, score in zip(result.tracks, result.similarity, strict=True)],
                              ensure_ascii=False, indent=1))
    else:
        for i, (t, score) in enumerate(zip(result.tracks, result.similarity, strict=True), 1):
            click.echo(f"{i:3d}  {score:6.3f}  {_one_line(t.label)}  ({_one_line(t.album or '-')})")
    click.echo(f"wrote {len(result.tracks)} tracks to {result.path}", err=as_json)
    _push(settings, "recsys path", result.tracks)


@main.command()
@click.option("--top-n", type=Count.of(RecommendSettings, "top_n"), default=None,
              help="At most this many tracks (fewer when the rules leave fewer; a note says which) [default: 100].")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Playlist file [default: ~/Music/recommendations/radio-<date>.xspf, replacing the day's radio "
                   "recsys wrote there, never another file].")
@click.option("--format", "fmt", type=click.Choice(PLAYLIST_FORMATS), default=None,
              help="Playlist format [default: xspf, or m3u8 when --out ends in .m3u8].")
@click.option("--play", is_flag=True, help="Hand the playlist to the player (MPRIS OpenUri, or its track list).")
@click.option("--player", default=None,
              help="Which MPRIS player to ask, e.g. clementine or strawberry [default: the one playing].")
@click.option("--new-only", is_flag=True, help="Only tracks you have not rated and do not play often.")
@click.option("--force", is_flag=True, help="Overwrite --out when it exists (only a playlist is replaced).")
@_where_option
@_library_options(remembers=False)
@_push_options
@click.option("--json", "as_json", is_flag=True, help="Print the playlist as JSON (the file is written too).")
@click.option("--keep", type=click.IntRange(min=1), default=10, show_default=True,
              help="With MPD: tracks kept queued after the playing one.")
@click.option("--once", is_flag=True, help="With MPD: top the queue up once and return, instead of following.")
@click.pass_context
def radio(ctx, top_n, out, fmt, play, player, new_only, force, where, db, folders, as_json, keep, once):
    """A playlist around the track your player plays now (asked over MPRIS: Clementine, Strawberry, VLC...).

    The playing track is the seed of the playlist's ranking: tracks that sound like it, your disliked ratings
    voting against their neighbours, the classifier blended in when it was found better than chance. Rated and
    often played tracks are included (--new-only leaves them out); --where filters them as for `recsys playlist`.
    The player is only told when you pass --play.

    With --mpd (or an MPD library remembered) it follows MPD instead: whenever MPD's song changes it appends that
    song's best neighbours to MPD's queue until --keep tracks follow the current one, never removing what you
    queued, until Ctrl-C; no file is written.

    \b
    Example:
      recsys radio --top-n 30 --play
      recsys radio --where genre:jazz --new-only
      recsys radio --mpd localhost:6600 --keep 10
    """
    settings = _library_settings(ctx, db, folders)
    from recsys.app.mpd import MpdRadioRequest, reads_mpd, run_mpd_radio

    if reads_mpd(settings):
        done = run_mpd_radio(settings, MpdRadioRequest(keep, once, new_only, where),
                             say=lambda line: click.echo(_one_line(line), err=True))
        ended = "stopped (Ctrl-C)" if done.stopped == "interrupted" else "done"
        click.echo(f"radio {ended}: queued {done.added} tracks in MPD at {done.target}", err=True)
        return
    from recsys.app.radio import RadioRequest, make_radio

    result = make_radio(settings,
                        RadioRequest(top_n, out, fmt, force, play, player, new_only, where))
    click.echo(f"playing: {_one_line(result.playing.label)} in {_one_line(result.playing.identity)}", err=True)
    _render_playlist(result.playlist, as_json, explain=False)
    if result.handed:
        click.echo(_one_line(result.handed), err=True)
    _push(settings, "recsys radio", result.playlist.tracks)


@main.command("map")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The HTML page [default: ~/Music/recommendations/recsys-map-<date>.html, never overwritten].")
@click.option("--colour", "--color", "colour", type=click.Choice(["rating", "genre"]), default="rating",
              show_default=True, help="Colour the points by your stars or by genre.")
@click.option("--tag", default=None, metavar="TAG",
              help="Colour the points by how strongly their sound carries TAG (its probability; the scale is split "
                   "at the threshold --where tag:TAG selects by; `recsys tags` lists the tags), e.g. --tag chill. "
                   "Overrides --colour.")
@click.option("--layout", type=click.Choice(["auto", "neighbours", "pca"]), default="auto", show_default=True,
              help="neighbours: tracks that sound alike side by side (about 12 s per 20,000 tracks); pca: the two "
                   "main axes (fast); auto: neighbours up to 20,000 tracks, pca above.")
@click.option("--force", is_flag=True, help="Overwrite --out when it is a map recsys wrote.")
@_where_option
@_library_options(remembers=False)
@click.pass_context
def map_(ctx, out, colour, tag, layout, force, where, db, folders):
    """A map of your library: one HTML page, every track a point, tracks that sound alike close together.

    Coloured by your stars (or genre, or a tag from the sound with --tag), the regions of liked and disliked tracks
    shaded, each region named by the album, artist or genre most of its tracks share, title and artist (and the
    strongest tags, when the index has them) on hover; wheel zooms, drag pans. The page is self-contained: it opens
    offline and fetches nothing.
    With --where, only the tracks that match, laid out among themselves.

    \b
    Example:
      recsys map --out ~/library-map.html && xdg-open ~/library-map.html
      recsys map --where genre:jazz --where rating:4..
      recsys map --tag chill
    """
    from recsys.app.map import MapRequest, make_map

    result = make_map(_library_settings(ctx, db, folders), MapRequest(out, colour, layout, force, where, tag))
    for note in result.notes:
        click.echo(f"note: {_one_line(note)}", err=True)
    matching = f" matching '{_one_line(result.where)}'" if result.where else ""
    click.echo(f"wrote a map of {result.tracks} tracks{matching} ({result.rated} rated, {result.layout} layout) to "
               f"{result.path}")

@main.command("train-encoder")
@_library_options()
@click.option("--from", "base", type=click.Choice(TRAINABLE_ENCODERS), default=None,
              help="Fine-tune the pretrained musicnn, or train the cnn from scratch [config: musicnn].")
@click.option("--epochs", type=Count.of(TrainSettings, "epochs"), default=None,
              help="Passes over the library [config: 30].")
@click.option("--batch-size", type=Count.of(TrainSettings, "batch_size"), default=None,
              help="Tracks per step [config: 64].")
@click.option("--lr", type=Finite(min=0, max=rule_of(TrainSettings, "lr").hi, min_open=True), default=None,
              help="Learning rate [default: 1e-4 fine-tuning musicnn, 1e-3 cnn].")
@click.option("--seed", type=Count.of(TrainSettings, "seed"), default=None,
              help="Seed: the same seed and library train the same encoder.")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N [default: auto].")
@click.option("--resume", is_flag=True, help="Continue the last run (after Ctrl-C or a kill) up to --epochs.")
@click.option("--activate/--no-activate", default=None,
              help="Force or forbid making it the current encoder [default: only if it groups held-out albums "
                   "better].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_context
def train_encoder(ctx, db, folders, base, epochs, batch_size, lr, seed, device, resume, activate, quiet):
    """Teach the encoder your own music, without labels.

    \b
    Decodes a few short windows spread through each track once into an audio cache (<home>/cache/audio,
    ~0.73 MiB per track), then learns so that excerpts of two parts of one track, each changed in level, EQ,
    noise, pitch, tempo and bandwidth, map close together and other tracks apart (contrastive, NT-Xent).
    Whole albums are held out: half pick the best epoch, half judge the result. Runs on CUDA with mixed
    precision when present, else on the CPU; each run has its own folder under <home>/models/runs; Ctrl-C keeps
    the checkpoint of the last finished epoch, which --resume continues. Every run is tracked in MLflow (the
    variable keeps `mlflow ui` from writing ~/.config/mlflow/telemetry.json):
      MLFLOW_DISABLE_TELEMETRY=true mlflow ui --backend-store-uri sqlite:///<home>/mlflow.db

    \b
    Afterwards the new encoder is compared with the current one on the held-out albums (same-album and
    same-artist precision@10, your tags as labels) and becomes the current encoder only if it is better; then
    `recsys embed` re-embeds the library with it.
    """
    from recsys.app.train_encoder import train_encoder as run

    settings = _library_settings(ctx, db, folders, train={"base": base, "epochs": epochs, "batch_size": batch_size,
                                                         "lr": lr, "seed": seed, "device": device})
    report = run(settings, resume=resume, activate=activate, progress=None if quiet else _named_bar, echo=click.echo)
    click.echo(f"trained {report.base} {len(report.fit.history)} epoch(s) on {report.tracks} tracks on "
               f"{report.device} in {report.seconds:.0f} s; best checkpoint {report.fit.best} (MLflow run "
               f"{report.run_id})")
    if report.scores:
        click.echo(f"retrieval on the {report.split['test_tracks']} held-out test tracks:")
        _render_scores(report.scores)
    click.echo(report.decision)
    if report.activated:
        click.echo(f"current encoder: {report.active_path}; run `recsys embed` to re-embed the library with it")
    _remember(settings, db, folders)


@main.command("eval")
@click.option("--encoder", "encoders", multiple=True,
              help=f"auto, {', '.join(BUILTIN_ENCODERS)}, a checkpoint .pt, module:Class, or 'table' (repeatable) "
                   "[default: table].")
@_library_options(remembers=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (n/a values as null).")
@click.option("--playlist", "of_playlist", is_flag=True,
              help="Score playlists instead: hide whole albums' ratings, train and build as the real commands do, "
                   "count the hidden liked and disliked tracks in the top 20 / top 100.")
@click.option("--splits", type=Count.of(RecommendSettings, "eval_splits"), default=None,
              help="With --playlist: seeded splits [5].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_context
def eval_(ctx, encoders, db, folders, as_json, of_playlist, splits, quiet):
    """How well an encoder groups tracks that belong together, on your library.

    For every track with an album (artist) tag, the share of its 10 nearest neighbours from the same album
    (artist), out of as many as could be: same-album and same-artist precision@10, 1.0 is perfect. The track itself
    and copies of its file are left out. Without --encoder it scores the current table (what `recsys similar`
    uses); several --encoder options are scored side by side on the same tracks, e.g.
    `recsys eval --encoder dsp --encoder ~/.local/share/recsys/models/runs/<run>/best.pt`.


    With --playlist it scores the playlists your ratings give instead (see README): per seeded split, the ratings of
    about a quarter of your albums are hidden, the classifier is trained on the rest and the playlist built exactly
    as `recsys playlist` builds it; the hidden liked (4+ stars) and disliked (2- stars) tracks in its top 20 and
    top 100 are counted, next to random, the neighbour votes alone and the classifier alone (mean ± standard error
    over the splits), and the blend is compared with each split by split ("better": more hidden liked tracks in the
    top 20 by over two standard errors, and no more disliked).
    """
    if of_playlist:
        _eval_playlist(ctx, db, folders, splits, as_json, quiet)
        return
    from recsys.app.evaluate import evaluate

    scores = evaluate(_library_settings(ctx, db, folders), encoders,
                      progress=None if quiet else (lambda n: _named_bar(n, "caching")))
    if as_json:
        click.echo(json.dumps([s.as_json() for s in scores], ensure_ascii=False, indent=1))
        return
    click.echo("retrieval on your library (tags as labels):")
    _render_scores(scores)


def _eval_playlist(ctx, db, folders, splits, as_json, quiet) -> None:
    from recsys.app.evaluate import eval_playlist

    shown = not quiet and sys.stderr.isatty()
    result = eval_playlist(_library_settings(ctx, db, folders), splits,
                           progress=(lambda line: click.echo(_one_line(line), err=True)) if shown else None)
    if as_json:
        click.echo(json.dumps(result.as_json(), ensure_ascii=False, indent=1))
        return
    click.echo(f"{result.splits} splits: {result.hidden:.1f} ratings hidden per split ({result.hidden_liked:.1f} "
               f"liked, {result.hidden_disliked:.1f} disliked) among {result.candidates:.0f} candidates")
    click.echo("hidden tracks per split, mean ± standard error over the splits:")
    click.echo(f"{'':18s}{'top 20 liked':>14s}{'disliked':>13s}{'top 100 liked':>15s}{'disliked':>13s}")
    for name, m in result.rankers.items():
        se = result.stderr.get(name, {})
        cells = [_mean_pm(m[k], se.get(k, math.nan)) for k in ("top20_liked", "top20_disliked", "top100_liked",
                                                                 "top100_disliked")]
        click.echo(f"{name:18s}{cells[0]:>14s}{cells[1]:>13s}{cells[2]:>15s}{cells[3]:>13s}")
    click.echo("the classifier gate of each split, as `recsys train-classifier` decides (the playlist row blends "
               "only where it kept the classifier):")
    for verdict, n in result.gate.items():
        click.echo(f"  {n} of {result.splits} splits: {_one_line(verdict)}")
    if result.comparisons:
        click.echo("the blend against each, split by split (top 20 hidden liked, disliked; better: more liked by over "
                   "two standard errors and no more disliked):")
    for c in result.comparisons:
        click.echo(f"  vs {c.other + ':':17s}{_mean_pm(c.liked, c.liked_se, '+'):>14s}"
                   f"{_mean_pm(c.disliked, c.disliked_se, '+'):>14s}  {c.verdict} ({c.splits} splits)")
    for note in result.notes:
        click.echo(f"note: {_one_line(note)}")


def _mean_pm(mean: float, se: float, sign: str = "") -> str:
    """``mean ± se``, the mean alone when there is no standard error (one split)."""
    return f"{mean:{sign}.2f}" if math.isnan(se) else f"{mean:{sign}.2f} ± {se:.2f}"


@main.command("config")
@click.option("--defaults", is_flag=True, help="Print the packaged defaults, one comment per setting.")
@click.option("--forget", is_flag=True,
              help="Forget the remembered --db/--library (removes <home>/remembered.json, nothing else).")
@click.pass_context
def config_(ctx, defaults, forget):
    """The settings in force, as YAML to copy into your own config file, each value with where it came from:
    default < user file (--config, else ~/.config/recsys/config.yaml) < remembered (the --db/--library of an
    earlier command) < environment RECSYS_<SECTION>__<KEY> < flags; every value is checked against its range
    first. --forget forgets the remembered library: the next commands read the others again."""
    from recsys.config import as_yaml, default_yaml

    if defaults and forget:
        raise click.UsageError("--defaults and --forget do different things: give one")
    if forget:
        obj = ctx.find_root().obj
        click.echo(_one_line(forget_library(obj["config"], obj["home"])))
        return
    click.echo(default_yaml() if defaults else as_yaml(_settings(ctx)), nl=False)


@main.command()
@click.pass_context
def prune(ctx):
    """Remove the tracks whose file no longer exists.

    `recsys embed` keeps the vectors of missing files (an unmounted drive, a run over part of the library) and
    leaves them out of results until the files are back; prune removes them for good.
    """
    from recsys.app.maintenance import prune as run

    report = run(_settings(ctx))
    for path in report.removed[:10]:
        click.echo(f"  removed: {_one_line(path)}")
    if len(report.removed) > 10:
        click.echo(f"  ... and {len(report.removed) - 10} more")
    click.echo(f"removed {len(report.removed)} track(s) and {report.failures_removed} recorded failure(s) of "
               "missing files" + (f"; index: {report.index.get('count')} tracks" if report.index else ""))


@main.command()
@click.pass_context
def repair(ctx):
    """Check the home and repair what is damaged: the table (restored from its last readable version, or rebuilt
    from the index), the index, the MLflow store and the classifier."""
    from recsys.app.maintenance import repair as run

    for line in run(_settings(ctx)).lines:
        click.echo(_one_line(line))


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to build the demo library and its home [default: a new temporary folder].")
@click.pass_context
def demo(ctx, directory):
    """Try recsys on a small synthetic library: builds it (several styles and formats, a Clementine database with
    ratings, file names that break naive URL handling), embeds it and shows similar tracks.

    Its home is <dir>/home, or --home when given (a new, empty or earlier demo's folder; RECSYS_HOME is not used,
    so your own home is never touched). Every command it prints can be run again by hand."""
    from recsys.app.demo import run_demo

    obj = ctx.find_root().obj
    run_demo(directory, echo=click.echo, progress=_progress_bar, home=None if obj["home_from_env"] else obj["home"])


if __name__ == "__main__":  # pragma: no cover
    main()
