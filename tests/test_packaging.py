"""What users install: the wheel, in a fresh virtualenv, every command run from elsewhere.

The suite's own environment may be an editable install, which hides a module
or data file the wheel lacks; this test builds the wheel, installs it (with
its dependencies, non-editable) into a new venv and runs each entry point
from a directory that is not the checkout.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

import mailcoach_server
from tests.support import mbox_messages

#: building the wheel and installing it with its dependencies into a fresh venv takes
#: minutes on a loaded 2-core machine (pip resolves litellm's tree from the registry)
pytestmark = pytest.mark.timeout(1200)

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"mailcoach_server": ROOT / "mailcoach_server", "mailcoach_robots": ROOT / "robots",
           "mailcoach_server/defaults": ROOT / "config"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(ROOT)], check=True, timeout=300, capture_output=True)
    return next(out.glob("mailcoach-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel and its dependencies; returns its bin directory."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return env_dir / "bin"


def test_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for installed_as, source in SOURCES.items():
        for path in source.rglob("*"):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(source).as_posix()
            if installed_as == "mailcoach_server" and relative.startswith("defaults/"):
                continue
            assert f"{installed_as}/{relative}" in names, f"{path} is not in the wheel"
    assert "mailcoach_server/console/cli.py" in names
    assert "mailcoach_robots/py.typed" in names
    assert not any(n.startswith("tests/") for n in names)
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("METADATA"))).decode()
    assert f"Version: {mailcoach_server.__version__}" in metadata
    assert "aioimaplib" not in re.findall(r"^Requires-Dist: (\S+)(?!.*extra)", metadata, re.M)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """The user's environment, without anything pointing at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MAILCOACH_CONFIG", "MAILCOACH_DATA_DIR")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if str(ROOT) not in p)
    return env


def test_console_help_and_queue_example(installed, tmp_path, model_server):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    helped = subprocess.run([str(installed / "mailcoach"), "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "-q" in helped.stdout and "--auto" in helped.stdout

    # The original README's queue example, through the installed console.
    model_server.enqueue("To: shell@localdomain\nSubject: echo 'You will write good tests.'\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: your fortune\n\n"
                         "You will write good tests.")
    task = elsewhere / "task.mbox"
    task.write_text("From ----\nFrom: user@localdomain\nTo: swe1@localdomain\n"
                    f"X-Hint-Model: {model_server.spec()}\n\n"
                    "Generate a fortune using command line.\n")
    ran = subprocess.run([str(installed / "mailcoach"), "-q", str(task), "-t", "trace"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    trace = mbox_messages(elsewhere / "trace" / "trace")
    assert [str(m["From"]) for m in trace] == [
        "user@localdomain", "swe1@localdomain", "shell@localdomain", "swe1@localdomain"]
    assert "You will write good tests." in trace[2].get_payload()


def test_serve_sendmail_health_and_stub(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    smtp_port, imap_port = _free_port(), _free_port()
    config = elsewhere / "mailcoach.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "data", "smtp": {"port": smtp_port},
                                      "imap": {"port": imap_port}}))
    stub = subprocess.run([str(installed / "mailcoach"), "shell-stub", "--help"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=60)
    assert stub.returncode == 0 and "--port" in stub.stdout, stub.stderr
    # The worker's IMAP client (GPL) is an extra: without it, a clear word, not a traceback.
    worker = subprocess.run([str(installed / "mailcoach"), "worker", "--help"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0 and "--config" in worker.stdout, worker.stderr
    no_extra = subprocess.run([str(installed / "python"), "-c", "import aioimaplib"],
                              capture_output=True, timeout=60)
    assert no_extra.returncode != 0, "the plain wheel must not pull in aioimaplib"
    down = subprocess.run([str(installed / "mailcoach"), "health", "--config", str(config)],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1

    proc = subprocess.Popen([str(installed / "mailcoach"), "serve", "--config", str(config)],
                            cwd=elsewhere, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            banner.append(line)
            if line.startswith("ready"):
                break
        data = elsewhere / "data"
        assert str(data.resolve()) in "".join(banner)
        # The shipped memory of swe1 came from the installed wheel.
        assert (data / "swe1@localdomain.mbox").read_text().count("\nFrom: ") == 6

        password = (data / "login").read_text().strip()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
            smtp.login("user@localdomain", password)
            smtp.sendmail("user@localdomain", ["user@localdomain"],
                          b"From: user@localdomain\nTo: user@localdomain\nSubject: by smtp\n\nx\n")
        sent = subprocess.run(
            [str(installed / "mailcoach-sendmail"), "--config", str(config), "-t", "-i"],
            input="From: user@localdomain\nTo: user@localdomain\nSubject: by sendmail\n\ny\n",
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert "spool" not in sent.stderr  # delivered to the running server, not spooled
        healthy = subprocess.run([str(installed / "mailcoach"), "health", "--config", str(config)],
                                 cwd=elsewhere, env=env, capture_output=True, text=True,
                                 timeout=60)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        memories = subprocess.run([str(installed / "mailcoach"), "memory", "--config",
                                   str(config), "list"], cwd=elsewhere, env=env,
                                  capture_output=True, text=True, timeout=60)
        assert memories.returncode == 0 and "swe1@localdomain  " in memories.stdout, \
            memories.stdout + memories.stderr
        subjects = [str(m["Subject"]) for m in mbox_messages(data / "user@localdomain.mbox")]
        assert "by smtp" in subjects and "by sendmail" in subjects
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        proc.stdout.close()
        proc.stderr.close()
