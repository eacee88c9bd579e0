"""The store's consistency check: quiet on a good data directory, specific on a bad one."""

from __future__ import annotations

import sqlite3
import time

from mailcoach_server.store.check import check
from mailcoach_server.store.store import MessageMeta, Store, WritePlan

AGENT = "swe1@localdomain"


def message(store: Store, body: str, *, file: str = "trace") -> WritePlan:
    number = store.allocate_message_id()
    raw = (f"From: user@localdomain\nTo: {AGENT}\nSubject: m{number}\n"
           f"Message-ID: <m{number}@t>\n\n{body}\n").encode()
    meta = MessageMeta(number, f"<m{number}@t>", "user@localdomain", (AGENT,), f"m{number}",
                       "", f"<m{number}@t>", 0, 0.0, time.time())
    plan = WritePlan(raw=raw, meta=meta, file=file, memory_appends=[AGENT], folders=["INBOX"])
    if AGENT not in store.parties:
        plan.party_states[AGENT] = ("agent", {})
    return plan


async def filled(tmp_path) -> None:
    store = Store.open(tmp_path)
    store.ensure_folder("INBOX")
    await store.commit_many([message(store, "From the start of a line"), message(store, "two")])
    await store.commit(message(store, "appended by a client", file="imap"))
    await store.aclose()


async def test_a_store_as_written_is_consistent(tmp_path):
    assert check(tmp_path) == [f"{tmp_path / 'index.sqlite'} does not exist"]
    await filled(tmp_path)
    assert check(tmp_path) == []


async def test_an_unacknowledged_tail_is_reported_and_cut_at_open(tmp_path):
    await filled(tmp_path)
    trace = tmp_path / "trace"
    trace.write_bytes(trace.read_bytes() + b"From torn write\nSubject: half")
    assert check(tmp_path) == [
        f"trace: {(tmp_path / 'trace').stat().st_size} bytes, the index accounts for "
        f"{(tmp_path / 'trace').stat().st_size - 29}"]
    store = Store.open(tmp_path)  # recovery cuts it
    await store.aclose()
    assert check(tmp_path) == []


async def test_damage_is_named(tmp_path):
    await filled(tmp_path)
    data = bytearray((tmp_path / "trace").read_bytes())
    data[0:5] = b"Frob "  # the first From_ line
    (tmp_path / "trace").write_bytes(bytes(data))
    (tmp_path / f"{AGENT}.mbox").write_bytes(b"")
    conn = sqlite3.connect(tmp_path / "index.sqlite")
    conn.execute("INSERT INTO memory VALUES (?, 99, 1234)", (AGENT,))
    conn.execute("UPDATE folders SET uidnext = 2 WHERE name = 'INBOX'")
    conn.commit()
    conn.close()
    problems = check(tmp_path)
    assert problems == [
        "trace: message 1 does not start after a From_ line at byte 0",
        f"{AGENT}.mbox: 0 bytes, the index says "
        f"{_indexed_size(tmp_path)}",
        "memory: 1 entries name no indexed message",
        "folder 'INBOX': UID 3 is not below UIDNEXT 2",
    ]


def _indexed_size(data_dir) -> int:
    conn = sqlite3.connect(data_dir / "index.sqlite")
    try:
        return conn.execute("SELECT mbox_size FROM parties WHERE address=?", (AGENT,)).fetchone()[0]
    finally:
        conn.close()
