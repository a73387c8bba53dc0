"""`recsys demo` is the first thing a new user runs: it must work end to end and show real, measured results."""

from __future__ import annotations

import xspf_lib

from recsys.demo import run_demo


def test_demo_embeds_searches_learns_and_recommends(tmp_path):
    lines: list[str] = []
    result = run_demo(str(tmp_path / "demo"), echo=lines.append)
    assert result["embedded"] == 40
    # neighbours share the query's style far more often than chance; the playlist leans to the liked styles
    assert result["style_agreement"] >= 2 * result["chance"]
    assert result["playlist_liked_share"] > result["playlist_liked_chance"]
    playlist = xspf_lib.Playlist.parse(str(tmp_path / "demo" / "demo-playlist.xspf"))
    assert len(playlist.trackList) == 6
    assert any("MAE (stars)" in line for line in lines)
    training = result["training"]  # stage 1 ran and was judged against the current encoder on the same tracks
    assert training["before"]["tracks"] == training["after"]["tracks"] == 12  # the held-out test albums
    assert training["activated"] == (training["after"]["album_p10"] > training["before"]["album_p10"])
