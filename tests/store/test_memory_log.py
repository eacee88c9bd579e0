"""A memory's versions: any sequence of appends, removals, client additions and restores,
and every version read back is the memory exactly as it was then (also after reopening)."""

from __future__ import annotations

import asyncio
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcoach_server.store.store import Store
from tests.store.test_store import plan

SWE1 = "swe1@localdomain"

# append: a message that joins the memory; remove: a rewrite without some of it;
# add: a message put in from a client; restore: an earlier version made current
steps = st.lists(st.tuples(st.sampled_from(["append", "remove", "add", "restore"]),
                           st.integers(0, 2**16)), min_size=1, max_size=25)


async def _run(tmp_path, script) -> None:
    store = Store.open(tmp_path)
    snapshots: dict[int, list[int]] = {}
    try:
        await store.commit(plan(store, "first"))
        snapshots[1] = [1]
        for action, seed in script:
            rng = random.Random(seed)
            memory = list(store.parties[SWE1].memory)
            if action == "append":
                p = plan(store, "more")
            elif action == "add":
                p = plan(store, "taught")
                p.edit = "imap-add"
            elif action == "remove":
                p = plan(store, "record", parties=())
                p.memory_rewrites[SWE1] = [m for m in memory if rng.random() < 0.6]
                p.edit = "imap-expunge"
            else:
                version = rng.choice(sorted(snapshots))
                p = plan(store, "record", parties=())
                p.memory_rewrites[SWE1] = store.memory_version(SWE1, version)
                assert p.memory_rewrites[SWE1] == snapshots[version]
                p.edit = "restore"
            await store.commit(p)
            snapshots[p.meta.id] = list(store.parties[SWE1].memory)
        for version, memory in snapshots.items():
            assert store.memory_version(SWE1, version) == memory, version
        edits = store.memory_history(SWE1)
        assert [e.message for e in edits] == sorted(e.message for e in edits)
        assert all(e.size == len(snapshots[e.message]) for e in edits)
    finally:
        await store.aclose()
    store = Store.open(tmp_path)
    try:
        for version, memory in snapshots.items():
            assert store.memory_version(SWE1, version) == memory, version
    finally:
        await store.aclose()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps)
def test_every_version_reads_back_as_it_was(tmp_path_factory, script):
    asyncio.run(_run(tmp_path_factory.mktemp("store"), script))


async def test_a_rewrite_forgets_the_flags_of_what_left(tmp_path):
    store = Store.open(tmp_path)
    try:
        for body in ("a", "b"):
            await store.commit(plan(store, body))
        await store.change_memory_flags(SWE1, [1, 2], "add", ["\\Flagged"])
        assert store.memory_flags(SWE1) == {1: "\\Seen \\Flagged", 2: "\\Seen \\Flagged"}
        p = plan(store, "record", parties=())
        p.memory_rewrites[SWE1] = [2]
        await store.commit(p)
        assert store.memory_flags(SWE1) == {2: "\\Seen \\Flagged"}
        # a message not in the memory cannot be flagged there
        after, changed = await store.change_memory_flags(SWE1, [1, 3], "add", ["\\Deleted"])
        assert after == {} and changed == {}
        await store.change_memory_flags(SWE1, [2], "add", ["\\Deleted"])
        assert store.memory_deleted(SWE1) == [2]
    finally:
        await store.aclose()
