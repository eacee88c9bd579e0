"""Startup: ``mailcoach --help`` and ``mailcoach serve`` until SMTP accepts, vs bare Python.

    python bench/startup.py [--runs 10]

Targets: ``--help`` under 150 ms; ``serve`` accepting SMTP under 1 s; and
litellm (seconds to import) not imported until a model is first called.
The baseline is ``python -c pass`` in the same run, so the figures say what
mailcoach adds on this machine.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import PYTHON, child_env, require_install

ENV = child_env()


def mailcoach_command() -> list[str]:
    """The ``mailcoach`` console script beside this Python, as a user runs it."""
    script = Path(sys.executable).parent / "mailcoach"
    return [str(script)] if script.exists() else [*PYTHON, "-m", "mailcoach_server"]


def timed(args: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, env=ENV)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_until_smtp(runs: int) -> float:
    samples = []
    for _ in range(runs):
        data = Path(tempfile.mkdtemp(prefix="mailcoach-bench-"))
        port = free_port()
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*mailcoach_command(), "serve", "--data-dir", str(data),
             "--smtp-port", str(port), "--imap-port", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        try:
            deadline = started + 20
            while time.perf_counter() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                        if sock.makefile("rb").readline().startswith(b"220"):
                            break
                except OSError:
                    time.sleep(0.005)
            samples.append(time.perf_counter() - started)
        finally:
            proc.terminate()
            proc.wait(20)
            shutil.rmtree(data, ignore_errors=True)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    require_install()
    mailcoach = mailcoach_command()
    bare = timed([*PYTHON, "-c", "pass"], args.runs)
    help_time = timed([*mailcoach, "--help"], args.runs)
    serve_help = timed([*mailcoach, "serve", "--help"], args.runs)
    serve = serve_until_smtp(max(1, args.runs // 2))
    probe = subprocess.run(
        [*PYTHON, "-c", "import sys, mailcoach_server.app, mailcoach_server.console.cli; "
                  "print('litellm' in sys.modules)"],
        capture_output=True, text=True, env=ENV, check=True)
    print(f"python -c pass            {bare * 1000:6.0f} ms (baseline)")
    print(f"mailcoach --help          {help_time * 1000:6.0f} ms "
          f"(+{(help_time - bare) * 1000:.0f} ms over bare Python; target < 150 ms)")
    print(f"mailcoach serve --help    {serve_help * 1000:6.0f} ms")
    print(f"serve until SMTP accepts  {serve * 1000:6.0f} ms (target < 1000 ms)")
    print(f"litellm imported at start: {probe.stdout.strip()} (must be False)")


if __name__ == "__main__":
    main()
