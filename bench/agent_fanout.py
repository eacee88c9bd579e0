"""Agent fan-out: one message To 100 agents, model latency 200 ms; time until all answered.

    python bench/agent_fanout.py [--agents 100] [--delay 0.2]

The model is the scripted OpenAI-compatible server of the tests, reached
through litellm over real HTTP; each call sleeps ``--delay`` seconds. The
ideal is one model latency (every agent answers in parallel); the figure is
the wall time from SMTP 250 to the last answer stored, and its ratio to that
ideal. A warm-up message first pays litellm's one-time import.
"""

from __future__ import annotations

import argparse
import smtplib
import sys
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import (
    peak_rss_mib,
    require_install,
    scratch,
    scripted_model_server,
    start_server,
    stop,
)


def answers(data_dir: Path) -> int:
    """Answers in the user's mbox, counted from From_ lines (cheap: no parsing)."""
    path = data_dir / "user@localdomain.mbox"
    if not path.exists():
        return 0
    data = b"\n" + path.read_bytes()
    return data.count(b"\nFrom ") - data.count(b"\nFrom user@localdomain ")


def send(port: int, password: str, to: list[str], subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.login("user@localdomain", password)
        message = EmailMessage()  # folds the long To header
        message["From"] = "user@localdomain"
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message.set_content("Say hello.")
        client.send_message(message)


def wait_answers(data_dir: Path, count: int, limit: float = 60.0) -> float:
    started = time.perf_counter()
    while answers(data_dir) < count:
        if time.perf_counter() - started > limit:
            raise SystemExit(f"only {answers(data_dir)} of {count} answers after {limit} s")
        time.sleep(0.01)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args()
    require_install()
    with scripted_model_server()() as model:
        model.responder = lambda request: "To: user@localdomain\nSubject: hello\n\nhello"
        work = scratch()
        data = work / "data"
        config = {
            "data_dir": str(data), "smtp": {"port": 0}, "imap": {"port": 0},
            "models": {"default": model.spec()},
            "prices": {model.spec(): {"input": 0.0, "output": 0.0}},
            "limits": {"max_models_in_flight": args.agents},
        }
        proc, port, password = start_server(config, work)
        try:
            send(port, password, ["warmup@localdomain"], "warm up")
            warm = wait_answers(data, 1)
            model.delay = args.delay
            agents = [f"agent{i}@localdomain" for i in range(args.agents)]
            started = time.perf_counter()
            send(port, password, agents, "fan out")
            wait_answers(data, 1 + args.agents)
            elapsed = time.perf_counter() - started
            print(f"warm-up answer (pays the litellm import): {warm:.2f} s")
            print(f"{args.agents} agents, model latency {args.delay * 1000:.0f} ms: "
                  f"all answered in {elapsed:.2f} s "
                  f"({elapsed / args.delay:.1f}x one model latency; target < 1 s)")
            print(f"most model calls at once: {model.max_concurrent}")
            print(f"mailcoach peak RSS {peak_rss_mib(proc.pid):.0f} MiB")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
