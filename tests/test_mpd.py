"""MPD as a library, a radio and a playlist target, against Debian's real `mpd` started here on 127.0.0.1.

One MPD serves the module: its music folder holds real, tagged FLAC files (a synthetic home's tracks, whose vectors
are written through the real table and snapshot code); its database, sticker file and music folder are fingerprinted
around every test, so nothing recsys does may change them. Ratings are given the way a user gives them, as MPD
`rating` stickers set through MPD's own protocol.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mpd
import mutagen.flac
import pytest
from click.testing import CliRunner
from synth_home import SynthHome, make_home

from recsys.cli import main
from recsys.config import load_settings
from recsys.errors import RecsysError
from recsys.servers import PushEntry
from recsys.servers.mpd import Address, parse_address
from recsys.servers.mpd_push import push
from recsys.synth.audio import STYLES, synth_track, write_audio

MPD = shutil.which("mpd") or ("/usr/bin/mpd" if os.path.exists("/usr/bin/mpd") else None)
pytestmark = pytest.mark.skipif(MPD is None, reason="Debian's mpd is not installed (apt-get install mpd; .ci/run "
                                                    "installs it when missing)")
ROOT = Path(__file__).resolve().parents[1]
SR = 22050
LIKED = 10  # the sticker value of a liked track on MPD's usual 0-10 scale
DISLIKED = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tagged_flac(path: Path, song) -> None:
    """A real 3 s FLAC tagged as the synthetic home's song (MPD reads the tags, not the home's database)."""
    index = int(path.name[:3])
    write_audio(path, synth_track(STYLES[index % 4], 3.0, sample_rate=SR, seed=index), SR, "flac")
    tags = mutagen.flac.FLAC(path)
    tags.update({"title": song.title, "artist": song.artist, "album": song.album, "genre": song.genre,
                 "tracknumber": str(song.track)})
    tags.save()


@dataclass
class Server:
    root: Path
    synth: SynthHome
    port: int
    socket: str
    process: subprocess.Popen

    @property
    def tcp(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, address: str | None = None) -> mpd.MPDClient:
        client = mpd.MPDClient()
        client.timeout = 10
        client.connect(self.socket) if address is None else client.connect("127.0.0.1", self.port)
        return client

    def uri(self, i: int) -> str:
        return os.path.relpath(self.synth.songs[i].path, self.synth.music)

    def run(self, *args: str, home: Path | None = None):
        return CliRunner().invoke(main, ["--home", str(home or self.synth.home), *args], catch_exceptions=False)


def _start_mpd(folder: Path, music: Path, port: int) -> tuple[subprocess.Popen, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "playlists").mkdir(exist_ok=True)
    sock = str(folder / "socket")
    (folder / "mpd.conf").write_text(f'''music_directory "{music}"
playlist_directory "{folder / 'playlists'}"
db_file "{folder / 'database'}"
sticker_file "{folder / 'sticker.sql'}"
state_file "{folder / 'state'}"
log_file "{folder / 'log'}"
bind_to_address "127.0.0.1"
bind_to_address "{sock}"
port "{port}"
auto_update "no"
zeroconf_enabled "no"
audio_output {{
    type "null"
    name "null"
    mixer_type "none"
}}
''', encoding="utf-8")
    process = subprocess.Popen([MPD, "--no-daemon", str(folder / "mpd.conf")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            client = mpd.MPDClient()
            client.connect(sock)
            if "updating_db" not in client.status():
                client.disconnect()
                return process, sock
            client.disconnect()
        except (OSError, mpd.ConnectionError):
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"mpd did not start: {(folder / 'log').read_text(errors='replace')[-500:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    root = tmp_path_factory.mktemp("mpd")
    synth = make_home(root, n=48, suffix=".flac", write=_tagged_flac)
    process, sock = _start_mpd(root / "mpd", synth.music, _free_port())
    port = int((root / "mpd" / "mpd.conf").read_text().split('port "')[1].split('"')[0])
    srv = Server(root, synth, port, sock, process)
    client = srv.client()
    for i in range(48):  # half the first group liked, half the last disliked: the rest is for recsys to rank
        if i % 8 == 0:
            client.sticker_set("song", srv.uri(i), "rating", str(LIKED))
        elif i % 8 == 3:
            client.sticker_set("song", srv.uri(i), "rating", str(DISLIKED))
    client.sticker_set("song", srv.uri(5), "playCount", "7")  # as a play counter keeps it (MPD itself keeps none)
    client.disconnect()
    yield srv
    process.terminate()
    process.wait(10)


def _fingerprint(srv: Server) -> dict[str, str]:
    marks = {}
    for path in [*sorted(srv.synth.music.rglob("*")), srv.root / "mpd" / "database", srv.root / "mpd" / "sticker.sql"]:
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        marks[str(path)] = f"{stat.st_mtime_ns} {digest}"
    return marks


@pytest.fixture(autouse=True)
def untouched(server):
    """MPD's music folder, database and sticker file are the same after every test as before it."""
    before = _fingerprint(server)
    yield
    assert _fingerprint(server) == before


