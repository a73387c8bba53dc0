from pathlib import Path

import pytest
import yaml

from recsys.config import ConfigError, as_dict, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_default_yaml_lists_exactly_the_code_defaults():
    documented = yaml.safe_load((ROOT / "recsys" / "default.yaml").read_text())
    assert documented == as_dict(load_settings(environ={}))


def test_default_yaml_comments_every_setting():
    lines = (ROOT / "recsys" / "default.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert lines[i - 1].strip().startswith("#"), f"setting without a comment: {line!r}"


def test_layers_apply_in_order(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("embed:\n  workers: 3\n  batch_size: 8\naudio:\n  crop_position: start\n")
    env = {"RECSYS_EMBED__WORKERS": "5", "RECSYS_HOME": "/tmp/h"}
    s = load_settings(user, overrides={"embed": {"batch_size": 4, "device": None}}, environ=env)
    assert s.embed.workers == 5  # env beats the file
    assert s.embed.batch_size == 4  # the flag beats the file
    assert s.embed.device == "auto"  # a flag not given leaves the default
    assert s.audio.crop_position == "start"
    assert s.home_path == Path("/tmp/h")


def test_list_settings_from_env_split_on_pathsep(tmp_path):
    s = load_settings(environ={"RECSYS_LIBRARY__FOLDERS": "/a:/b"})
    assert s.library.folders == ["/a", "/b"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("embed:\n  wrokers: 3\n", r"unknown setting 'embed.wrokers' \(from config file .*bad.yaml, line 2\)"),
        ("embed:\n  workers: many\n", "embed.workers: expected a whole number, got 'many'"),
        ("embed: 3\n", "expected a section"),
        ("- a\n", "expected a mapping"),
        ("embed: [\n", "is not valid YAML at line 2"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, message):
    user = tmp_path / "bad.yaml"
    user.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(user, environ={})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize(
    "text, message",
    [
        ("index:\n  hnsw_m: 0\n",
         r"index.hnsw_m = 0 is not allowed \(allowed: from 2 up to 512; from config file .*bad.yaml, line 2\)"),
        ("audio:\n  crop_position: middle\n",
         r"audio.crop_position = 'middle' is not allowed \(allowed: one of center, start, end"),
        ("audio:\n  crop_seconds: -5\n", r"audio.crop_seconds = -5.0 is not allowed \(allowed: above 0 up to 600"),
        ("audio:\n  decode_timeout_s: .nan\n", r"audio.decode_timeout_s = nan is not allowed"),
        ("recommend:\n  w_model: .inf\n", r"recommend.w_model = inf is not allowed"),
        ("recommend:\n  mmr_lambda: 1.5\n", r"recommend.mmr_lambda = 1.5 is not allowed \(allowed: from 0 up to 1"),
        ("embed:\n  device: gpu\n", r"embed.device = 'gpu' is not allowed \(allowed: auto, cpu, cuda, cuda:N or mps"),
        ("embed:\n  batch_size: true\n", r"embed.batch_size: expected a whole number, got True"),
        ("train:\n  channels: [32, 0]\n", r"train.channels = \[32, 0\] is not allowed"),
        ("train:\n  window_seconds: 2\n", r"train.window_seconds = 2.0 is not allowed \(allowed: from 3"),
        ("embed:\n  encoder: ''\n", r"embed.encoder = '' is not allowed"),
    ],
)
def test_every_setting_is_range_checked_at_load(tmp_path, text, message):
    user = tmp_path / "bad.yaml"
    user.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(user, environ={})
    assert "\n" not in str(err.value)


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"embed.workers = -1 is not allowed \(allowed: from 0 up to 1024; "
                                          r"from environment variable RECSYS_EMBED__WORKERS\)"):
        load_settings(environ={"RECSYS_EMBED__WORKERS": "-1"})
    with pytest.raises(ConfigError, match=r"embed.workers: expected a whole number, got 'x' \(from environment "
                                          r"variable RECSYS_EMBED__WORKERS\)"):
        load_settings(environ={"RECSYS_EMBED__WORKERS": "x"})
    with pytest.raises(ConfigError, match=r"unknown setting 'embed.wrokers' \(from environment variable "
                                          r"RECSYS_EMBED__WROKERS\)"):
        load_settings(environ={"RECSYS_EMBED__WROKERS": "2"})
    with pytest.raises(ConfigError, match="two underscores, e.g. RECSYS_EMBED__WORKERS"):
        load_settings(environ={"RECSYS_EMBED_WORKERS": "2"})
    assert load_settings(environ={"RECSYS_DEBUG": "1", "RECSYS_AUDIO__CROP_SECONDS": "10"}).audio.crop_seconds == 10


def test_a_bad_flag_value_says_it_came_from_the_command_line():
    with pytest.raises(ConfigError, match=r"index.hnsw_m = 1 is not allowed .*from the command line"):
        load_settings(overrides={"index": {"hnsw_m": 1}}, environ={})


def test_broken_yaml_gives_the_line(tmp_path):
    user = tmp_path / "broken.yaml"
    user.write_text("embed:\n  workers: 2\n  batch_size: [8\naudio:\n  crop_seconds: 3\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML at line \d+, column \d+: "):
        load_settings(user, environ={})


def test_defaults_are_within_their_ranges_and_the_packaged_yaml_is_readable():
    from recsys.config import default_yaml

    assert yaml.safe_load(default_yaml()) == as_dict(load_settings(environ={}))


def test_one_line_in_the_writers_table_reaches_the_settings_and_every_format_flag(tmp_path):
    """A new playlist format is one line in ``recsys.choices.PLAYLIST_WRITERS`` (= ``recsys.playlists.WRITERS``).
    On main the settings and the four ``--format`` flags each listed xspf and m3u8 themselves. The table is edited
    in a fresh process before anything reads it, as a line in the file would be."""
    import subprocess
    import sys

    code = f"""
import click
from recsys.choices import PLAYLIST_WRITERS
PLAYLIST_WRITERS["pls"] = "recsys.playlists.m3u8:encode"
from recsys.cli import main
from recsys.config import load_settings
from recsys.playlists import WRITERS, write_playlist
flags = {{name: p.type.choices for name, command in main.commands.items() for p in command.params
         if "--format" in p.opts}}
assert len(flags) == 4 and all("pls" in set(c) for c in flags.values()), flags
assert load_settings(None, overrides={{"recommend": {{"format": "pls"}}}}, environ={{}},
                     remembered=False).recommend.format == "pls"
assert write_playlist(__import__("pathlib").Path({str(tmp_path / "x.pls")!r}), [], "t", fmt="pls").is_file()
mode = next(p for p in main.commands["playlist"].params if "--mode" in p.opts)
from recsys.recommender.rank import MODES
assert tuple(mode.type.choices) == MODES
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
