"""The Docker image itself: built from docker/Dockerfile with buildah, run with podman.

No Docker engine is needed (see README "Docker"): the image is built without a daemon
on a local Debian base (``tests/docker/base_image.sh`` makes it once per machine with
debootstrap and podman keeps it), and run with ``--network host`` so the container's
server listens on the ports the test gives it and reaches the scripted model on the
host's loopback. podman and buildah read ``tests/docker/containers.conf`` (through
``CONTAINERS_CONF``), never the machine's own.

One container, one named volume, both named after this run and removed at the end.
"""

from __future__ import annotations

import configparser
import email
import email.policy
import imaplib
import os
import smtplib
import subprocess
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tool
from tests.sendmail import free_port
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
IMAGE = "localhost/mailcoach:test"
BASE_IMAGE = os.environ.get("MAILCOACH_BASE_IMAGE") or "localhost/debian-python:12"
CA_CERTS = Path("/etc/ssl/certs")
# pip settings that reach the registry; a host path (find-links, a wheel cache) means
# nothing in the build, so only these are passed on.
PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "cert", "timeout",
            "default-timeout", "retries", "proxy")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                   "no_proxy")

pytestmark = pytest.mark.timeout(40 * 60)  # a cold first run debootstraps and pip-installs


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(HERE / "containers.conf")}


