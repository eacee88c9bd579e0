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
    examples = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
    assert len(examples) >= 2
    for number, example in enumerate(examples):  # every YAML block in the README loads
        path = tmp_path / f"example{number}.yaml"
        path.write_text(example)
        config = load_config(path)
    [main] = [e for e in examples if "reviewer@localdomain" in e]
    path.write_text(main)
    config = load_config(path)
    assert config.agent_spec("reviewer@localdomain").model == "openai/gpt-4o"
    assert config.robot_spec("shell@localdomain").options["sandbox"] == "bwrap"


# -- hardening: one line naming the key, for every key -------------------------------


@pytest.mark.parametrize(("text", "key", "line", "problem"), [
    ("smtp: 5\n", "smtp", 1, "expected a mapping"),
    ("smtp:\n  port: 70000\n", "smtp.port", 2, "0..65535"),
    ("imap:\n  port: -1\n", "imap.port", 2, "0..65535"),
    ("imap: {idle_timeout: 0}\n", "imap.idle_timeout", 1, "at least"),
    ("limits: {max_models_in_flight: 0}\n", "limits.max_models_in_flight", 1, "at least 1"),
    ("smtp: {host: ''}\n", "smtp.host", 1, "must not be empty"),
    ("budget: .nan\n", "budget", 1, "finite"),
    ("budget_tokens: 1.5\n", "budget_tokens", 1, "integer"),
    ("budget_tokens: -3\n", "budget_tokens", 1, "negative"),
    ("default_price: 5\n", "default_price", 1, "input"),
    ("default_price: {input: -1}\n", "default_price.input", 1, "negative"),
    ("agents: {parties: 5}\n", "agents.parties", 1, "expected a mapping"),
    ("agents:\n  parties:\n    a/b@localdomain: {}\n", "agents.parties.a/b@localdomain", 3,
     "not a plain mailbox name"),
    ("agents:\n  parties:\n    x@localdomain: {budget_tokens: many}\n",
     "agents.parties.x@localdomain.budget_tokens", 3, "integer"),
    ("agents:\n  parties:\n    x@localdomain: {model: ''}\n",
     "agents.parties.x@localdomain.model", 3, "must name a model"),
    ("robots:\n  sh/ell@localdomain: {kind: shell}\n", "robots.sh/ell@localdomain", 2,
     "not a plain mailbox name"),
    ("user: 'a b@localdomain'\n", "user", 1, "not a mail address"),
    ("models:\n  chat_templates: 5\n", "models.chat_templates", 2, "expected a mapping"),
    ("models:\n  chat_templates:\n    '*x*': {alternate: true}\n",
     "models.chat_templates.*x*.alternate", 3, "alternate_roles, system_role"),
    ("models:\n  chat_templates:\n    '*x*': {system_role: 1}\n",
     "models.chat_templates.*x*.system_role", 3, "true or false"),
    ("models:\n  chat_templates:\n    '*x*': on\n", "models.chat_templates.*x*", 3,
     "alternate_roles"),
], ids=lambda value: value if isinstance(value, str) and "\n" not in value else None)
def test_bad_values_are_one_line_naming_key_and_line(tmp_path, text, key, line, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: line {line}, key '{key}': "), message
    assert problem in message and "\n" not in message


def test_a_flag_over_a_broken_section_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("smtp: 5\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, **{"smtp.port": 2600})
    assert str(error.value) == f"{path}: line 1, key 'smtp': expected a mapping, got 5"


def test_a_bad_flag_value_says_command_line(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(None, **{"smtp.port": 70000})
    assert str(error.value) == "command line: smtp.port: must be 0..65535, got 70000"


def _leaves(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict) and value and key != "chat_templates":
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _with(data, dotted, value):
    import copy

    data = copy.deepcopy(data)
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return data


def test_every_key_of_the_shipped_config_refuses_a_wrong_type(tmp_path):
    import yaml

    from mailcoach_server.config import default_config_text

    shipped = yaml.safe_load(default_config_text())
    checked = 0
    for dotted, value in _leaves(shipped):
        if dotted.startswith("robots."):
            continue  # robot options are checked by the robot, at start (test above)
        wrong = 5 if isinstance(value, (dict, list, str)) else [1, 2]
        path = tmp_path / "wrong.yaml"
        path.write_text(yaml.safe_dump(_with(shipped, dotted, wrong)))
        with pytest.raises(ConfigError) as error:
            load_config(path)
            pytest.fail(f"{dotted}: {wrong!r} was accepted")
        message = str(error.value)
        assert f"key '{dotted}'" in message and "line " in message, (dotted, message)
        assert "\n" not in message
        checked += 1
    assert checked >= 30


def test_new_keys_load_and_merge(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("budget_tokens: 100000\ndefault_price: null\n"
                    "agents:\n  defaults: {budget_tokens: 5000}\n"
                    "  parties:\n    rev@localdomain: {budget_tokens: 10}\n"
                    "models:\n  chat_templates:\n    '*gemma*': null\n"
                    "    '*gemma-3*': {alternate_roles: true}\n"
                    "    '*llama-2*': {system_role: false}\n")
    config = load_config(path)
    assert config.budget_tokens == 100000 and config.default_price is None
    assert config.agent_defaults.budget_tokens == 5000
    assert config.agent_spec("rev@localdomain").budget_tokens == 10
    templates = config.models.chat_templates
    assert "*gemma*" not in templates
    assert templates["*gemma-3*"] == {"alternate_roles": True}
    assert templates["*llama-2*"] == {"alternate_roles": True, "system_role": False}
    defaults = load_config()
    assert defaults.default_price == (0.15, 0.60) and defaults.budget_tokens is None
    assert defaults.models.chat_templates["*gemma*"] == {"alternate_roles": True,
                                                         "system_role": False}


@pytest.mark.parametrize(("text", "flags", "expected"), [
    ("smtp: 5\n", ["--smtp-port", "2600"], "key 'smtp': expected a mapping"),
    ("smtp: {port: 70000}\n", [], "key 'smtp.port': must be 0..65535"),
    ("agents: {parties: {a/b@localdomain: {}}}\n", [], "not a plain mailbox name"),
    ("", ["--budget-tokens", "-1"], "command line: budget_tokens: must not be negative"),
], ids=["section-and-flag", "port", "party", "flag"])
def test_serve_with_a_bad_config_prints_one_line(tmp_path, text, flags, expected):
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "mailcoach_server", "serve", "--config",
                             str(path), "--data-dir", str(tmp_path / "d"), *flags],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


_SECTIONS = {"smtp": "smtp", "imap": "imap", "limits": "limits", "models": "models"}


def _shipped():
    import yaml

    from mailcoach_server.config import default_config_text

    return yaml.safe_load(default_config_text())


def test_every_default_comes_from_the_shipped_yaml(tmp_path):
    import dataclasses
    from pathlib import Path

    shipped = _shipped()
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing: every value is the shipped one\n")
    config = load_config(empty)
    compared = 0
    for section in _SECTIONS:
        loaded = getattr(config, section)
        for field in dataclasses.fields(loaded):
            assert field.name in shipped[section], f"{section}.{field.name} not in default.yaml"
            value, want = getattr(loaded, field.name), shipped[section][field.name]
            if isinstance(want, list):
                want = tuple(want)
            assert value == want, (section, field.name, value, want)
            compared += 1
    defaults = shipped["agents"]["defaults"]
    for field in dataclasses.fields(config.agent_defaults):
        if field.name != "address":
            assert field.name in defaults, f"agents.defaults.{field.name} not in default.yaml"
            assert getattr(config.agent_defaults, field.name) == defaults[field.name]
            compared += 1
    top = {"domain": config.domain, "user": config.user, "data_dir": config.data_dir,
           "budget": config.budget, "budget_tokens": config.budget_tokens,
           "prices": dict(config.prices)}
    for key, value in top.items():
        want = Path(shipped[key]) if key == "data_dir" else shipped[key]
        assert value == want, (key, value, want)
        compared += 1
    price = shipped["default_price"]
    assert config.default_price == (price["input"], price["output"])
    assert config.auto_create_agents is shipped["agents"]["auto_create"]
    assert [a.address for a in config.agents] == list(shipped["agents"]["parties"])
    assert [r.address for r in config.robots] == list(shipped["robots"])
    covered = {f.name for f in dataclasses.fields(config)} - {"source"}
    assert covered == {*_SECTIONS, *top, "default_price", "auto_create_agents",
                       "agent_defaults", "agents", "robots"}
    assert compared >= 35


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if value is None:
        return 1
    if isinstance(value, str):
        return value + "x"
    return [*value, "extra/model"]  # models.choices


def test_every_shipped_value_is_read_not_a_literal_in_the_loader(tmp_path):
    # Changing any value in a user file changes the loaded config: nothing is hard-wired.
    import yaml

    shipped = _shipped()
    keys = [f"{section}.{name}" for section in _SECTIONS for name in shipped[section]
            if name not in ("chat_templates", "context_windows")]
    keys += ["budget", "budget_tokens", "agents.auto_create", "agents.defaults.budget",
             "agents.defaults.budget_tokens", "agents.defaults.system",
             "agents.defaults.model"]
    for dotted in keys:
        node = shipped
        for part in dotted.split("."):
            node = node[part]
        new = _changed(node)
        if dotted == "agents.defaults.model":
            new = "other/model"
        elif dotted == "agents.defaults.system":
            new = "Be brief."
        path = tmp_path / "one.yaml"
        path.write_text(yaml.safe_dump(_with(shipped, dotted, new)))
        loaded = load_config(path)
        *parents, leaf = dotted.replace("agents.defaults", "agent_defaults").split(".")
        obj = loaded
        for part in parents:
            obj = getattr(obj, part)
        if dotted == "agents.auto_create":
            obj, leaf = loaded, "auto_create_agents"
        value = getattr(obj, leaf)
        assert value == (tuple(new) if isinstance(new, list) else new), (dotted, value, new)


def test_an_emptied_section_takes_the_shipped_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("smtp: null\nimap:\nagents:\n  defaults: null\n")
    config = load_config(path)
    shipped = load_config()
    assert config.smtp == shipped.smtp and config.imap == shipped.imap
    assert config.agent_defaults == shipped.agent_defaults
    assert config.agents == shipped.agents  # merged key by key: the parties stay


def test_party_settings_resolve_own_then_defaults_then_models_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("models: {default: base/model}\n"
                    "agents:\n  defaults: {budget: 0.2, budget_tokens: 900, system: Be kind.}\n"
                    "  parties:\n"
                    "    own@localdomain: {model: own/model, budget: 0.5, system: Be brief.}\n"
                    "    plain@localdomain: {}\n")
    config = load_config(path)
    own = config.party_settings("own@localdomain")
    assert (own.model, own.budget, own.budget_tokens, own.system) == (
        "own/model", 0.5, 900, "Be brief.")
    for address in ("plain@localdomain", "new@localdomain"):  # configured, and auto-created
        settings = config.party_settings(address)
        assert settings.address == address
        assert (settings.model, settings.budget, settings.budget_tokens, settings.system) == (
            "base/model", 0.2, 900, "Be kind.")
    path.write_text("models: {default: base/model}\n"
                    "agents: {defaults: {model: fallback/model},\n"
                    "         parties: {plain@localdomain: {}}}\n")
    config = load_config(path)
    assert config.party_settings("plain@localdomain").model == "fallback/model"
    assert config.models_in_use() == {"base/model", "fallback/model"}


def test_help_is_the_console_and_lists_the_subcommands(capsys):
    from mailcoach_server.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: mailcoach [-h] [-m PATH]")
    for flag in ("--queue", "--chat", "--auto", "--budget", "--memory", "--serve"):
        assert flag in text
    for command in ("serve", "shell-stub", "health"):
        assert f"\n    {command} " in text, command


@pytest.mark.parametrize(("argv", "expected"), [
    (["-q", "file", "--budget", "0.05", "-c"],
     {"command": None, "queue": "file", "budget": 0.05, "chat": True}),
    (["-m", "dir", "--auto", "--budget", "2"],
     {"command": None, "memory": "dir", "auto": True, "budget": 2.0}),
    (["-m", "serve"], {"command": None, "memory": "serve"}),  # a value, not a command
    (["serve", "--budget", "3", "--smtp-port", "0"],
     {"command": "serve", "budget": 3.0, "smtp_port": 0, "print_config": False}),
])
def test_console_flags_need_no_subcommand(argv, expected):
    from mailcoach_server.cli import parser

    args, unknown = parser().parse_known_args(argv)
    assert unknown == []
    assert {key: getattr(args, key) for key in expected} == expected


def test_a_subcommand_counts_only_as_the_first_word(capsys):
    from mailcoach_server.cli import main

    with pytest.raises(SystemExit) as done:
        main(["-c", "serve"])
    assert done.value.code == 2
    assert "unrecognized arguments: serve" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["serve", "--no-such-flag"])
    assert done.value.code == 2
    assert "mailcoach serve: error: unrecognized arguments: --no-such-flag" in (
        capsys.readouterr().err)
    assert main(["serve", "--print-config"]) == 0
    from mailcoach_server.config import default_config_text

    assert capsys.readouterr().out == default_config_text()
    with pytest.raises(SystemExit) as done:  # the rest of the line reaches health's own parser
        main(["health", "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: mailcoach health")
