"""The MPRIS client against a real, private session bus (dbus-daemon started here) and a player of the test's own."""

from __future__ import annotations

import pytest

from recsys.player.mpris import MprisError, hand_over, local_path, now_playing
from recsys.synth.mpris import FakePlayer, have_dbus_daemon, private_session_bus


@pytest.fixture(scope="module")
def bus():
    if not have_dbus_daemon():
        pytest.skip("dbus-daemon is not installed")
    with private_session_bus() as address:
        yield address


def test_reads_the_playing_track_as_a_local_path(bus):
    url = "file:///music/A%20%23b/caf%C3%A9%20100%25.flac"
    with FakePlayer(bus, url=url, title="Café", artist=["Ann", "Bo"], album="X"):
        track = now_playing(address=bus)
    assert track.path == "/music/A #b/café 100%.flac" and track.query == track.path
    assert (track.title, track.artist, track.album, track.identity) == ("Café", "Ann, Bo", "X", "Fake Player")


def test_a_stream_falls_back_to_artist_and_title_and_the_playing_player_wins(bus):
    with FakePlayer(bus, name="paused", url="file:///p.flac", status="Paused"), \
            FakePlayer(bus, name="radio", url="http://stream.example/live", title="Song", artist=["Band"]):
        track = now_playing(address=bus)
        assert track.path is None and track.query == "Band - Song" and track.player.endswith(".radio")
        assert now_playing("paused", address=bus).path == "/p.flac"  # asked by name
        with pytest.raises(MprisError, match="no MPRIS player named 'vlc' is running .*paused, radio"):
            now_playing("vlc", address=bus)


def test_clear_errors_when_no_player_or_nothing_plays(bus):
    with pytest.raises(MprisError, match="no MPRIS player is running"):
        now_playing(address=bus)
    with FakePlayer(bus, status="Stopped"), pytest.raises(MprisError, match="Fake Player is playing nothing"):
        now_playing(address=bus)


def test_clear_errors_without_a_bus(monkeypatch, tmp_path):
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    with pytest.raises(MprisError, match="DBUS_SESSION_BUS_ADDRESS is not set"):
        now_playing()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/nobody-listens")
    with pytest.raises(MprisError, match="cannot reach the D-Bus session bus at unix:path=.*nobody-listens"):
        now_playing()


def test_hands_a_playlist_over_by_open_uri_else_by_track_list(bus):
    with FakePlayer(bus, url="file:///a.flac") as player:
        assert hand_over("file:///tmp/p.xspf", ["file:///a.flac"], address=bus) == "opened in Fake Player"
    assert ("OpenUri", ("file:///tmp/p.xspf",)) in player.calls
    with FakePlayer(bus, url="file:///a.flac", open_uri=False, track_list=True) as player:
        said = hand_over("file:///tmp/p.xspf", ["file:///1.flac", "file:///2.flac"], address=bus)
    assert said == "added 2 tracks to Fake Player's track list"
    added = [body for member, body in player.calls if member == "AddTrack"]
    # inserted at the start one by one, so last to first; the first track becomes current
    assert [b[0] for b in added] == ["file:///2.flac", "file:///1.flac"] and [b[2] for b in added] == [False, True]
    with FakePlayer(bus, url="file:///a.flac", open_uri=False), pytest.raises(MprisError, match="no editable"):
        hand_over("file:///tmp/p.xspf", [], address=bus)


def test_local_path_only_for_local_files():
    assert local_path("file:///x/%E2%9C%93.ogg") == "/x/✓.ogg"
    assert local_path("file://localhost/x.ogg") == "/x.ogg"
    assert local_path("http://host/x.ogg") is None and local_path("") is None
    assert local_path("file://otherhost/x.ogg") is None