@pytest.fixture
def queue(server):
    """MPD's queue, emptied before the test (it is the user's; the tests fill it as a user would)."""
    client = server.client()
    client.stop()
    client.clear()
    yield client
    client.disconnect()


def test_addresses():
    assert parse_address("localhost") == Address("localhost", 6600)
    assert parse_address("mpd://10.0.0.2:6601") == parse_address("10.0.0.2:6601") == Address("10.0.0.2", 6601)
    assert parse_address("[::1]:7000") == Address("::1", 7000)
    assert parse_address("/run/mpd/socket").socket == "/run/mpd/socket"
    assert parse_address(str(Path("mpd:///run/mpd/socket"))) == parse_address("mpd:///run/mpd/socket")
    assert parse_address(str(Path("mpd://h:1"))) == Address("h", 1)
    with pytest.raises(RecsysError, match="not an MPD address"):
        parse_address("host:port")


def test_embed_through_mpd_remembered_and_a_rerun_embeds_nothing(server, tmp_path):
    home = tmp_path / "home"
    result = server.run("embed", "--mpd", server.socket, "--encoder", "dsp", "--workers", "1", "-q", home=home)
    assert result.exit_code == 0, result.output
    assert "remembered for the next commands: --mpd " + server.socket in result.output
    from recsys.index.store import TrackStore

    keys = sorted(TrackStore.open(home).states())
    assert keys == sorted(s.path for s in server.synth.songs)  # MPD's files, as this machine's paths
    again = server.run("embed", "--encoder", "dsp", "--workers", "1", home=home)  # the remembered MPD
    assert again.exit_code == 0, again.output
    assert "using the library remembered" in again.output and "embedded 0, up to date 48" in again.output
    assert "up to date 48" in again.output
    forgot = server.run("config", "--forget", home=home)
    assert forgot.exit_code == 0 and f"forgot the remembered library: --mpd {server.socket}" in forgot.output


def test_over_tcp_the_music_folder_comes_from_the_setting_else_a_clear_line(server, tmp_path):
    result = server.run("status", "--mpd", server.tcp)
    assert result.exit_code == 1
    assert "tells its music_directory only over its local socket" in result.output
    assert "Traceback" not in result.output
    config = tmp_path / "config.yaml"
    config.write_text(f"mpd:\n  music_directory: {server.synth.music}\n", encoding="utf-8")
    ok = server.run("--config", str(config), "status", "--mpd", server.tcp)
    assert ok.exit_code == 0, ok.output
    assert f"library: 48 tracks (MPD at {server.tcp})" in ok.output
    both = server.run("status", "--mpd", server.tcp, "--db", str(tmp_path / "x.db"))
    assert both.exit_code == 2 and "give --db or --mpd, not both" in both.output
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f"mpd:\n  music_directory: {tmp_path}\n", encoding="utf-8")
    bad = server.run("--config", str(wrong), "status", "--mpd", server.tcp)
    assert bad.exit_code == 1 and "set mpd.music_directory" in bad.output
    gone = server.run("status", "--mpd", f"127.0.0.1:{_free_port()}")
    assert gone.exit_code == 1 and "cannot reach MPD at 127.0.0.1:" in gone.output


def _groups(server: Server, rows) -> list[int]:
    index = {s.path: i for i, s in enumerate(server.synth.songs)}
    return [server.synth.styles[index[r]] for r in rows]


