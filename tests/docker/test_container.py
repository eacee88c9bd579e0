"""The image's entrypoint and health check, run on the host; the Dockerfile linted.

The entrypoint, environment and HEALTHCHECK are read from docker/Dockerfile
itself, so the test runs what the image runs. Two things differ, on
purpose: the server binds 127.0.0.1 (MAILCOACH_HOST) rather than all
interfaces, and the data directory and ports are the test's own.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mailcoach_server.container import serve_arguments
from tests.conftest import require_tool
from tests.sendmail import free_port
from tests.support import config_data, mbox_messages, wait_until, write_config

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def image() -> dict:
    """What the image runs: its environment, entrypoint, command and health check."""
    env: dict[str, str] = {}
    args: dict[str, str] = {}
    found: dict = {"env": env, "ARG": args}
    for word, rest in instructions(DOCKER / "Dockerfile"):
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        elif word in ("ENTRYPOINT", "CMD", "USER", "VOLUME", "EXPOSE", "FROM"):
            found[word] = json.loads(rest) if rest.startswith("[") else rest
        elif word == "HEALTHCHECK":
            found[word] = json.loads(rest[rest.index("CMD") + 3:].strip())
    return found


def on_host(argv: list[str]) -> list[str]:
    """An image command line as it runs from this checkout."""
    first = {"python": [sys.executable], "mailcoach": [sys.executable, "-m", "mailcoach_server"]}
    return first[argv[0]] + argv[1:]


def container_env(tmp_path: Path, *, any_port: bool = False, **config: object) -> dict[str, str]:
    """The image's environment on the host; ``any_port``: the server binds ports the system
    picks (none can be taken meanwhile) where a test needs no port it knows beforehand."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCOACH_")}
    env.update({k: v for k, v in image()["env"].items() if k != "PATH"})
    data = config_data(tmp_path / "data", **config)
    data["smtp"]["port"], data["imap"]["port"] = (0, 0) if any_port else (free_port(), free_port())
    env.update({
        "MAILCOACH_DATA_DIR": str(tmp_path / "data"),  # the image: /data
        "MAILCOACH_HOST": "127.0.0.1",  # the image: 0.0.0.0
        "MAILCOACH_CONFIG": str(write_config(tmp_path / "mailcoach.yaml", data)),
    })
    return env


