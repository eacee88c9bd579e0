"""Tests of ``mailcoach-sendmail``, the spool and ``serve --queue``; shared helpers here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from tests.support import config_data, write_config

__all__ = ["free_port", "mbox_bytes", "message", "run_sendmail", "sendmail_config"]


def free_port() -> int:
    """A port nobody listens on now; sendmail must know the server's port in advance."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sendmail_config(tmp_path: Path, model: str | None = None, **extra: object) -> Path:
    """A config with a fixed free SMTP port, shared by the server and sendmail."""
    data = config_data(tmp_path / "data", model, **extra)
    data["smtp"]["port"] = free_port()
    return write_config(tmp_path / "mailcoach.yaml", data)


def run_sendmail(config: Path, *args: str, stdin: bytes,
                 **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAILCOACH_")}
    environ.update({"MAILCOACH_CONFIG": str(config), **env})
    result = subprocess.run(
        [sys.executable, "-m", "mailcoach_server.sendmail", *args],
        input=stdin, capture_output=True, timeout=60, env=environ,
    )
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def message(to: str | None = "shell@localdomain", subject: str = "echo hello", *,
            body: str = "", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "user@localdomain"
    if to:
        msg["To"] = to
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def mbox_bytes(*messages: EmailMessage) -> bytes:
    """An mbox file as mutt or the trace writes it (mboxrd quoting)."""
    out = b""
    for msg in messages:
        raw = msg.as_bytes().replace(b"\r\n", b"\n")
        raw = b"\n".join(b">" + line if line.lstrip(b">").startswith(b"From ") else line
                         for line in raw.split(b"\n"))
        out += b"From user@localdomain Wed Nov 25 09:00:00 2026\n" + raw.rstrip(b"\n") + b"\n\n"
    return out