def test_stickers_drive_the_taste_playlist(server, tmp_path, monkeypatch):
    from recsys.library.sources import load_library
    from recsys.servers import mpd as client

    monkeypatch.setattr(client, "PAGE", 7)  # the database read in pages, as a large library is
    settings = load_settings(overrides={"library": {"db": f"mpd://{server.socket}"}})
    tracks = {t.path: t for t in load_library(settings.library.db, [], settings=settings).tracks}
    assert len(tracks) == 48 and set(tracks) == {s.path for s in server.synth.songs}
    monkeypatch.undo()
    assert tracks[server.synth.songs[0].path].rating == 1.0  # 10 of 10
    assert tracks[server.synth.songs[3].path].rating == pytest.approx(0.2)
    assert tracks[server.synth.songs[1].path].rating is None and tracks[server.synth.songs[1].path].playcount == 0
    assert tracks[server.synth.songs[5].path].playcount == 7
    stars = load_settings(overrides={"library": {"db": f"mpd://{server.socket}"},
                                     "mpd": {"rating_scale": 5, "play_count_sticker": ""}})
    rescaled = {t.path: t for t in load_library(stars.library.db, [], settings=stars).tracks}
    assert rescaled[server.synth.songs[0].path].rating == 1.0  # 10 on a scale of 5: at most 5 stars
    assert rescaled[server.synth.songs[3].path].rating == pytest.approx(0.4)
    assert rescaled[server.synth.songs[5].path].playcount == 0  # no play-count sticker read
    out = tmp_path / "taste.m3u8"
    result = server.run("playlist", "--mpd", server.socket, "--top-n", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    picked = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
    groups = _groups(server, picked)  # mostly the unrated tracks of the liked group, none of the disliked one
    assert len(picked) == 4 and groups[0] == 0 and groups.count(0) >= 3 and 3 not in groups
    assert all(tracks[p].rating is None for p in picked)


def _queued(client) -> list[str]:
    return [e["file"] for e in client.playlistinfo()]


def test_playlist_queue_appends_and_keeps_the_users_entries(server, queue, tmp_path):
    mine = [server.uri(1), server.uri(2)]
    for uri in mine:
        queue.add(uri)
    result = server.run("playlist", "--mpd", server.socket, "--top-n", "3", "--out", str(tmp_path / "q.xspf"),
                        "--queue")
    assert result.exit_code == 0, result.output
    now = _queued(queue)
    assert now[:2] == mine and len(now) == 5
    assert "queued 3 tracks in MPD at" in result.output and "none removed" in result.output
    other = tmp_path / "other.xspf"
    refused = server.run("playlist", "--db", str(server.synth.db), "--queue", "--out", str(other))
    assert refused.exit_code == 1 and "--queue appends to MPD's queue: it needs the library read from MPD" in \
        refused.output
    assert not other.exists() and _queued(queue) == now


def test_playlist_push_saves_an_mpd_stored_playlist_through_the_cli(server, tmp_path):
    """`recsys playlist --push` on an MPD library reaches the MPD pusher: a stored playlist with the written tracks;
    --dry-run first changes nothing."""
    client = mpd.MPDClient()
    client.connect(server.socket)
    try:
        name = "recsys cli mix"
        out = tmp_path / "push.m3u8"
        dry = server.run("playlist", "--mpd", server.socket, "--top-n", "3", "--name", name, "--out", str(out),
                         "--push", "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert name not in {p["playlist"] for p in client.listplaylists()}
        pushed = server.run("playlist", "--mpd", server.socket, "--top-n", "3", "--name", name, "--out", str(out),
                            "--force", "--push")
        assert pushed.exit_code == 0, pushed.output
        written = [os.path.relpath(line, server.synth.music) for line in out.read_text().splitlines()
                   if line and not line.startswith("#")]
        assert len(written) == 3 and client.listplaylist(name) == written
    finally:
        client.disconnect()


def test_push_stored_playlist_create_replace_refuse_and_dry_run(server, tmp_path):
    settings = load_settings(overrides={"home": str(tmp_path / "home"), "library": {"db": f"mpd://{server.socket}"}})
    songs = server.synth.songs
    entries = [PushEntry(s.path, s.path, s.title, s.artist) for s in songs[:3]]
    outside = PushEntry("/elsewhere/x.flac", "/elsewhere/x.flac")
    client = server.client()
    client.playlistadd("mine", server.uri(9))  # the user's own stored playlist

    dry = push(settings, "recsys mix", entries, dry_run=True)
    assert (dry.action, dry.tracks, dry.dry_run) == ("create", 3, True)
    assert "recsys mix" not in {p["playlist"] for p in client.listplaylists()}

    made = push(settings, "recsys mix", [*entries, outside], dry_run=False)
    assert (made.action, made.tracks, made.missing) == ("create", 3, ["/elsewhere/x.flac"])
    assert client.listplaylist("recsys mix") == [server.uri(i) for i in range(3)]
    assert push(settings, "recsys mix", entries, dry_run=False).action == "unchanged"
    other = [PushEntry(s.path, s.path) for s in songs[4:6]]
    assert push(settings, "recsys mix", other, dry_run=True).action == "replace"
    assert client.listplaylist("recsys mix") == [server.uri(i) for i in range(3)]
    assert push(settings, "recsys mix", other, dry_run=False).action == "replace"
    assert client.listplaylist("recsys mix") == [server.uri(4), server.uri(5)]

    refused = push(settings, "mine", entries, dry_run=False)
    assert refused.action == "refused" and "'mine' that recsys did not make" in refused.detail
    assert client.listplaylist("mine") == [server.uri(9)]
    client.disconnect()


def test_push_to_the_queue_only_appends(server, queue, tmp_path):
    settings = load_settings(overrides={"home": str(tmp_path / "home"), "library": {"db": f"mpd://{server.tcp}"},
                                        "mpd": {"music_directory": str(server.synth.music)}})
    queue.add(server.uri(7))
    entries = [PushEntry(s.path, s.path) for s in server.synth.songs[10:12]]
    assert push(settings, "x", entries, dry_run=True, mode="queue").action == "queue"
    assert _queued(queue) == [server.uri(7)]
    report = push(settings, "x", entries, dry_run=False, mode="queue")
    assert report.action == "queue" and report.target == server.tcp
    assert _queued(queue) == [server.uri(7), server.uri(10), server.uri(11)]


def _wait(predicate, radio: subprocess.Popen, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and radio.poll() is None:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    radio.kill()
    raise AssertionError(f"the radio did not top the queue up: {radio.communicate()}")


def _radio(server: Server, address: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "recsys.cli", "--home", str(server.synth.home), "radio", "--mpd",
                             address, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_radio_follows_the_song_and_keeps_the_users_queue(server, queue):
    a, b, mine = 1, 2, server.uri(45)  # A of the second group, B of the third; the user's own entry after A
    queue.add(server.uri(a))
    queue.add(mine)
    queue.play(0)
    queue.pause(1)  # MPD keeps A as its current song (the null output would move on after 3 s)
    radio = _radio(server, server.socket, "--keep", "4")
    try:
        _wait(lambda: len(queue.playlistinfo()) == 5, radio)
        first = _queued(queue)
        assert first[:2] == [server.uri(a), mine]
        near_a = _groups(server, [os.path.join(server.synth.music, u) for u in first[2:]])
        assert near_a.count(1) >= 2 and 2 not in near_a, near_a  # A's neighbours, not yet B's
        queue.add(server.uri(b))
        queue.play(5)  # the user moves on to B: four of B's neighbours are queued after it
        queue.pause(1)
        _wait(lambda: len(queue.playlistinfo()) == 10, radio)
        after = _queued(queue)
        assert after[:6] == [*first, server.uri(b)]  # nothing of what was queued moved or went
        near_b = _groups(server, [os.path.join(server.synth.music, u) for u in after[6:]])
        assert near_b.count(2) >= 2 and 1 not in near_b, near_b  # B's neighbours now, no more of A's
    finally:
        radio.send_signal(signal.SIGINT)
        out, err = radio.communicate(timeout=20)
    assert radio.returncode == 0, err
    assert "radio stopped (Ctrl-C): queued 7 tracks in MPD at" in err
    assert "Traceback" not in err


def test_radio_once_and_when_mpd_goes_away(server, tmp_path):
    folder = tmp_path / "mpd2"
    folder.mkdir()
    shutil.copy(server.root / "mpd" / "database", folder / "database")  # a second MPD on the same music
    process, sock = _start_mpd(folder, server.synth.music, _free_port())
    try:
        client = mpd.MPDClient()
        client.connect(sock)
        client.add(server.uri(1))
        client.play(0)
        client.pause(1)
        once = server.run("radio", "--mpd", sock, "--keep", "2", "--once")
        assert once.exit_code == 0, once.output
        assert len(client.playlistinfo()) == 3 and "radio done: queued 2 tracks" in once.output
        client.disconnect()
        radio = _radio(server, sock, "--keep", "2")
        while "following MPD" not in radio.stderr.readline():  # the radio waits for MPD's player now
            assert radio.poll() is None
        process.terminate()
        process.wait(10)
        out, err = radio.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert radio.returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("recsys: error:")]
    assert len(lines) == 1 and "went away" in lines[0], err
