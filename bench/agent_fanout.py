"""Agent fan-out: one message To 100 agents, model latency 200 ms; time until all answered.

    python bench/agent_fanout.py [--agents 100] [--delay 0.2]

The model is the scripted OpenAI-compatible server of the tests, reached
through litellm over real HTTP; each call sleeps ``--delay`` seconds. The
ideal is one model latency (every agent answers in parallel); the figure is
the wall time from SMTP 250 to the last answer stored, and its ratio to that
ideal. A warm-up message first pays litellm's one-time import.

The lines after it split the time: the SMTP session before the 250 (one
RCPT per agent; each agent is new, so this includes making it), when the
scripted server sent its last answer, and the server's CPU from the session's
start to the last answer stored (robust on a shared machine, where wall time
is not).
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
    cpu_seconds,
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
        answered: list[float] = []  # when the scripted server answered, perf_counter

        def responder(request: dict) -> str:
            answered.append(time.perf_counter())
            return "To: user@localdomain\nSubject: hello\n\nhello"

        model.responder = responder
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
            cpu = cpu_seconds(proc.pid)
            connected = time.perf_counter()
            send(port, password, agents, "fan out")
            accepted = time.perf_counter()
            wait_answers(data, 1 + args.agents)
            elapsed = time.perf_counter() - accepted
            cpu = cpu_seconds(proc.pid) - cpu
            last_model_answer = max(answered) - accepted
            print(f"warm-up answer (pays the litellm import): {warm:.2f} s")
            print(f"{args.agents} agents, model latency {args.delay * 1000:.0f} ms: "
                  f"all answered in {elapsed:.2f} s after the 250 "
                  f"({elapsed / args.delay:.1f}x one model latency; target 0.5 s)")
            print(f"  SMTP session before the 250: {accepted - connected:.2f} s; "
                  f"from connecting to the last answer: {elapsed + accepted - connected:.2f} s")
            print(f"  last model answer sent {last_model_answer:.2f} s after the 250, "
                  f"the replies stored {elapsed - last_model_answer:.2f} s after that")
            print(f"most model calls at once: {model.max_concurrent}")
            # CPU time says more than wall time on a shared machine (ticks of 10 ms).
            print(f"mailcoach CPU from connecting to the last answer: {cpu * 1000:.0f} ms "
                  f"({cpu * 1000 / args.agents:.1f} ms per agent)")
            print(f"mailcoach peak RSS {peak_rss_mib(proc.pid):.0f} MiB")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