class Entrypoint:
    """The image's ENTRYPOINT + CMD as a process; waits for the banner's "ready"."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str) -> None:
        found = image()
        self.argv = on_host(found["ENTRYPOINT"] + found["CMD"]) + list(args)
        self.env = env
        self.log = tmp_path / "entrypoint.log"
        self.banner: list[str] = []

    def __enter__(self) -> Entrypoint:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE,
                                         stderr=log, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                raise AssertionError(f"entrypoint exited: {self.log.read_text()[-2000:]}")
            self.banner.append(line.rstrip("\n"))
            if line.startswith("ready"):
                return self
        raise AssertionError("no banner in time")

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            assert self.proc.wait(15) == 0
        finally:
            self.proc.stdout.close()


def health(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return health_with(env)


def health_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(on_host(image()["HEALTHCHECK"]) + list(args), env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_entrypoint_starts_a_server_that_passes_its_own_health_check(tmp_path):
    env = container_env(tmp_path)
    with Entrypoint(tmp_path, env) as server:
        text = "\n".join(server.banner)
        assert "AUTH as user@localdomain" in text
        assert str(tmp_path / "data") in text
        result = health(env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("healthy: SMTP 127.0.0.1:")
        # and it is a working mail server: mail in through sendmail, the shell answers
        sent = subprocess.run(
            [sys.executable, "-m", "mailcoach_server.sendmail", "shell"], env=env,
            input=b"Subject: echo from the container\n\n", capture_output=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        data = tmp_path / "data"
        wait_until(lambda: any(m["Subject"] == "Exit Code: 0" for m in
                               mbox_messages(data / "user@localdomain.mbox")),
                   what="the shell's reply")
        assert oct((data / "login").stat().st_mode & 0o777) == "0o600"
    after = health(env)
    assert after.returncode == 1
    assert after.stderr.startswith("unhealthy: SMTP 127.0.0.1:")


def test_health_checks_the_ports_the_server_was_given_not_the_configs(tmp_path):
    env = container_env(tmp_path)  # the config names two free ports...
    smtp_port, imap_port = free_port(), free_port()  # ...and serve is given two others
    server_file = tmp_path / "data" / "server.json"
    with Entrypoint(tmp_path, env, "--smtp-port", str(smtp_port),
                    "--imap-port", str(imap_port)):
        assert json.loads(server_file.read_text())["smtp"]["port"] == smtp_port
        result = health(env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(
            f"healthy: SMTP 127.0.0.1:{smtp_port}, IMAP 127.0.0.1:{imap_port} (as in ")
        # a flag still wins over what the server wrote
        flagged = health_with(env, "--imap-port", str(free_port()))
        assert flagged.returncode == 1 and flagged.stderr.startswith("unhealthy: IMAP")
    assert not server_file.exists()  # a clean stop removes it
    after = health(env)
    assert after.returncode == 1
    assert after.stderr.startswith("unhealthy: SMTP 127.0.0.1:")


@pytest.mark.parametrize("content", [
    "{not json", "[]", '{"smtp": {"host": "127.0.0.1", "port": "2525"}}',
    '{"smtp": {"host": "127.0.0.1", "port": 70000}}', '{"imap": "127.0.0.1:1143"}'])
def test_a_damaged_server_file_is_reported_not_trusted(tmp_path, content):
    env = container_env(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "server.json").write_text(content)
    result = health(env)
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: ") and "server.json" in result.stderr


@pytest.mark.parametrize("how", ["flag", "config"])
def test_auth_off_is_refused_unless_allowed_explicitly(tmp_path, how):
    extra = {"smtp": {"auth_required": False}} if how == "config" else {}
    env = container_env(tmp_path, any_port=True, **extra)
    args = ["--no-auth"] if how == "flag" else []
    argv = on_host(image()["ENTRYPOINT"] + image()["CMD"]) + args
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "refusing to start with SMTP AUTH off" in refused.stderr
    assert "MAILCOACH_ALLOW_NO_AUTH=1" in refused.stderr
    assert not (tmp_path / "data" / "index.sqlite").exists()
    with Entrypoint(tmp_path, {**env, "MAILCOACH_ALLOW_NO_AUTH": "1"}, *args) as server:
        assert "no AUTH required" in "\n".join(server.banner)


def test_serve_arguments_come_from_the_environment_and_flags_win():
    assert serve_arguments([], {}) == ["--data-dir", "/data", "--host", "0.0.0.0"]
    env = {"MAILCOACH_DATA_DIR": "/srv/mail", "MAILCOACH_CONFIG": "/etc/m.yaml"}
    assert serve_arguments(["--queue", "/q.mbox"], env) == [
        "--data-dir", "/srv/mail", "--host", "0.0.0.0", "--config", "/etc/m.yaml",
        "--queue", "/q.mbox"]


def test_the_image_runs_as_a_user_with_data_in_a_volume():
    found = image()
    assert found["FROM"] == "${BASE}"  # a build argument, for tests/docker/test_image.py
    assert re.fullmatch(r"python:3\.\d+-slim", found["ARG"]["BASE"])
    assert found["USER"].split(":")[0] not in ("", "0", "root")
    assert found["VOLUME"] == ["/data"] and found["env"]["MAILCOACH_DATA_DIR"] == "/data"
    assert found["EXPOSE"].split() == ["2525", "1143"]
    assert found["HEALTHCHECK"] == ["mailcoach", "health"]
    assert not any("KEY" in name for name in found["env"])  # keys only at run time


def test_compose_publishes_on_the_host_loopback_only():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    service = compose["services"]["mailcoach"]
    assert service["ports"] and all(p.startswith("127.0.0.1:") for p in service["ports"])
    assert "mailcoach-data:/data" in service["volumes"]
    assert "OPENAI_API_KEY" in service["environment"]
    assert service["build"]["dockerfile"] == "docker/Dockerfile"


def test_dockerfile_lint():
    venv_bin = str(Path(sys.executable).parent)
    hadolint = shutil.which("hadolint", path=venv_bin) or require_tool("hadolint")
    result = subprocess.run([hadolint, str(DOCKER / "Dockerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
