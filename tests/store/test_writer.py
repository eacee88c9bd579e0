"""The writer thread: it takes what is queued by itself, without the event loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mailcoach_server.store.check import check
from mailcoach_server.store.store import MessageMeta, Store, WritePlan


def message(store: Store, body: str) -> WritePlan:
    number = store.allocate_message_id()
    raw = (f"From: user@localdomain\nTo: swe1@localdomain\nSubject: m{number}\n"
           f"Message-ID: <m{number}@t>\n\n{body}\n").encode()
    meta = MessageMeta(number, f"<m{number}@t>", "user@localdomain", ("swe1@localdomain",),
                       f"m{number}", "", f"<m{number}@t>", 0, 0.0, time.time())
    plan = WritePlan(raw=raw, meta=meta, memory_appends=["swe1@localdomain"])
    if "swe1@localdomain" not in store.parties:
        plan.party_states["swe1@localdomain"] = ("agent", {})
    return plan


def appears(path: Path, data: bytes, limit: float = 30.0) -> bool:
    """Block this thread (the loop's, here) until ``data`` is in ``path``, or ``limit``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists() and data in path.read_bytes():
            return True
        time.sleep(0.01)
    return False


async def test_queued_plans_are_written_while_the_loop_is_busy(tmp_path):
    store = Store.open(tmp_path)
    try:
        await store.commit(message(store, "first"))
        plans = [message(store, f"burst {n}") for n in range(20)]
        commits = [asyncio.ensure_future(store.commit(p)) for p in plans]
        await asyncio.sleep(0)  # each commit queues its plan; none is acknowledged yet
        assert not any(c.done() for c in commits)
        # The loop is held here, as by a hundred replies being made back to back:
        # the writer thread still writes every queued plan.
        assert appears(tmp_path / "trace", b"burst 19")
        stored = await asyncio.gather(*commits)
        assert [s.meta.id for s in stored] == [p.meta.id for p in plans]
        assert store.parties["swe1@localdomain"].memory == list(range(1, 22))
    finally:
        await store.aclose()
    assert check(tmp_path) == []
