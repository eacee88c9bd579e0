"""What the worker's tests share: a mail system with parties, configs, worker processes."""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakellm import ScriptedModelServer
from tests.mailservers import MailServers, require_mail_servers
from tests.support import wait_until

__all__ = ["DOMAIN", "SHELL", "SWE1", "USER", "WorkerProcess", "mail_system", "messages",
           "write_worker_config"]

DOMAIN = "company.example"
USER, SWE1, SHELL = f"user@{DOMAIN}", f"swe1@{DOMAIN}", f"shell@{DOMAIN}"
PASSWORDS = {USER: "user-secret", SWE1: "swe1-secret", SHELL: "shell-secret"}


def require_aioimaplib() -> None:
    try:
        import aioimaplib  # noqa: F401
    except ImportError:
        from tests.conftest import IN_CI
        if IN_CI:
            pytest.fail("aioimaplib is not installed (mailcoach[worker] or the test extra)")
        pytest.skip("aioimaplib is not installed")


def mail_system(extra_users: tuple[str, ...] = (), *, tls: bool = False
                ) -> Iterator[MailServers]:
    """A private Dovecot + Postfix with the user, swe1 and shell (and ``extra_users``);
    with ``tls``, TLS and STARTTLS too (``MailServers(tls=True)``)."""
    require_mail_servers(tls=tls)
    require_aioimaplib()
    with MailServers(DOMAIN, tls=tls) as servers:
        for address, password in PASSWORDS.items():
            servers.add_user(address, password)
        for address in extra_users:
            servers.add_user(address, address.partition("@")[0] + "-secret")
        yield servers


def server_config(tmp_path: Path, model: ScriptedModelServer, **extra: Any) -> dict[str, Any]:
    """The mailcoach config both ``serve`` and ``worker`` read for this domain."""
    data: dict[str, Any] = {
        "domain": DOMAIN,
        "user": USER,
        "data_dir": str(tmp_path / "data"),
        "models": {"default": model.spec(), "retries": 1, "backoff": 0.01, "timeout": 10},
        "prices": {model.spec(): {"input": 1.0, "output": 2.0}},
        "agents": {"parties": {"swe1@localdomain": False, SWE1: {}}},
        "robots": {"shell@localdomain": None,
                   SHELL: {"kind": "shell", "timeout": 20, "sandbox": "none",
                           "allow_unsandboxed_root": True}},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def write_worker_config(directory: Path, mail: MailServers, model: ScriptedModelServer,
                        parties: list[str], *, lease_seconds: float = 3,
                        config: dict[str, Any] | None = None, **extra: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mailcoach.yaml").write_text(
        yaml.safe_dump(config or server_config(directory, model)), "utf-8")
    logins = {}
    for address in parties:
        secret = directory / f"{address}.password"
        secret.write_text(mail.users[address] + "\n", "utf-8")
        logins[address] = {"password_file": secret.name}
    data = {
        "config": "mailcoach.yaml",
        "imap": {"host": "127.0.0.1", "port": mail.imap_port, "security": "none"},
        "smtp": {"host": "127.0.0.1", "port": mail.submission_port, "security": "none"},
        "parties": logins,
        "lease_seconds": lease_seconds,
        "poll_seconds": 5,
        **extra,
    }
    path = directory / "worker.yaml"
    path.write_text(yaml.safe_dump(data), "utf-8")
    return path


class WorkerProcess:
    """``mailcoach worker`` as a process of its own; stopped or killed by its PID."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.log_path = config.with_suffix(f".{time.monotonic_ns()}.log")
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *, wait_ready: bool = True) -> WorkerProcess:
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailcoach_server", "worker", "--config",
                 str(self.config)], stdout=subprocess.PIPE, stderr=log, text=True,
                env=self.env, cwd=self.config.parent)
        if wait_ready:
            assert self.proc.stdout is not None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"worker exited early: {self.stderr()[-3000:]}")
                if line.startswith("ready"):
                    return self
            raise AssertionError("worker did not say ready")
        return self

    def stderr(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self._close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def messages(mail: MailServers, address: str, folder: str = "INBOX") -> list[Message]:
    return [email.message_from_bytes(raw) for raw in mail.messages(address, folder)]


def wait_for_messages(mail: MailServers, address: str, count: int, folder: str = "INBOX",
                      timeout: float = 60) -> list[Message]:
    return wait_until(lambda: (lambda got: got if len(got) >= count else None)(
        messages(mail, address, folder)), timeout, f"{count} messages in {address} {folder}",
        interval=0.2)


def question(subject: str, body: str = "please", to: str = SWE1, **headers: str) -> bytes:
    extra = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    mid = f"<{subject.replace(' ', '.')}.{time.monotonic_ns()}@{DOMAIN}>"
    return (f"From: {USER}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n{extra}"
            f"\r\n{body}\r\n").encode()