def run(*argv: str, timeout: float = 120, check: bool = True,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, env=podman_env(), capture_output=True, timeout=timeout,
                            input=stdin.decode() if stdin else None, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:3])} ... exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def pip_config(path: Path) -> tuple[Path, list[Path]]:
    """The host's pip settings (files, then PIP_* variables) for the build's /etc/pip.conf.

    Returns the file and the certificate files it names outside the CA directory,
    which the build must see at the same path.
    """
    names = [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf"),
             Path.home() / ".config/pip/pip.conf", Path.home() / ".pip/pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        names.append(Path(os.environ["PIP_CONFIG_FILE"]))
    host = configparser.ConfigParser(interpolation=None)
    host.read([n for n in names if n.is_file()])
    settings = {key: value for section in ("global", "install") if host.has_section(section)
                for key, value in host.items(section) if key in PIP_KEYS}
    for key in PIP_KEYS:
        if value := os.environ.get("PIP_" + key.upper().replace("-", "_")):
            settings[key] = value
    extra_mounts = [Path(settings["cert"])] if "cert" in settings else []
    extra_mounts = [p for p in extra_mounts if p.is_file() and CA_CERTS not in p.parents]
    out = configparser.ConfigParser(interpolation=None)
    out["global"] = settings
    with open(path, "w") as file:
        out.write(file)
    return path, extra_mounts


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """docker/Dockerfile built on the local Debian base; layers are reused between runs."""
    for tool in ("podman", "buildah", "runc"):
        require_tool(tool)
    if os.geteuid() != 0:  # debootstrap, and root's image storage shared with CI
        if IN_CI:
            pytest.fail("the image test runs as root in CI")
        pytest.skip("the image test needs root (debootstrap, podman's root storage)")
    if run("podman", "image", "exists", BASE_IMAGE, check=False).returncode != 0:
        require_tool("debootstrap")
    base = run("bash", str(HERE / "base_image.sh"), timeout=20 * 60).stdout.split()[-1]
    assert base == BASE_IMAGE
    previous = run("podman", "image", "inspect", "--format", "{{.Id}}", IMAGE, check=False)
    conf, certs = pip_config(tmp_path_factory.mktemp("pip") / "pip.conf")
    mounts = [f"{CA_CERTS}:{CA_CERTS}:ro", f"{conf}:/etc/pip.conf:ro",
              *(f"{c}:{c}:ro" for c in certs)]
    proxies = [f"--build-arg={v}={os.environ[v]}" for v in PROXY_VARIABLES if v in os.environ]
    run("buildah", "bud", "--isolation", "chroot", "--network", "host", "--pull=never",
        "--format", "docker",  # the OCI format drops HEALTHCHECK
        "--layers", "--ignorefile", str(ROOT / "docker/Dockerfile.dockerignore"),
        *(f"--volume={m}" for m in mounts), *proxies,
        "--build-arg", f"BASE={base}", "-f", str(ROOT / "docker/Dockerfile"), "-t", IMAGE,
        str(ROOT), timeout=25 * 60)
    built = run("podman", "image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    old = previous.stdout.strip()
    if previous.returncode == 0 and old and old != built:
        run("podman", "rmi", old, check=False)  # our own last build; its layers stay cached
    return IMAGE


class Container:
    """The image running under a name of its own, with a named volume at /data."""

    def __init__(self, image: str, *serve_args: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.name, self.volume = f"mailcoach-test-{tag}", f"mailcoach-test-{tag}"
        self.image, self.serve_args = image, list(serve_args)

    def __enter__(self) -> Container:
        # The host's network: loopback only, as a plain `mailcoach serve` would listen.
        run("podman", "run", "-d", "--name", self.name, "--network", "host",
            "-e", "MAILCOACH_HOST=127.0.0.1", "-v", f"{self.volume}:/data", self.image,
            *self.serve_args)
        return self

    def __exit__(self, *exc: object) -> None:
        run("podman", "rm", "-f", "-t", "5", self.name, check=False)
        run("podman", "volume", "rm", "-f", self.volume, check=False)

    def exec(self, *argv: str, stdin: bytes | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run("podman", "exec", *(["-i"] if stdin else []), self.name, *argv,
                   stdin=stdin, timeout=timeout, check=False)

    def logs(self) -> str:
        result = run("podman", "logs", self.name, check=False)
        return result.stdout + result.stderr

    def wait_healthy(self, attempts: int = 90) -> str:
        """Run the image's HEALTHCHECK until it passes (no systemd here to run it on a timer)."""
        for _ in range(attempts):
            if run("podman", "healthcheck", "run", self.name, check=False).returncode == 0:
                return run("podman", "inspect", "--format", "{{.State.Health.Status}}",
                           self.name).stdout.strip()
            state = run("podman", "inspect", "--format", "{{.State.Status}}", self.name)
            if state.stdout.strip() != "running":
                break
            time.sleep(1)
        raise AssertionError(f"the container never became healthy:\n{self.logs()[-3000:]}")


def imap_session(port: int, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    client.login("user@localdomain", password)
    return client


def inbox(client: imaplib.IMAP4) -> list[tuple[int, EmailMessage]]:
    """(UID, message) for every message in INBOX."""
    status, data = client.select("INBOX", readonly=True)
    assert status == "OK"
    if int(data[0]) == 0:
        return []
    status, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
    assert status == "OK"
    found = []
    for item in data:
        if isinstance(item, tuple):
            uid = int(item[0].split(b"UID ")[1].split()[0])
            found.append((uid, email.message_from_bytes(item[1], policy=email.policy.default)))
    return found


def uidvalidity(client: imaplib.IMAP4) -> bytes:
    status, data = client.status("INBOX", "(UIDVALIDITY)")
    assert status == "OK"
    return data[0]


@pytest.fixture
def container(image: str, model_server) -> Iterator[tuple[Container, int, int]]:
    smtp_port, imap_port = free_port(), free_port()
    # Not the image's 2525/1143: the HEALTHCHECK must find the ports serve was given.
    with Container(image, "--smtp-port", str(smtp_port), "--imap-port", str(imap_port),
                   "--model", model_server.spec()) as box:
        yield box, smtp_port, imap_port


def test_the_image_serves_mail_survives_a_restart_and_runs_the_console(container,
                                                                       model_server):
    box, smtp_port, imap_port = container
    assert box.wait_healthy() == "healthy"
    banner = box.logs()
    assert f"SMTP  127.0.0.1:{smtp_port}" in banner and "password in /data/login" in banner
    password = box.exec("cat", "/data/login").stdout.strip()
    assert password

    # Mail from the host to the shell robot, which runs as the image's own user.
    message = EmailMessage()
    message["From"], message["To"] = "user@localdomain", "shell@localdomain"
    message["Subject"] = "id -u; id -un; pwd"
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        smtp.login("user@localdomain", password)
        smtp.send_message(message)
    client = imap_session(imap_port, password)
    try:
        replies = wait_until(lambda: [m for _, m in inbox(client)
                                      if m["Subject"] == "Exit Code: 0"],
                             timeout=60, what="the shell's reply over IMAP")
        output = replies[0].get_content().splitlines()
        assert "10001" in output and "mailcoach" in output, output
        assert any(line.startswith("/data/") for line in output), output
        before, validity = inbox(client), uidvalidity(client)
    finally:
        client.logout()

    # A restart keeps the volume: the same mail under the same UIDs, the same login.
    run("podman", "restart", "-t", "20", box.name, timeout=120)
    assert box.wait_healthy() == "healthy"
    assert box.exec("cat", "/data/login").stdout.strip() == password
    client = imap_session(imap_port, password)
    try:
        after = inbox(client)
        assert [(uid, m["Message-ID"]) for uid, m in after] == [
            (uid, m["Message-ID"]) for uid, m in before]
        assert uidvalidity(client) == validity
    finally:
        client.logout()

    # The console in the same container, on the scripted model on the host.
    model_server.enqueue("To: shell@localdomain\nSubject: echo console in a box\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: done\n\nIt said: console in a box.")
    task = ("From ----\nFrom: user@localdomain\nTo: swe1@localdomain\n"
            f"X-Hint-Model: {model_server.spec()}\n\nSay something with the shell.\n")
    assert box.exec("sh", "-c", "cat > /tmp/task.mbox", stdin=task.encode()).returncode == 0
    console = box.exec("mailcoach", "-q", "/tmp/task.mbox", "-t", "/tmp/console-trace",
                       timeout=180)
    assert console.returncode == 0, console.stdout[-2000:] + console.stderr[-2000:]
    assert "It said: console in a box." in console.stdout
    trace = box.exec("cat", "/tmp/console-trace/trace").stdout
    assert "Subject: Exit Code: 0" in trace and "console in a box" in trace
    assert len(model_server.requests) == 2
