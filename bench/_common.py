"""Shared bits of the benchmarks: start a server process, read its peak memory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def start_server(config: dict, workdir: Path) -> tuple[subprocess.Popen, int, str]:
    """``mailcoach serve`` with ``config``; returns (process, smtp port, password)."""
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailcoach_server", "serve", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    port = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"server died: {(workdir / 'server.log').read_text()[-2000:]}")
        if match := re.search(r"SMTP\s+[\d.]+:(\d+)", line):
            port = int(match.group(1))
        if line.startswith("ready"):
            break
    password = (Path(config["data_dir"]) / "login").read_text().strip()
    return proc, port, password


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    if proc.stdout:
        proc.stdout.close()


def peak_rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="mailcoach-bench-"))
