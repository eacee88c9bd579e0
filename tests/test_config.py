"""Config files: defaults, merging, and errors that name the file, key and line."""

from __future__ import annotations

import pytest

from mailcoach_server.config import load_config
from mailcoach_server.errors import ConfigError


def test_defaults_run_with_no_file():
    config = load_config()
    assert config.domain == "localdomain"
    assert (config.smtp.host, config.smtp.port, config.imap.port) == ("127.0.0.1", 2525, 1143)
    assert config.models.default == "openai/gpt-4o-mini"
    assert [a.address for a in config.agents] == ["swe1@localdomain"]
    assert config.robot_spec("shell@localdomain").kind == "shell"


def test_user_file_merges_over_defaults_and_flags_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("smtp:\n  port: 2600\nagents:\n  parties:\n    swe1@localdomain: false\n"
                    "    rev@localdomain: {model: openai/gpt-4o, budget: 0.5}\n"
                    "prices:\n  my/model: {input: 1, output: 2}\n")
    config = load_config(path, **{"smtp.port": 2700, "budget": 1.5})
    assert config.smtp.port == 2700 and config.smtp.auth_required is True
    assert [a.address for a in config.agents] == ["rev@localdomain"]
    assert config.agent_spec("rev@localdomain").budget == 0.5
    assert config.prices["my/model"] == (1.0, 2.0)
    assert config.budget == 1.5


@pytest.mark.parametrize(("text", "key", "line"), [
    ("smtp:\n  port: twenty\n", "smtp.port", 2),
    ("limits:\n  max_hop: 3\n", "limits.max_hop", 2),
    ("colour: blue\n", "colour", 1),
    ("robots:\n  shell@localdomain:\n    kind: shell\n    timeout: -1\n", "timeout", None),
    ("robots:\n  x@localdomain:\n    kind: no-such-kind\n", "no-such-kind", None),
])
def test_errors_name_file_and_key(tmp_path, text, key, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        config = load_config(path)
        # robot options are checked when the robot is loaded, at start
        from mailcoach_server.runtime.plugins import load_robot
        for spec in config.robots:
            load_robot(spec, tmp_path)
    message = str(error.value)
    assert key in message
    if line is not None:
        assert str(path) in message and f"line {line}" in message


def test_yaml_syntax_error_is_a_config_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("smtp: [unclosed\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(error.value)


def test_print_config_is_the_shipped_default_and_loads(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mailcoach_server", "serve", "--print-config"],
                         capture_output=True, text=True, check=True).stdout
    assert "smtp:" in out and "max_auto_rounds" in out
    path = tmp_path / "copy.yaml"
    path.write_text(out)
    import dataclasses

    assert dataclasses.replace(load_config(path), source="<defaults>") == load_config()


def test_the_readme_config_example_loads(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", readme, re.DOTALL).group(1)
    path = tmp_path / "example.yaml"
    path.write_text(example)
    config = load_config(path)
    assert config.agent_spec("reviewer@localdomain").model == "openai/gpt-4o"
    assert config.robot_spec("shell@localdomain").options["sandbox"] == "bwrap"
