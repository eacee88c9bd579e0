"""Workers on Dovecot + Postfix: N worker processes serving many agents, against one serve.

    python bench/worker_scale.py [--agents 200] [--delay 0.2] [--workers 1,2,4]

Each agent answers one message (the user's question, one per agent, all sent
at once) with a scripted model that takes ``--delay`` seconds (the tests'
OpenAI-compatible server through litellm over HTTP). Figures, same run:

* one ``mailcoach serve`` (the agents in its own store): wall time from the
  first SMTP 250 to the last answer stored, and answers per second;
* ``mailcoach worker`` on a private Dovecot + Postfix (``tests/mailservers.py``:
  own config and ports, virtual users, LMTP), 1, 2 and 4 processes with the
  agents split between them: from the first submission to the last answer in
  the user's Dovecot INBOX;
* Dovecot + Postfix alone doing the worker's server operations for this pattern
  (deliver, read, APPEND to Sent, submit the answer, flag), 8 clients, no model:
  the messages per second the mail system itself sustains.

Each worker pays litellm's import once before the clock starts (a warm-up
message). Needs root (Postfix) and Debian's dovecot-imapd, dovecot-lmtpd and
postfix; without them only serve's figure is printed (and, with ``CI=true``,
the exit code is 1).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import imaplib
import importlib.util
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import (
    PYTHON,
    ROOT,
    child_env,
    require_install,
    scratch,
    scripted_model_server,
    start_server,
    stop,
)

DOMAIN = "bench.example"
USER = f"user@{DOMAIN}"


def mail_servers_module():
    """``tests/mailservers.py`` by path (stdlib only), as _common loads the model server."""
    path = ROOT / "tests" / "mailservers.py"
    spec = importlib.util.spec_from_file_location("mailcoach_bench_mailservers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def question(to: str, sender: str, n: int) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: question {n}\r\n"
            f"Message-ID: <bench.{n}.{time.monotonic_ns()}@{DOMAIN}>\r\n\r\nSay hello.\r\n"
            ).encode()


def wait_until(count, target: int, limit: float, what: str) -> float:
    started = time.perf_counter()
    while (have := count()) < target:
        if time.perf_counter() - started > limit:
            raise SystemExit(f"only {have} of {target} {what} after {limit:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - started


# -- serve ---------------------------------------------------------------------------------


def run_serve(model, agents: int, limit: float) -> float:
    workdir = scratch()
    data = workdir / "data"
    config = {"data_dir": str(data), "smtp": {"port": 0}, "imap": {"port": 0},
              "models": {"default": model.spec(), "retries": 1},
              "limits": {"max_models_in_flight": agents}, "prices": {}}
    proc, port, password = start_server(config, workdir)
    mbox = data / "user@localdomain.mbox"

    def answers() -> int:
        if not mbox.exists():
            return 0
        raw = b"\n" + mbox.read_bytes()
        return raw.count(b"\nFrom ") - raw.count(b"\nFrom user@localdomain ")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            smtp.login("user@localdomain", password)
            smtp.sendmail("user@localdomain", ["warm@localdomain"],
                          question("warm@localdomain", "user@localdomain", -1))
            wait_until(answers, 1, limit, "warm-up answers")
            started = time.perf_counter()
            for n in range(agents):
                to = f"agent{n:03d}@localdomain"
                smtp.sendmail("user@localdomain", [to], question(to, "user@localdomain", n))
        wait_until(answers, agents + 1, limit, "answers")
        return time.perf_counter() - started
    finally:
        stop(proc)


# -- workers on Dovecot + Postfix -----------------------------------------------------------


def inbox_count(mail, address: str) -> int:
    client = imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30)
    try:
        client.login(address, mail.users[address])
        _, data = client.status("INBOX", "(MESSAGES)")
        match = re.search(rb"MESSAGES (\d+)", data[0])
        return int(match.group(1)) if match else 0
    finally:
        client.logout()


def start_workers(mail, model, agents: list[str], count: int, workdir: Path) -> list:
    server_config = {
        "domain": DOMAIN, "user": USER, "data_dir": str(workdir / "data"),
        "models": {"default": model.spec(), "retries": 1},
        "limits": {"max_models_in_flight": len(agents)}, "prices": {},
        "agents": {"parties": {"swe1@localdomain": False}},
        "robots": {"shell@localdomain": None},
    }
    procs = []
    for index in range(count):
        mine = agents[index::count]
        directory = workdir / f"worker{index}"
        directory.mkdir()
        (directory / "mailcoach.yaml").write_text(yaml.safe_dump(server_config))
        for address in mine:
            (directory / address).write_text(mail.users[address])
        (directory / "worker.yaml").write_text(yaml.safe_dump({
            "config": "mailcoach.yaml",
            "imap": {"host": "127.0.0.1", "port": mail.imap_port, "security": "none"},
            "smtp": {"host": "127.0.0.1", "port": mail.submission_port, "security": "none"},
            "parties": {a: {"password_file": a} for a in mine},
            "max_connections": len(mine),
        }))
        log = open(directory / "worker.log", "w")  # noqa: SIM115 - lives as long as it
        proc = subprocess.Popen([*PYTHON, "-m", "mailcoach_server", "worker", "--config",
                                 str(directory / "worker.yaml")], stdout=subprocess.DEVNULL,
                                stderr=log, cwd=directory, env=child_env())
        procs.append((proc, directory / "worker.log", mine))
    for _proc, log, mine in procs:  # every lease held before the clock starts
        wait_until(lambda log=log: log.read_text().count("serving (lease held)"), len(mine),
                   120, f"leases in {log}")
    return procs


def run_workers(mail_module, model, agents: int, count: int, limit: float) -> float:
    workdir = scratch()
    with mail_module.MailServers(DOMAIN, imap_process_limit=agents + 50) as mail:
        mail.add_user(USER, "user-secret")
        names = [f"agent{n:03d}@{DOMAIN}" for n in range(agents)]
        for address in names:
            mail.add_user(address, address.partition("@")[0] + "-secret")
        procs = start_workers(mail, model, names, count, workdir)
        try:
            for index, (_, _, mine) in enumerate(procs):  # warm-up: the litellm import
                mail.submit(USER, [mine[0]], question(mine[0], USER, -1 - index))
            wait_until(lambda: inbox_count(mail, USER), count, limit, "warm-up answers")
            started = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=60) as smtp:
                smtp.login(USER, mail.users[USER])
                for n, address in enumerate(names):
                    smtp.sendmail(USER, [address], question(address, USER, n))
            wait_until(lambda: inbox_count(mail, USER), agents + count, limit, "answers")
            return time.perf_counter() - started
        finally:
            for proc, _, _ in procs:
                proc.send_signal(signal.SIGTERM)
            for proc, _, _ in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def one_exchange(mail, address: str, n: int) -> None:
    """What a worker asks of the servers for one answer, without the model."""
    client = imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=60)
    try:
        client.login(address, mail.users[address])
        while True:
            client.select("INBOX")
            _, data = client.uid("SEARCH", "UNKEYWORD", "$MCDone")
            if data[0]:
                break
            time.sleep(0.05)
        uid = data[0].split()[0]
        client.uid("FETCH", uid, "(BODY.PEEK[])")
        answer = (f"From: {address}\r\nTo: {USER}\r\nSubject: Re: question {n}\r\n"
                  f"Message-ID: <answer.{n}@{DOMAIN}>\r\n\r\nhello\r\n").encode()
        client.append("Sent", "(\\Seen $MCUnsent)", None, answer)
        with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=60) as smtp:
            smtp.login(address, mail.users[address])
            smtp.sendmail(address, [USER], answer)
        client.uid("STORE", uid, "+FLAGS", "(\\Answered $MCDone)")
    finally:
        client.logout()


def run_mail_alone(mail_module, agents: int, limit: float) -> float:
    with mail_module.MailServers(DOMAIN, imap_process_limit=agents + 50) as mail:
        mail.add_user(USER, "user-secret")
        names = [f"agent{n:03d}@{DOMAIN}" for n in range(agents)]
        for address in names:
            mail.add_user(address, address.partition("@")[0] + "-secret")
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=60) as smtp:
            smtp.login(USER, mail.users[USER])
            for n, address in enumerate(names):
                smtp.sendmail(USER, [address], question(address, USER, n))
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda pair: one_exchange(mail, pair[1], pair[0]), enumerate(names)))
        wait_until(lambda: inbox_count(mail, USER), agents, limit, "answers")
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.2, help="model latency, seconds")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--limit", type=float, default=600, help="seconds before giving up")
    args = parser.parse_args()
    require_install()
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    print(f"{args.agents} agents, one message each, model latency "
          f"{args.delay * 1000:.0f} ms", flush=True)
    with scripted_model_server()() as model:
        model.delay = args.delay
        model.responder = lambda body: f"To: {USER}\nSubject: done\n\nhello"
        wall = run_serve(model, args.agents, args.limit)
        print(f"  serve (one process)    {wall:7.2f} s  {args.agents / wall:7.1f} msg/s",
              flush=True)
        mail_module = mail_servers_module()
        if any(x is None for x in (mail_module.DOVECOT, mail_module.POSTFIX)) or \
                not mail_module.DOVECOT_LMTP.exists() or os.geteuid() != 0:
            print("  (no Dovecot + Postfix here, or not root: worker figures skipped)")
            # the suite runs this script; under CI a missing tool fails, as in the tests
            return 1 if os.environ.get("CI") == "true" else 0
        model.responder = lambda body: f"To: {USER}\nSubject: done\n\nhello"
        for count in counts:
            wall = run_workers(mail_module, model, args.agents, count, args.limit)
            print(f"  worker x{count:<2} (Dovecot)   {wall:7.2f} s  "
                  f"{args.agents / wall:7.1f} msg/s", flush=True)
        wall = run_mail_alone(mail_module, args.agents, args.limit)
        print(f"  Dovecot + Postfix alone {wall:6.2f} s  {args.agents / wall:7.1f} msg/s "
              "(the worker's server operations, 8 clients, no model)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
