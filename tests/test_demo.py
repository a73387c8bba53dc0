"""`recsys demo` is the first thing a new user runs: it must work end to end and show real, measured results."""

from __future__ import annotations

import xspf_lib

from recsys.app.demo import run_demo


def test_demo_embeds_searches_learns_and_recommends(tmp_path):
    lines: list[str] = []
    home = tmp_path / "my home"
    result = run_demo(str(tmp_path / "demo"), echo=lines.append, home=str(home))
    assert (home / "tracks.lance").is_dir() and not (tmp_path / "demo" / "home").exists()
    commands = [line for line in lines if line.lstrip().startswith("$ recsys")]
    assert len(commands) >= 5 and all(f"--home '{home}'" in c for c in commands), commands
    assert all("--db" in c for c in commands if " similar " not in c), commands
    assert result["embedded"] == 40
    # neighbours share the query's style far more often than chance; the playlist leans to the liked styles
    assert result["style_agreement"] >= 2 * result["chance"]
    assert result["playlist_liked_share"] > result["playlist_liked_chance"]
    playlist = xspf_lib.Playlist.parse(str(tmp_path / "demo" / "demo-playlist.xspf"))
    assert 1 <= len(playlist.trackList) <= 6  # the evidence rule may stop it short, and then says so
    # short exactly when the demo says so
    assert (len(playlist.trackList) < 6) == any(line.startswith("note: the playlist is short") for line in lines)
    assert any("ROC-AUC" in line and "AUC low" in line for line in lines)  # the classifier comparison table
    training = result["training"]  # stage 1 ran and was judged against the current encoder on the same tracks
    assert training["before"]["tracks"] == training["after"]["tracks"] == 12  # the held-out test albums
    assert training["activated"] == (training["after"]["album_p10"] > training["before"]["album_p10"])



def test_demo_refuses_a_home_that_is_not_a_demos(tmp_path):
    from click.testing import CliRunner

    from recsys.cli import main

    real = tmp_path / "real-home"
    real.mkdir()
    (real / "tracks.lance").mkdir()
    r = CliRunner().invoke(main, ["--home", str(real), "demo", "--dir", str(tmp_path / "d")])
    assert r.exit_code == 1
    assert r.output.startswith(f"recsys: error: {real} is not empty and not a demo's home")
    assert sorted(p.name for p in real.iterdir()) == ["tracks.lance"]
