"""A Subsonic server as the library, against the real program: Supysonic 0.7.9 under waitress, started here on
127.0.0.1 in a temporary folder (tests/supysonic_server.py). Skipped, saying why, only when it is not installed
(`.ci/run` installs it).

What is proved: every song listed through the API and embedded with no file access (no path_map: the excerpts
fetched by Range requests, decoded in worker processes), a re-run embeds nothing, the server remembered, ratings and
stars given in the server (by the test, through the server's own API, as the user's app would) drive
`recsys playlist --push`, whose playlist the server then lists with the right songs, a playlist recsys did not make
is never touched, --dry-run changes nothing, the server's database and music folder are not changed by what only
reads, and the password is in no file under the home and no output.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import mutagen
import pytest
from click.testing import CliRunner
from supysonic_server import PASSWORD, USER, Supysonic, unavailable

from recsys.cli import main
from recsys.errors import RecsysError
from recsys.synth.audio import STYLES, synth_track, write_audio

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")

SR = 22050
LIKED, DISLIKED = STYLES[0], STYLES[1]


def _tagged_music(folder: Path) -> Path:
    """Nine tracks, FLAC, Ogg and MP3 in turn, three styles, tagged (Supysonic reads the tags)."""
    folder.mkdir(parents=True)
    for i in range(9):
        style, fmt = STYLES[i % 3], ("flac", "ogg", "mp3")[i % 3 if i < 3 else (i // 3) % 3]
        path = write_audio(folder / f"{i:02d} {style}.{fmt}", synth_track(style, 8.0, sample_rate=SR, seed=i), SR,
                           fmt)
        tags = mutagen.File(path, easy=True)
        if tags.tags is None:
            tags.add_tags()
        tags["title"], tags["artist"], tags["album"] = f"{style} {i}", f"artist {style}", f"album {style}"
        tags.save()
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("supysonic")
    started = Supysonic(root / "server", _tagged_music(root / "music")).start()
    yield started
    started.stop()


def _server_state(server: Supysonic) -> list:
    """Every row of the server's database but its own note of which client names connected (``client_prefs``,
    which Supysonic writes on any client's first request): ratings, stars, plays, playlists, tracks, users."""
    with closing(sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return [(t, sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"')))) for t in tables if t != "client_prefs"]


def _fingerprint(*folders: Path) -> str:
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(f"{path}\0{path.stat().st_mtime_ns}\0".encode() + path.read_bytes())
    return digest.hexdigest()


class Run:
    def __init__(self, home: Path, server: Supysonic) -> None:
        self.home, self.server, self.outputs = home, server, []

    def __call__(self, *args: str, password: str = PASSWORD):
        result = CliRunner().invoke(main, ["--home", str(self.home), *args], catch_exceptions=False,
                                    env={"RECSYS_SUBSONIC_PASSWORD": password})
        self.outputs.append(result.output)
        return result


def _songs(server: Supysonic) -> dict[str, dict]:
    """title -> song, as the server lists them."""
    page = server.call("search3", [("query", ""), ("songCount", "100")])["searchResult3"]["song"]
    return {s["title"]: s for s in page}


def _playlists(server: Supysonic) -> dict[str, dict]:
    return {p["name"]: p for p in server.call("getPlaylists")["playlists"].get("playlist", [])}


def _entries(server: Supysonic, playlist_id: str) -> list[str]:
    return [e["id"] for e in server.call("getPlaylist", [("id", playlist_id)])["playlist"].get("entry", [])]


def test_a_subsonic_library_embedded_over_http_rated_in_the_server_and_pushed_back(server, tmp_path):
    run = Run(tmp_path / "home", server)
    untouched = _fingerprint(server.music)
    before = (_fingerprint(server.music), _server_state(server))

    # embed through the API alone: every song's excerpts fetched by Range requests, in two worker processes
    r = run("embed", "--subsonic", server.url + "/", "--subsonic-user", USER, "--encoder", "dsp", "--workers", "2",
            "-q")
    assert r.exit_code == 0, r.output
    assert "library: 9 tracks from Subsonic server" in r.output and "embedded 9" in r.output, r.output
    remembered = json.loads((run.home / "remembered.json").read_text())
    assert remembered == {"library": {"db": None, "folders": [], "subsonic": server.url}, "subsonic": {"user": USER}}
    from recsys.index.store import TrackStore

    keys = sorted(TrackStore.open(run.home).states())
    songs = _songs(server)
    assert keys == sorted(f"subsonic+{server.url}/{s['id']}/{s['path']}" for s in songs.values())

    # a re-run (the server remembered) embeds nothing; status reads the same library
    r = run("embed", "--encoder", "dsp", "-q")
    assert r.exit_code == 0 and "embedded 0" in r.output and "up to date 9" in r.output, r.output
    r = run("status", "--json")
    assert r.exit_code == 0, r.output
    assert (_fingerprint(server.music), _server_state(server)) == before  # reading changed nothing of the server's

    # the user rates in the server (its own API): the liked style 5 stars, one starred, the disliked 1 star
    for title, song in songs.items():
        number = int(title.rsplit(" ", 1)[1])
        if title.startswith(LIKED) and number < 6:
            server.call("setRating", [("id", song["id"]), ("rating", "5")])
        elif title.startswith(DISLIKED):
            server.call("setRating", [("id", song["id"]), ("rating", "1")])
    starred = songs[f"{STYLES[2]} 2"]
    server.call("star", [("id", starred["id"])])
    server.call("createPlaylist", [("name", "Mine"), ("songId", starred["id"])])  # the user's own playlist
    mine = _playlists(server)["Mine"]

    # --dry-run says what would change and changes nothing
    before = (_fingerprint(server.music), _server_state(server))
    out = tmp_path / "out" / "picks.xspf"
    r = run("playlist", "--top-n", "3", "--out", str(out), "--name", "For you", "--push", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    assert "would create playlist 'For you'" in r.output and "dry run, nothing changed" in r.output, r.output
    assert (_fingerprint(server.music), _server_state(server)) == before and "For you" not in _playlists(server)

    # --push: the playlist on the server, owned by the user, with the songs the file lists, in order
    r = run("playlist", "--top-n", "3", "--out", str(out), "--force", "--name", "For you", "--push", "--json")
    assert r.exit_code == 0, r.output
    picked = json.loads(r.stdout)
    # the unrated songs that share an album with a liked one: 5 stars given, and a star (4 stars)
    assert f"{LIKED} 6" in [p["title"] for p in picked], picked
    assert {p["title"] for p in picked} <= {f"{LIKED} 6", f"{STYLES[2]} 5", f"{STYLES[2]} 8"}, picked
    assert "subsonic: create playlist 'For you'" in r.output
    assert f"<location>subsonic+{server.url}/" in out.read_text()  # the file names the server's songs as they are
    made = _playlists(server)["For you"]
    assert made["owner"] == USER and made["comment"] == "made by recsys"
    assert _entries(server, made["id"]) == [songs[p["title"]]["id"] for p in picked]

    # pushed again after a change of taste: replaced in place (same playlist), never a second one
    server.call("setRating", [("id", songs[f"{LIKED} 6"]["id"]), ("rating", "5")])
    r = run("playlist", "--top-n", "2", "--out", str(out), "--force", "--name", "For you", "--push", "--json")
    assert r.exit_code == 0, r.output
    assert "replace playlist 'For you'" in r.output, r.output  # its last tracks rest: the list changed
    after = [p for p in server.call("getPlaylists")["playlists"]["playlist"] if p["name"] == "For you"]
    assert len(after) == 1 and after[0]["id"] == made["id"]
    assert _entries(server, made["id"]) == [songs[p["title"]]["id"] for p in json.loads(r.stdout)]

    # a playlist recsys did not make is never touched, whatever the flags
    before = (_fingerprint(server.music), _server_state(server))
    r = run("playlist", "--top-n", "3", "--out", str(out), "--force", "--name", "Mine", "--push")
    assert r.exit_code == 1 and "'Mine'" in r.output and "was not made by recsys" in r.output, r.output
    assert _entries(server, mine["id"]) == [starred["id"]] and _server_state(server) == before[1]

    # the music folder was never written; the password is in no file of the home and no output
    assert _fingerprint(server.music) == untouched
    secrets = (PASSWORD.encode(), PASSWORD.encode().hex().encode())
    for path in (p for p in run.home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not any(s in data for s in secrets), path
    assert not any(PASSWORD in o or PASSWORD.encode().hex() in o for o in run.outputs)


def test_server_errors_are_one_line_naming_the_server_and_never_the_password(server, tmp_path):
    run = Run(tmp_path / "home", server)
    r = run("status", "--subsonic", server.url, "--subsonic-user", USER, password="wrong-" + PASSWORD)
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert f"the Subsonic server at {server.url} refused ping for user 'admin'" in r.output and "error 40" in r.output
    assert PASSWORD not in r.output
    r = run("status", "--subsonic", "http://127.0.0.1:9", "--subsonic-user", USER)  # the discard port: closed
    assert r.exit_code == 1 and "cannot reach the Subsonic server at http://127.0.0.1:9 " in r.output, r.output
    r = run("status", "--subsonic", f"http://{USER}:{PASSWORD}@127.0.0.1:1", "--subsonic-user", USER)
    assert r.exit_code == 1 and "never inside the URL" in r.output and PASSWORD not in r.output, r.output
    assert not (run.home / "remembered.json").exists()  # a failed command remembers nothing


def test_path_map_reads_the_local_file_and_keeps_every_vector(server, tmp_path):
    """A song whose file path_map finds here is that file (its key the local path), read without HTTP; the vectors
    embedded over HTTP are reused by content id, so switching decodes nothing."""
    run = Run(tmp_path / "home", server)
    assert run("embed", "--subsonic", server.url, "--subsonic-user", USER, "--encoder", "dsp", "--workers", "1",
               "-q").exit_code == 0
    config = tmp_path / "config.yaml"
    config.write_text(f"subsonic:\n  path_map: ['/={server.music}']\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["--home", str(run.home), "--config", str(config), "embed", "--encoder", "dsp",
                                  "--workers", "1", "-q"], env={"RECSYS_SUBSONIC_PASSWORD": PASSWORD},
                           catch_exceptions=False)
    assert r.exit_code == 0 and "embedded 0" in r.output and "reused 9" in r.output, r.output


def test_the_password_file_must_be_readable_by_its_owner_only(tmp_path, monkeypatch):
    from recsys.servers.subsonic import read_password

    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o644)
    with pytest.raises(RecsysError, match=r"can be read by others \(mode 644\): run chmod 600") as caught:
        read_password(str(secret), environ={})
    assert PASSWORD not in str(caught.value)
    secret.chmod(0o600)
    assert read_password(str(secret), environ={}) == PASSWORD
    assert read_password(str(secret), environ={"RECSYS_SUBSONIC_PASSWORD": "from-env"}) == "from-env"
    with pytest.raises(RecsysError, match="RECSYS_SUBSONIC_PASSWORD"):
        read_password(None, environ={})


def test_push_from_a_library_with_no_server_is_one_line(small_library):
    from recsys.app.push import push_written
    from recsys.config import load_settings

    settings = load_settings(overrides={"library": {"db": str(small_library.db)}}, remembered=False)
    with pytest.raises(RecsysError, match="a clementine library has none"):
        push_written(settings, "x", [], dry_run=True)
    folders = load_settings(overrides={"library": {"folders": [str(small_library.music)]}}, remembered=False)
    with pytest.raises(RecsysError, match="this library is music folders"):
        push_written(folders, "x", [], dry_run=True)



def test_a_server_that_does_not_deliver_is_not_the_files_failure(server, monkeypatch):
    """A song its server cannot deliver now (here: the server's address moved to a closed port) is neither stored
    nor recorded as a failure, so the next run tries it again; the message names the location, no URL."""
    from recsys.config import load_settings
    from recsys.embedder.decoding import SERVER_UNREACHED, DecodeSpec, Job, _decode
    from recsys.library import remote
    from recsys.library.sources.subsonic import read_subsonic
    from recsys.servers.subsonic import SubsonicClient

    monkeypatch.setenv("RECSYS_SUBSONIC_PASSWORD", PASSWORD)
    settings = load_settings(overrides={"library": {"subsonic": server.url}, "subsonic": {"user": USER}},
                             remembered=False)
    track = read_subsonic(settings.library.subsonic, settings.subsonic).tracks[0]
    spec = DecodeSpec(16000, 1.0, "center", 0.0, 30.0, 3)
    st = remote.stat(track.path)
    assert _decode(Job(track, st.st_size, st.st_mtime_ns, ""), spec).clip is not None
    remote.install({remote.server_prefix(server.url): SubsonicClient("http://127.0.0.1:9", USER, PASSWORD)})
    try:
        outcome = _decode(Job(track, st.st_size, st.st_mtime_ns, ""), spec)
    finally:
        remote.install({remote.server_prefix(server.url): SubsonicClient(server.url, USER, PASSWORD)})
    assert outcome.clip is None and outcome.error == SERVER_UNREACHED and not outcome.too_long
