"""Helpers for tests: configs, in-process servers, server subprocesses, reading mailboxes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import yaml

from mailcoach_server.app import Server, running
from mailcoach_server.config import Config, load_config
from mailcoach_server.store import mbox

__all__ = [
    "ServerProcess",
    "make_config",
    "mbox_messages",
    "serve_in_process",
    "wait_for",
    "wait_until",
    "write_config",
]


def config_data(data_dir: Path, model: str | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "data_dir": str(data_dir),
        "smtp": {"port": 0},
        "imap": {"port": 0},
        "models": {"retries": 1, "backoff": 0.01, "timeout": 10},
        # Wrong passwords in tests are answered quickly; the throttle's own tests set theirs.
        "limits": {"login_delay": 0.05, "login_delay_max": 0.2},
        "prices": {},
    }
    if model:
        data["models"]["default"] = model
        data["prices"] = {model: {"input": 1.0, "output": 2.0}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), "utf-8")
    return path


def make_config(tmp_path: Path, model: str | None = None, **extra: Any) -> Config:
    path = write_config(tmp_path / "mailcoach.yaml",
                        config_data(tmp_path / "data", model, **extra))
    return load_config(path)


@contextlib.asynccontextmanager
async def serve_in_process(config: Config, **kwargs: Any) -> AsyncIterator[Server]:
    async with running(config, **kwargs) as server:
        yield server


def mbox_messages(path: Path) -> list[Message]:
    """The messages of an mbox file, read by the project's reader (none if it is missing)."""
    if not path.exists():
        return []
    return [message_from_bytes(raw) for raw in mbox.read(path)]


async def wait_for(predicate: Callable[[], Any], timeout: float = 60.0,  # noqa: ASYNC109
                   what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0,
               what: str = "condition", interval: float = 0.02) -> Any:
    """Poll ``predicate`` (from a thread that may block) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class ServerProcess:
    """``mailcoach serve`` in a subprocess; ports read from its banner."""

    def __init__(self, config_path: Path, *extra: str, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.args = [sys.executable, "-m", "mailcoach_server", "serve", "--config",
                     str(config_path), *extra]
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.banner: list[str] = []
        self.smtp_port = 0
        self.imap_port = 0

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.log_path = Path(self.args[self.args.index("--config") + 1]).with_suffix(".log")
        with open(self.log_path, "a") as log:  # a file, not a pipe: a chatty server never blocks
            self.proc = subprocess.Popen(
                self.args, stdout=subprocess.PIPE, stderr=log, text=True,
                env=self.env, cwd=self.cwd,
            )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(5)
                self.proc.stdout.close()
                raise AssertionError(f"server exited early: {self.stderr()[-2000:]}")
            self.banner.append(line.rstrip("\n"))
            if match := re.search(r"SMTP\s+[\d.]+:(\d+)", line):
                self.smtp_port = int(match.group(1))
            if match := re.search(r"IMAP\s+[\d.]+:(\d+)", line):
                self.imap_port = int(match.group(1))
            if line.startswith("ready"):
                return self
        raise AssertionError("server did not print its banner in time")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("server did not stop in time") from None
        finally:
            self._close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stderr(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
