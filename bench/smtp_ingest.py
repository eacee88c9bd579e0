"""SMTP ingest: messages per second into mailcoach vs a bare aiosmtpd server, same run.

    python bench/smtp_ingest.py [--messages 5000] [--size 2048] [--sessions 1,20] [--runs 5]

Both servers run as their own processes on 127.0.0.1; the client (the stdlib
smtplib, one thread per session) sends over 1 and over 20 concurrent sessions,
each session one connection that sends its share of the messages. mailcoach
stores every message durably (fsync, group commit) before answering 250; the
bare server throws it away.
Each session count runs ``--runs`` times after an untimed warm-up (a fifth of
the messages), the two servers taking turns (which goes first alternates),
because one run's ratio moves by a tenth with the machine's other load. Prints
the medians of messages/s for both, of the run-by-run ratios (targets: >= 0.6
at 20 sessions, >= 0.5 at 1 session) with their range, of each server's CPU per
message (user + system, every thread: less sensitive than messages/s to other
load on the machine), and mailcoach's peak RSS. mailcoach's store keeps what
every run wrote, as a running server's would.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import (
    PYTHON,
    child_env,
    cpu_seconds,
    peak_rss_mib,
    require_install,
    scratch,
    start_server,
    stop,
)

BARE_SERVER = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Handler:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Handler(), enable_SMTPUTF8=True),
                                      "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def message(number: int, size: int) -> bytes:
    head = (f"From: user@localdomain\r\nTo: user@localdomain\r\nSubject: bench {number}\r\n"
            f"Message-ID: <bench-{number}-{time.time_ns()}@localdomain>\r\n\r\n").encode()
    line = b"x" * 70 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head + body


def send_all(port: int, total: int, sessions: int, size: int, password: str | None) -> float:
    """Messages/s over ``sessions`` concurrent connections (stdlib smtplib, one thread each)."""
    per_session = total // sessions
    start = threading.Barrier(sessions + 1)

    def session(index: int) -> None:
        try:
            client = smtplib.SMTP("127.0.0.1", port, timeout=60)
            if password:
                client.login("user@localdomain", password)
        except BaseException:
            start.abort()  # the others stop waiting for a session that never comes
            raise
        with client:
            start.wait(60)
            for n in range(per_session):
                client.sendmail("user@localdomain", ["user@localdomain"],
                                message(index * per_session + n, size))

    with ThreadPoolExecutor(sessions) as pool:
        futures = [pool.submit(session, i) for i in range(sessions)]
        start.wait(60)  # every session connected (and logged in): time the mail only
        started = time.perf_counter()
        for future in futures:
            future.result()
    return per_session * sessions / (time.perf_counter() - started)


def run_pair(bare: subprocess.Popen, bare_port: int, proc: subprocess.Popen, port: int,
             password: str, sessions: int, args: argparse.Namespace,
             turn: int) -> tuple[float, float, float, float]:
    """One run on each server (bare first on even turns): msg/s of both, CPU of both."""
    out: dict[str, tuple[float, float]] = {}
    order = [("bare", bare.pid, bare_port, None), ("ours", proc.pid, port, password)]
    for name, pid, at, secret in order if turn % 2 == 0 else order[::-1]:
        cpu = cpu_seconds(pid)
        rate = send_all(at, args.messages, sessions, args.size, secret)
        out[name] = (rate, cpu_seconds(pid) - cpu)
    return out["bare"][0], out["ours"][0], out["bare"][1], out["ours"][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--sessions", default="1,20",
                        help="comma-separated session counts to run (default 1,20)")
    parser.add_argument("--runs", type=int, default=5,
                        help="runs of each session count, the servers taking turns")
    args = parser.parse_args()
    require_install()

    bare = subprocess.Popen([*PYTHON, "-c", BARE_SERVER], stdout=subprocess.PIPE, text=True,
                            env=child_env())
    bare_port = int(bare.stdout.readline())
    work = scratch()
    config = {"data_dir": str(work / "data"), "smtp": {"port": 0}, "imap": {"port": 0}}
    proc, port, password = start_server(config, work)
    try:
        print(f"{args.messages} messages of {args.size} bytes")
        for sessions in (int(n) for n in args.sessions.split(",")):
            for at, secret in ((bare_port, None), (port, password)):  # warm-up, untimed
                send_all(at, max(sessions, args.messages // 5), sessions, args.size, secret)
            runs = [run_pair(bare, bare_port, proc, port, password, sessions, args, turn)
                    for turn in range(args.runs)]
            count = args.messages // sessions * sessions
            baseline, ours, bare_cpu, our_cpu = (
                statistics.median(run[at] for run in runs) for at in range(4))
            ratios = sorted(run[1] / run[0] for run in runs)
            print(f"  {sessions:2d} session(s): bare aiosmtpd {baseline:7.0f} msg/s, "
                  f"mailcoach {ours:7.0f} msg/s, ratio {statistics.median(ratios):.2f} "
                  f"({ratios[0]:.2f}-{ratios[-1]:.2f} over {len(runs)} runs); "
                  f"CPU per message {bare_cpu / count * 1e6:.0f} / {our_cpu / count * 1e6:.0f} us",
                  flush=True)
        print(f"  mailcoach peak RSS {peak_rss_mib(proc.pid):.0f} MiB, "
              f"bare aiosmtpd peak RSS {peak_rss_mib(bare.pid):.0f} MiB")
    finally:
        stop(proc)
        bare.terminate()
        bare.wait(10)


if __name__ == "__main__":
    main()
