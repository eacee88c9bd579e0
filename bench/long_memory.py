"""Long memories and a big store: context building, recovery after kill -9, consistency.

    python bench/long_memory.py [--messages 1000000] [--memory 20000] [--runs 5]
                                [--workdir DIR]

A store of ``--messages`` messages (about 1 KB each), filled straight into
it in group commits of 10,000, spread over agents whose memories hold
``--memory`` messages each (half from the user, half the agent's own).
``--workdir`` keeps the filled store there and reuses it (with the mail
each recovery run added).

* context: one agent's context for a model call, as the runtime builds it
  (its mailbox's ``memory``, the sizes ``fit`` checks against a window, and
  ``thread_to_turns``): the first call after the store opens (every message
  read and parsed), the next ones (median of ``--runs``), and the next ones
  after a message is appended to the memory, the usual case;
* recovery: ``mailcoach serve`` on that store takes mail over SMTP from 4
  sessions and is killed with SIGKILL in the middle; the time from starting
  it again to its SMTP greeting, and then whether every message that got its
  250 is there and the store's own check (``store/check.py``) finds the
  files and the index consistent.

Targets: context <= 20 ms with a 20,000-message memory; recovery <= 5 s at
1M messages.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import PYTHON, child_env, require_install, scratch

require_install()
from mailcoach_server.config import load_config  # noqa: E402
from mailcoach_server.runtime.context import thread_to_turns  # noqa: E402
from mailcoach_server.runtime.engine import Engine  # noqa: E402
from mailcoach_server.runtime.mailbox import Incoming  # noqa: E402
from mailcoach_server.runtime.trimming import fit  # noqa: E402
from mailcoach_server.store.check import check  # noqa: E402
from mailcoach_server.store.store import Delivery, MessageMeta, Store, WritePlan  # noqa: E402

USER = "user@localdomain"
GROUP = 10_000
BODY = ("Here is the output of the last command, and what to do next about it. " * 12 + "\n")


def agent_name(number: int) -> str:
    return f"agent{number}@localdomain"


def message(number: int, sender: str, to: str) -> bytes:
    return (f"From: {sender}\nTo: {to}\nSubject: step {number}\n"
            f"Message-ID: <long-{number}@localdomain>\nDate: Mon, 01 Jan 2024 10:00:00 +0000\n"
            f"Content-Type: text/plain; charset=utf-8\n\n{number}: {BODY}").encode()


async def fill_store(data_dir: Path, count: int, memory: int) -> None:
    store = Store.open(data_dir)
    try:
        store.ensure_folder("Trace", "\\All")
        received = time.time()
        for start in range(0, count, GROUP):
            plans = []
            for number in range(start, min(count, start + GROUP)):
                agent = agent_name(number // memory)
                sender, to = (USER, agent) if number % 2 == 0 else (agent, USER)
                meta = MessageMeta(
                    id=store.allocate_message_id(), message_id=f"<long-{number}@localdomain>",
                    sender=sender, recipients=(to,), subject=f"step {number}", in_reply_to="",
                    thread=f"<long-{number}@localdomain>", auto_round=0, cost=0.0,
                    received_at=received + number)
                plan = WritePlan(raw=message(number, sender, to), meta=meta,
                                 memory_appends=[agent], folders=["Trace"])
                if number % memory == 0:
                    plan.party_states[agent] = ("agent", {})
                plans.append(plan)
            await store.commit_many(plans)
    finally:
        await store.aclose()


def filled(data_dir: Path, count: int, memory: int) -> float:
    """Fill (unless ``--workdir`` holds this fill already); returns the seconds it took."""
    marker = data_dir / ".filled"
    what = f"{count} {memory}\n"
    if marker.exists() and marker.read_text() == what:
        return 0.0
    if data_dir.exists():
        shutil.rmtree(data_dir)
    started = time.monotonic()
    asyncio.run(fill_store(data_dir, count, memory))
    marker.write_text(what)
    return time.monotonic() - started


# -- context ---------------------------------------------------------------------------------


def new_meta(store: Store, agent: str) -> MessageMeta:
    number = store.allocate_message_id()
    return MessageMeta(id=number, message_id=f"<more-{number}@localdomain>", sender=USER,
                       recipients=(agent,), subject="more", in_reply_to="", thread="",
                       auto_round=0, cost=0.0, received_at=time.time())


def context_ms(data_dir: Path, workdir: Path, runs: int) -> dict[str, float]:
    """Milliseconds for agent 0: store open, first context, next ones, next after an append."""
    config_path = workdir / "context.yaml"
    config_path.write_text(yaml.safe_dump({"data_dir": str(data_dir)}))
    config = load_config(config_path)

    async def run() -> dict[str, float]:
        started = time.perf_counter()
        store = Store.open(data_dir)
        figures = {"opened": (time.perf_counter() - started) * 1000}
        try:
            engine = Engine(config, store)
            agent = agent_name(0)
            engine.notify(agent)  # its mailbox, as the server makes it
            await engine.aclose()  # no worker: this measures the mailbox alone
            mailbox = engine.mailboxes[agent]
            memory = store.parties[agent].memory
            figures["turns"] = len(memory)

            cpu: dict[str, list[float]] = {}

            async def build(last: int, figure: str) -> float:
                """Wall ms of one context; its CPU ms (all threads: the load does not count)
                go to ``cpu[figure]``."""
                upto = Incoming(ref=Delivery(0, agent, last, None), raw=b"", sender=USER,
                                subject="", message_id=None)
                started, started_cpu = time.perf_counter(), time.process_time()
                turns = await mailbox.memory(upto)
                fit(turns, system="primer", limit=10**9, keep_first=4, agent=agent, robots=())
                thread_to_turns(agent, turns, "primer")
                cpu.setdefault(figure, []).append((time.process_time() - started_cpu) * 1000)
                return (time.perf_counter() - started) * 1000

            figures["first"] = await build(memory[-1], "first")
            figures["next"] = statistics.median(
                [await build(memory[-1], "next") for _ in range(runs)])
            original = list(memory)
            appended = []
            for _ in range(runs):  # the memory grows by one message, as mail arrives
                plan = WritePlan(raw=message(len(memory), USER, agent), meta=new_meta(store, agent),
                                 memory_appends=[agent])
                await store.commit(plan)
                appended.append(await build(memory[-1], "appended"))
            figures["appended"] = statistics.median(appended)
            # A rewrite (as a rollback makes) back to the memory as filled, so a kept
            # --workdir stays as it was; the message that carries it is in no memory.
            await store.commit(WritePlan(raw=message(0, USER, agent), meta=new_meta(store, agent),
                                         memory_rewrites={agent: original}))
            memory = store.parties[agent].memory
            figures["rewritten"] = await build(memory[-1], "rewritten")
            figures.update({f"{name} cpu": statistics.median(ms) for name, ms in cpu.items()})
            return figures
        finally:
            await store.aclose()

    return asyncio.run(run())


# -- recovery ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(data_dir: Path, port: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        [*PYTHON, "-m", "mailcoach_server", "serve", "--data-dir", str(data_dir),
         "--smtp-port", str(port), "--imap-port", "0"],
        stdout=subprocess.DEVNULL, stderr=log, env=child_env())


def until_smtp(port: int, proc: subprocess.Popen, limit: float = 120) -> float:
    """Seconds until the SMTP greeting (from now)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if proc.poll() is not None:
            raise SystemExit("mailcoach serve exited while starting; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.makefile("rb").readline().startswith(b"220"):
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
    raise SystemExit(f"no SMTP greeting within {limit:.0f} s")


def ingest(port: int, password: str, stop: threading.Event, accepted: list[str],
           session: int) -> None:
    """Send mail to the user until ``stop``; the Message-IDs that got 250 go to ``accepted``."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.login(USER, password)
            number = 0
            while not stop.is_set():
                message_id = f"<kill-{session}-{number}@localdomain>"
                raw = (f"From: {USER}\r\nTo: {USER}\r\nSubject: ingest {number}\r\n"
                       f"Message-ID: {message_id}\r\n\r\n{BODY}").encode()
                smtp.sendmail(USER, [USER], raw)
                accepted.append(message_id)  # only after the 250
                number += 1
    except (OSError, smtplib.SMTPException):
        pass  # the server was killed under us: what got 250 is in ``accepted``


def recovery(data_dir: Path, workdir: Path) -> tuple[float, int, int, list[str]]:
    """(seconds to SMTP after kill -9, accepted, missing after restart, check problems)."""
    port = free_port()
    with open(workdir / "server.log", "w") as log:
        proc = serve(data_dir, port, log)
        try:
            until_smtp(port, proc)
            password = (data_dir / "login").read_text().strip()
            stop, accepted = threading.Event(), []
            threads = [threading.Thread(target=ingest, args=(port, password, stop, accepted, n))
                       for n in range(4)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while len(accepted) < 200 and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)  # in the middle of the ingest
            proc.wait(30)
            stop.set()
            for thread in threads:
                thread.join(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        port = free_port()
        started = time.perf_counter()
        proc = serve(data_dir, port, log)
        try:
            until_smtp(port, proc)
            recovered = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    missing = asyncio.run(_missing(data_dir, accepted))
    return recovered, len(accepted), missing, check(data_dir)


async def _missing(data_dir: Path, message_ids: list[str]) -> int:
    store = Store.open(data_dir)
    try:
        return sum(1 for m in message_ids if store.find_by_message_id(m) is None)
    finally:
        await store.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--memory", type=int, default=20_000,
                        help="messages in each agent's memory")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="keep the filled store here and reuse it")
    args = parser.parse_args()
    workdir = args.workdir.resolve() if args.workdir else scratch()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        data_dir = workdir / "data"
        memory = min(args.memory, args.messages)
        took = filled(data_dir, args.messages, memory)
        agents = -(-args.messages // memory)
        print(f"store of {args.messages} messages, {agents} agents with {memory} in memory each"
              + (f" (filled in {took:.0f} s)" if took else " (reused)"), flush=True)
        context = context_ms(data_dir, workdir, args.runs)
        warm = max(context["next"], context["appended"])
        print(f"  store opens in {context['opened']:.0f} ms")
        print(f"  context of {context['turns']:.0f} turns: first call {context['first']:.1f} ms, "
              f"next calls {context['next']:.1f} ms, after a message is appended "
              f"{context['appended']:.1f} ms (target <= 20 ms: "
              f"{'ok' if warm <= 20 else 'MISSED'}), after a rollback "
              f"{context['rewritten']:.1f} ms", flush=True)
        print("  the same in CPU time (the machine's load left out): " + ", ".join(
            f"{name} {context[name + ' cpu']:.1f} ms"
            for name in ("first", "next", "appended", "rewritten")))
        seconds, accepted, missing, problems = recovery(data_dir, workdir)
        print(f"  after kill -9 during ingest: SMTP answers {seconds:.2f} s after start "
              f"(target <= 5 s: {'ok' if seconds <= 5 else 'MISSED'})")
        print(f"  {accepted} messages got 250 before the kill, {missing} missing after restart")
        print(f"  store check: {'consistent' if not problems else '; '.join(problems[:5])}")
        return 0 if not problems and not missing else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
