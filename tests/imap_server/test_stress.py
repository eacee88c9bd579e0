"""STRESS: ten IMAP clients at once, every response checked by a strict parser.

Ten connections share INBOX and, for ``MAILCOACH_STRESS_SECONDS`` (default
60; set it lower for a local run), APPEND, FETCH, STORE, EXPUNGE, COPY and
NOOP at random. Each client keeps its own model of the mailbox from what the
server told it and counts a *protocol error* for anything that breaks it:

* a line that is not a response this client could be sent (grammar below);
* a tagged NO or BAD, an untagged NO/BAD, BYE but for LOGOUT, anything after it;
* EXISTS below what it knew without an EXPUNGE in between, a sequence
  number outside ``1..EXISTS``, RECENT above EXISTS;
* a UID that changes for a sequence number, or UIDs not strictly increasing
  with sequence numbers;
* a flag in FETCH that the last ``* FLAGS`` did not list (``\\Recent`` aside);
* a ``FETCH 1:*`` that does not answer for every message it had.

The test asserts zero errors; its id says ``stress`` and its duration.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

SECONDS = float(os.environ.get("MAILCOACH_STRESS_SECONDS", "60"))
CLIENTS = 10
KEYWORDS = ("$k1", "$k2", "$k3")
SYSTEM = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")

_TAGGED = re.compile(rb"^(c\d+) (OK|NO|BAD)(?: \[[A-Z-]+(?: [^\]]*)?\])? .*$")
_STATUS = re.compile(rb"^\* (OK|NO|BAD|BYE)(?: \[([A-Z-]+)(?: ([^\]]*))?\])? .+$")
_NUMBERED = re.compile(rb"^\* (\d+) (EXISTS|RECENT|EXPUNGE)$")
_FLAGS = re.compile(rb"^\* FLAGS \(([^()]*)\)$")
_SEARCH = re.compile(rb"^\* SEARCH((?: \d+)*)$")
_FETCH = re.compile(rb"^\* (\d+) FETCH \((.*)\)$")
_ITEM = re.compile(rb"(UID) (\d+)|(FLAGS) \(([^()]*)\)")
_FLAG = re.compile(rb"^\\?[A-Za-z0-9$_.-]+$")


@dataclass
class View:
    """What one client has been told about INBOX."""

    name: str
    exists: int = 0
    uids: dict[int, int] = field(default_factory=dict)  # seq -> uid
    flags_list: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    fetched: set[int] = field(default_factory=set)
    logging_out: bool = False
    said_bye: bool = False

    def error(self, why: str, line: bytes) -> None:
        self.errors.append(f"{self.name}: {why}: {line[:200]!r}")

    def untagged(self, line: bytes) -> None:
        if self.said_bye:
            self.error("a response after BYE", line)
        if m := _NUMBERED.match(line):
            number, kind = int(m.group(1)), m.group(2)
            if kind == b"EXISTS":
                if number < self.exists:
                    self.error("EXISTS went down without EXPUNGE", line)
                self.exists = number
            elif kind == b"RECENT":
                if number > self.exists:
                    self.error("RECENT above EXISTS", line)
            else:
                if not 1 <= number <= self.exists:
                    self.error("EXPUNGE of a sequence number that does not exist", line)
                    return
                self.uids = {s if s < number else s - 1: u for s, u in self.uids.items()
                             if s != number}
                self.exists -= 1
        elif m := _FLAGS.match(line):
            self.flags_list = {f.decode() for f in m.group(1).split()}
        elif m := _FETCH.match(line):
            self.fetch(int(m.group(1)), m.group(2), line)
        elif m := _STATUS.match(line):
            if m.group(1) == b"BYE" and self.logging_out:
                self.said_bye = True
            elif m.group(1) != b"OK":
                self.error("untagged " + m.group(1).decode(), line)
        elif not _SEARCH.match(line):
            self.error("not a response this client can be sent", line)

    def fetch(self, seq: int, body: bytes, line: bytes) -> None:
        if not 1 <= seq <= self.exists:
            self.error("FETCH of a sequence number outside 1..EXISTS", line)
            return
        pos, uid = 0, None
        while pos < len(body):
            m = _ITEM.match(body, pos)
            if m is None:
                self.error("FETCH items do not parse", line)
                return
            if m.group(1):
                uid = int(m.group(2))
            else:
                for flag in m.group(4).split():
                    text = flag.decode()
                    if not _FLAG.match(flag):
                        self.error("not a flag", line)
                    elif text != "\\Recent" and text not in self.flags_list:
                        self.error(f"flag {text} before FLAGS listed it", line)
            pos = m.end()
            if pos < len(body):
                if body[pos : pos + 1] != b" ":
                    self.error("FETCH items do not parse", line)
                    return
                pos += 1
        self.fetched.add(seq)
        if uid is None:
            return
        known = self.uids.get(seq)
        if known is not None and known != uid:
            self.error(f"sequence number {seq} was UID {known}", line)
        below = [u for s, u in self.uids.items() if s < seq]
        above = [u for s, u in self.uids.items() if s > seq]
        if (below and max(below) >= uid) or (above and min(above) <= uid):
            self.error("UIDs not increasing with sequence numbers", line)
        self.uids[seq] = uid


class Client:
    """One connection: raw lines, every one through the :class:`View`."""

    def __init__(self, address: tuple[str, int], password: str, name: str) -> None:
        self.sock = socket.create_connection(address, timeout=60)
        self.file = self.sock.makefile("rb")
        self.view = View(name)
        self.tags = 0
        self.commands = 0
        greeting = self.file.readline().rstrip(b"\r\n")
        if not greeting.startswith(b"* OK "):
            self.view.error("bad greeting", greeting)
        self.run(b'LOGIN "user@localdomain" "' + password.encode() + b'"')

    def run(self, text: bytes) -> bytes:
        """Send a command; check every line up to its tagged response; return the status."""
        self.tags += 1
        self.commands += 1
        tag = b"c%d" % self.tags
        self.sock.sendall(tag + b" " + text + b"\r\n")
        while True:
            line = self.file.readline()
            if not line:
                self.view.error("connection closed", text)
                return b"BYE"
            line = line.rstrip(b"\r\n")
            if line.startswith(tag + b" "):
                m = _TAGGED.match(line)
                if m is None:
                    self.view.error("tagged line does not parse", line)
                    return b"BAD"
                if m.group(2) != b"OK":
                    self.view.error(f"{m.group(2).decode()} to {text[:60]!r}", line)
                return m.group(2)
            if line.startswith(b"* "):
                self.view.untagged(line)
            else:
                self.view.error("neither tagged nor untagged", line)

    def known_uid(self, rng: random.Random) -> int | None:
        return rng.choice(list(self.view.uids.values())) if self.view.uids else None

    def step(self, rng: random.Random, serial: int) -> None:
        view = self.view
        action = rng.choices(["append", "fetch", "store", "expunge", "copy", "noop"],
                             [3, 3, 4, 2 if view.exists < 150 else 8, 1, 1])[0]
        if action == "append":
            keyword = rng.choice(("", *KEYWORDS))
            flags = f"({keyword}) " if keyword else ""
            message = (f"From: stress@localdomain\r\nSubject: {view.name} {serial}\r\n\r\n"
                       f"body {serial}\r\n").encode()
            self.run(f"APPEND INBOX {flags}{{{len(message)}+}}".encode() + b"\r\n" + message)
        elif action == "fetch":
            before = view.exists
            view.fetched = set()
            if before and self.run(b"FETCH 1:* (UID FLAGS)") == b"OK":
                missing = set(range(1, before + 1)) - view.fetched
                if missing:  # no EXPUNGE may come during FETCH (RFC 3501 §7.4.1)
                    view.error(f"FETCH 1:* left out {sorted(missing)[:5]}", b"")
        elif (uid := self.known_uid(rng)) is None:
            self.run(b"NOOP")
        elif action == "store":
            sign = rng.choice("+-")
            flag = rng.choice((*SYSTEM[:2], "\\Seen", *KEYWORDS))
            self.run(f"UID STORE {uid} {sign}FLAGS ({flag})".encode())
        elif action == "expunge":
            self.run(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)".encode())
            self.run(b"EXPUNGE")
        elif action == "copy":
            self.run(f"UID COPY {uid} INBOX".encode())
        else:
            self.run(b"NOOP")

    def close(self) -> None:
        self.view.logging_out = True
        self.run(b"LOGOUT")
        if not self.view.said_bye:
            self.view.error("LOGOUT without BYE", b"")
        self.file.close()
        self.sock.close()


@pytest.mark.timeout(SECONDS + 180)
@pytest.mark.parametrize("seconds", [SECONDS], ids=[f"stress-{SECONDS:g}s"])
def test_stress_ten_clients_see_a_consistent_mailbox(threaded, seconds):
    address, password = threaded.server.imap_address, threaded.password
    clients = [Client(address, password, f"client{n}") for n in range(CLIENTS)]
    for client in clients:
        client.run(b"SELECT INBOX")
    deadline = time.monotonic() + seconds
    failures: list[BaseException] = []

    def work(client: Client, seed: int) -> None:
        rng = random.Random(seed)
        serial = 0
        try:
            # bounded twice: by the clock and by a step count no run reaches
            while time.monotonic() < deadline and serial < 1_000_000:
                serial += 1
                client.step(rng, serial)
        except BaseException as exc:  # a socket timeout: report it, do not hang
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(c, n), name=c.view.name)
               for n, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    assert not any(t.is_alive() for t in threads), "a stress client did not stop"
    for client in clients:
        client.close()
    errors = [e for c in clients for e in c.view.errors]
    commands = sum(c.commands for c in clients)
    print(f"\nstress: {CLIENTS} clients, {seconds:g} s, {commands} commands, "
          f"{len(errors)} protocol errors")
    assert not failures, failures
    assert commands > CLIENTS * 10  # it really ran
    assert errors == [], f"{len(errors)} protocol errors, first: {errors[:10]}"


@pytest.mark.parametrize("lines, why", [
    ([b"* 3 EXISTS", b"* 2 EXISTS"], "EXISTS went down"),
    ([b"* 1 EXISTS", b"* 2 EXPUNGE"], "EXPUNGE of a sequence"),
    ([b"* 1 EXISTS", b"* 2 RECENT"], "RECENT above"),
    ([b"* FLAGS (\\Seen)", b"* 1 EXISTS", b"* 1 FETCH (FLAGS ($new))"], "before FLAGS"),
    ([b"* 2 EXISTS", b"* 1 FETCH (UID 5)", b"* 2 FETCH (UID 4)"], "not increasing"),
    ([b"* 1 EXISTS", b"* 1 FETCH (UID 5)", b"* 1 FETCH (UID 6)"], "was UID 5"),
    ([b"* 1 EXISTS", b"* 1 FETCH (UID 5 FLAGS ()"], "do not parse"),
    ([b"* BYE going"], "untagged BYE"),
    ([b"* 1 EXISTS trailing"], "not a response"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_the_strict_checker_catches_each_kind_of_error(lines, why):
    view = View("checker")
    for line in lines:
        view.untagged(line)
    assert len(view.errors) == 1 and why in view.errors[0], view.errors
