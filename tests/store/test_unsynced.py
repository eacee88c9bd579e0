"""A group whose index committed before its bytes were synced: kept or taken back.

The writer commits a group's index while the fsync thread syncs its message
files. A power loss in between leaves index rows whose bytes may not be on
disk. These tests make that disk state for real: the group's sync is held
back (the fsync thread is busy with a job that waits), the data directory
is copied as the disk would hold it then (the index committed and synced,
the trace with or without the group's unsynced bytes), and the copy is opened.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from mailcoach_server.errors import StoreError
from mailcoach_server.store import store as store_module
from mailcoach_server.store import unsynced
from mailcoach_server.store.check import check
from mailcoach_server.store.schema import INDEX_FILES
from mailcoach_server.store.store import MessageMeta, Store, WritePlan

AGENT = "swe1@localdomain"
USER = "user@localdomain"


def message(store: Store, body: str, *, sender: str = USER, to: str = AGENT,
            deliver: bool = False, completes: int | None = None) -> WritePlan:
    number = store.allocate_message_id()
    raw = (f"From: {sender}\nTo: {to}\nSubject: m{number}\n"
           f"Message-ID: <m{number}@t>\n\n{body}\n").encode()
    meta = MessageMeta(number, f"<m{number}@t>", sender, (to,), f"m{number}", "",
                       f"<m{number}@t>", 0, 0.0, time.time())
    plan = WritePlan(raw=raw, meta=meta, memory_appends=[sender, to], folders=["INBOX"],
                     completes=completes)
    for party in (sender, to):
        if party not in store.parties:
            plan.party_states[party] = ("agent" if party != USER else "user", {"n": number})
    if deliver:
        plan.deliveries.append((to, None))
    return plan


def disk_image(data_dir: Path, copy: Path) -> None:
    """The files as a power loss would leave them once the index commit is synced."""
    copy.mkdir(mode=0o700)
    for path in data_dir.iterdir():
        if path.is_file() and path.name != "lock":
            shutil.copyfile(path, copy / path.name)
    assert (copy / INDEX_FILES[0]).exists()


async def committed_but_not_synced(data_dir: Path, image: Path) -> tuple[int, int]:
    """A store with one acknowledged message to AGENT, then a group (AGENT's reply,
    completing that delivery, and a message creating a new party) whose sync is held
    while ``image`` is taken. Returns the trace's size before and after the group."""
    store = Store.open(data_dir)
    store.ensure_folder("INBOX")
    await store.commit(message(store, "question", deliver=True))
    (delivery,) = store.pending_deliveries(AGENT)
    before = (data_dir / "trace").stat().st_size
    held, taken = threading.Event(), threading.Event()
    store._syncer.submit(held.wait, 60)  # the group's fsync waits behind this job
    try:
        reply = message(store, "answer", sender=AGENT, to=USER, completes=delivery.id)
        newcomer = message(store, "hello", to="new@localdomain", deliver=True)
        group = asyncio.ensure_future(store.commit_many([reply, newcomer]))

        def image_once_indexed() -> None:
            # The index commit is the writer's last step before it waits for the sync.
            for _ in range(6000):
                if store.message_ids([newcomer.meta.id]):
                    disk_image(data_dir, image)
                    taken.set()
                    return
                time.sleep(0.01)

        watcher = threading.Thread(target=image_once_indexed)
        watcher.start()
        await _wait_thread(watcher)
        assert taken.is_set(), "the group was never indexed"
        assert not group.done()  # not acknowledged before its bytes are synced
    finally:
        held.set()
    await group  # acknowledged once the sync is let go
    after = (data_dir / "trace").stat().st_size
    await store.aclose()
    return before, after


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


async def _wait_thread(thread: threading.Thread) -> None:
    await asyncio.get_running_loop().run_in_executor(None, thread.join, 60)


