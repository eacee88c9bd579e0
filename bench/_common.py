"""Shared bits of the benchmarks: start a server process, read its peak memory.

The benchmarks measure mailcoach as installed (``pip install .``, or editable):
nothing here puts the checkout on ``sys.path``, and every child Python runs
with ``-P`` so its working directory cannot shadow the install either. The
one file taken from the checkout is the tests' scripted model server, which is
not part of the product (:func:`scripted_model_server`).

``MAILCOACH_BENCH_PROFILE=FILE`` runs the server under cProfile and writes its
profile to ``FILE`` when the server stops (``python -m pstats FILE`` reads it):
a switch of the benchmarks, not of the product.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

__all__ = ["ROOT", "PYTHON", "child_env", "cpu_seconds", "peak_rss_mib", "require_install",
           "scratch", "scripted_model_server", "start_server", "stop"]

ROOT = Path(__file__).resolve().parent.parent
#: This interpreter, never prepending a script's or the working directory to sys.path.
PYTHON = [sys.executable, "-P"]


def require_install() -> None:
    """Say which mailcoach is measured; exit with a clear message when none is installed."""
    if importlib.util.find_spec("mailcoach_server") is None or \
            importlib.util.find_spec("mailcoach_server.defaults") is None:
        raise SystemExit("mailcoach is not installed in this Python: run the benchmarks with "
                         "the virtualenv's python after `python3 -m venv .venv && "
                         ".venv/bin/pip install .`")
    import mailcoach_server

    where = Path(mailcoach_server.__file__).resolve().parent
    print(f"mailcoach {mailcoach_server.__version__} from {where}", flush=True)


def child_env() -> dict[str, str]:
    """The environment for child Pythons: without a PYTHONPATH that could shadow the install."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def scripted_model_server() -> type:
    """``tests/fakellm.py``'s ``ScriptedModelServer``, loaded by path (stdlib only)."""
    path = ROOT / "tests" / "fakellm.py"
    spec = importlib.util.spec_from_file_location("mailcoach_bench_fakellm", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"the scripted model server is missing: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.ScriptedModelServer


def start_server(config: dict, workdir: Path) -> tuple[subprocess.Popen, int, str]:
    """``mailcoach serve`` with ``config``; returns (process, smtp port, password)."""
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    profile = os.environ.get("MAILCOACH_BENCH_PROFILE")
    profiler = ["-m", "cProfile", "-o", str(Path(profile).resolve())] if profile else []
    proc = subprocess.Popen(
        [*PYTHON, *profiler, "-m", "mailcoach_server", "serve", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=workdir, env=child_env(),
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process used so far (all its threads), from /proc."""
    # Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="mailcoach-bench-"))
