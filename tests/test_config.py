from pathlib import Path

import pytest
import yaml

from recsys.config import ConfigError, as_dict, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_default_yaml_lists_exactly_the_code_defaults():
    documented = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert documented == as_dict(load_settings(environ={}))


def test_default_yaml_comments_every_setting():
    lines = (ROOT / "configs" / "default.yaml").read_text().splitlines()
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
        ("embed:\n  wrokers: 3\n", "unknown setting 'wrokers'"),
        ("embed:\n  workers: many\n", "expected int"),
        ("embed: 3\n", "expected a section"),
        ("- a\n", "expected a mapping"),
        ("embed: [\n", "cannot be read"),
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