async def test_a_group_whose_bytes_missed_the_disk_is_dropped_at_open(tmp_path):
    image = tmp_path / "image"
    before, after = await committed_but_not_synced(tmp_path / "data", image)
    assert after > before
    truncate(image / "trace", before)  # the group's bytes never reached the disk
    store = Store.open(image)
    try:
        assert store.message_count() == 1
        assert "new@localdomain" not in store.parties
        assert store.parties[AGENT].memory == [1]
        assert store.parties[AGENT].state == {"n": 1}  # as before the group
        assert [d.message for d in store.pending_deliveries(AGENT)] == [1]  # asked again
        assert store.pending_deliveries("new@localdomain") == []
        number = store.allocate_message_id()
        assert number == 2
    finally:
        await store.aclose()
    assert check(image) == []
    assert (image / "trace").stat().st_size == before
    assert (image / "new@localdomain.mbox").read_bytes() == b""  # its party is gone


async def test_a_group_whose_bytes_came_back_changed_is_dropped_too(tmp_path):
    image = tmp_path / "image"
    before, after = await committed_but_not_synced(tmp_path / "data", image)
    overwrite(image / "trace", before, b"\0" * (after - before))  # the size made it, not the data
    store = Store.open(image)
    try:
        assert store.message_count() == 1
    finally:
        await store.aclose()
    assert check(image) == []
    assert (image / "trace").stat().st_size == before


async def test_a_group_whose_bytes_made_it_is_kept(tmp_path):
    image = tmp_path / "image"
    await committed_but_not_synced(tmp_path / "data", image)
    store = Store.open(image)  # the sync finished, the record was not cleared yet
    try:
        assert store.message_count() == 3
        assert store.parties["new@localdomain"].memory == [3]
        assert store.pending_deliveries(AGENT) == []
    finally:
        await store.aclose()
    assert check(image) == []
    store = Store.open(image)  # and the record is gone: nothing is checked twice
    try:
        assert store.message_count() == 3
    finally:
        await store.aclose()


async def test_after_the_group_is_durable_a_truncated_trace_is_still_an_error(tmp_path):
    image = tmp_path / "image"
    before, _ = await committed_but_not_synced(tmp_path / "data", image)
    data = tmp_path / "data"  # closed normally: the record was cleared
    truncate(data / "trace", before)
    with pytest.raises(StoreError, match="shorter"):
        Store.open(data)


async def test_a_sync_that_fails_after_the_commit_takes_the_group_back(tmp_path, monkeypatch):
    store = Store.open(tmp_path)
    store.ensure_folder("INBOX")
    await store.commit(message(store, "kept"))
    size = (tmp_path / "trace").stat().st_size
    real = store_module._sync_files

    def failing(data_dir, handles):  # an I/O error no test can make a disk give
        real(data_dir, handles)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store_module, "_sync_files", failing)
    with pytest.raises(StoreError, match="Input/output error"):
        await store.commit(message(store, "lost", to="new@localdomain", deliver=True))
    monkeypatch.setattr(store_module, "_sync_files", real)
    assert (tmp_path / "trace").stat().st_size == size
    assert "new@localdomain" not in store.parties
    assert store.message_count() == 1
    await store.commit(message(store, "next"))
    await store.aclose()
    assert check(tmp_path) == []
    store = Store.open(tmp_path)
    try:
        assert store.message_count() == 2
        assert "new@localdomain" not in store.parties
        assert store.pending_deliveries("new@localdomain") == []
    finally:
        await store.aclose()


async def test_the_record_is_cleared_once_the_writer_has_been_idle(tmp_path):
    # Groups keep coming, each replacing the record; once none came for a while the last
    # one's is dropped, the store still open (a power loss then checks nothing).
    store = Store.open(tmp_path / "data")
    store.ensure_folder("INBOX")
    index = sqlite3.connect(tmp_path / "data" / INDEX_FILES[0])
    try:
        def recorded() -> bool:
            return index.execute("SELECT 1 FROM meta WHERE key=?", (unsynced.KEY,)).fetchone() \
                is not None

        started = time.monotonic()
        while time.monotonic() - started < 4 * store_module._CLEAR_AFTER:
            await store.commit(message(store, "busy"))
            await asyncio.sleep(store_module._CLEAR_AFTER / 5)
        for _ in range(200):
            if not recorded():
                break
            await asyncio.sleep(0.01)
        assert not recorded()
    finally:
        index.close()
        await store.aclose()
