"""The store: durable commits, recovery after a torn write, memory rewrites."""

from __future__ import annotations

import asyncio
import mailbox
import time

import pytest

from mailcoach_server.errors import StoreError
from mailcoach_server.store.store import MessageMeta, Store, WritePlan


def plan(store: Store, body: str, *, parties=("swe1@localdomain",), rewrites=None) -> WritePlan:
    number = store.allocate_message_id()
    raw = (f"From: user@localdomain\nTo: swe1@localdomain\nSubject: m{number}\n"
           f"Message-ID: <m{number}@t>\n\n{body}\n").encode()
    meta = MessageMeta(number, f"<m{number}@t>", "user@localdomain", ("swe1@localdomain",),
                       f"m{number}", "", f"<m{number}@t>", 0, 0.01, time.time())
    p = WritePlan(raw=raw, meta=meta, memory_appends=list(parties),
                  memory_rewrites=dict(rewrites or {}))
    for party in parties:
        if party not in store.parties:
            p.party_states[party] = ("agent", {})
    return p


def append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def read_box(path):
    box = mailbox.mbox(path, create=False)
    try:
        return [m["Subject"] for m in box]
    finally:
        box.close()


async def test_commit_is_readable_and_survives_reopen(tmp_path):
    store = Store.open(tmp_path)
    first = plan(store, "From the start of a line\n>From quoted")
    await store.commit(first)
    await store.commit_many([plan(store, "two"), plan(store, "three")])
    raw, meta = store.read(1)
    assert raw == first.raw and meta.subject == "m1"
    await store.aclose()
    store = Store.open(tmp_path)
    assert store.message_count() == 3
    assert store.parties["swe1@localdomain"].memory == [1, 2, 3]
    assert store.read(1)[0] == first.raw  # mboxrd quoting is undone exactly
    assert store.spent() == pytest.approx(0.03)
    await store.aclose()
    assert read_box(tmp_path / "trace") == ["m1", "m2", "m3"]
    assert read_box(tmp_path / "swe1@localdomain.mbox") == ["m1", "m2", "m3"]


async def test_memory_released_between_commits_leaves_the_store_working(tmp_path):
    # What the IMAP server does when its last client goes: the page caches of every
    # connection are released, then the heap is trimmed (``then``, in a store thread).
    store = Store.open(tmp_path)
    try:
        await store.commit_many([plan(store, f"m{n}") for n in range(50)])
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        store.release_memory(then=lambda: loop.call_soon_threadsafe(done.set))
        await asyncio.wait_for(done.wait(), 10)
        await store.commit(plan(store, "after"))
        assert store.read(51)[0].endswith(b"after\n")
        assert store.parties["swe1@localdomain"].memory == list(range(1, 52))
    finally:
        await store.aclose()
    called: list[bool] = []
    store.release_memory(then=lambda: called.append(True))  # closed: no connection, no thread
    assert called == []


async def test_unacknowledged_tails_are_cut_at_open(tmp_path):
    store = Store.open(tmp_path)
    await store.commit(plan(store, "kept"))
    await store.aclose()
    good_trace = (tmp_path / "trace").read_bytes()
    good_party = (tmp_path / "swe1@localdomain.mbox").read_bytes()
    # A crash after the file write, before the index commit:
    append(tmp_path / "trace", b"From user@localdomain Thu Jan  1 00:00:00 2026\n"
           b"Subject: torn\n\nhalf")
    append(tmp_path / "swe1@localdomain.mbox", b"From user@localdomain Thu Jan  1 00:00:00 "
           b"2026\nSubject: torn\n")
    store = Store.open(tmp_path)
    assert (tmp_path / "trace").read_bytes() == good_trace
    assert (tmp_path / "swe1@localdomain.mbox").read_bytes() == good_party
    await store.commit(plan(store, "after"))
    await store.aclose()
    assert read_box(tmp_path / "trace") == ["m1", "m2"]


async def test_a_truncated_trace_is_an_error_not_a_silent_loss(tmp_path):
    store = Store.open(tmp_path)
    await store.commit(plan(store, "x" * 100))
    await store.aclose()
    data = (tmp_path / "trace").read_bytes()
    (tmp_path / "trace").write_bytes(data[:20])
    with pytest.raises(StoreError, match="shorter"):
        Store.open(tmp_path)


async def test_memory_rewrite_replaces_the_party_file(tmp_path):
    store = Store.open(tmp_path)
    await store.commit_many([plan(store, "a"), plan(store, "b"), plan(store, "c")])
    await store.commit(plan(store, "d", rewrites={"swe1@localdomain": [1]}))
    assert store.parties["swe1@localdomain"].memory == [1, 4]
    await store.aclose()
    assert read_box(tmp_path / "swe1@localdomain.mbox") == ["m1", "m4"]
    assert read_box(tmp_path / "trace") == ["m1", "m2", "m3", "m4"]  # never rewritten
    assert not list(tmp_path.glob("*.tmp"))
    store = Store.open(tmp_path)
    assert store.parties["swe1@localdomain"].memory == [1, 4]
    await store.aclose()


async def test_a_party_file_lost_is_rebuilt_from_the_index(tmp_path):
    store = Store.open(tmp_path)
    await store.commit_many([plan(store, "a"), plan(store, "b")])
    await store.aclose()
    (tmp_path / "swe1@localdomain.mbox").write_bytes(b"")
    store = Store.open(tmp_path)
    await store.aclose()
    assert read_box(tmp_path / "swe1@localdomain.mbox") == ["m1", "m2"]


def test_unwritable_data_dir_is_a_store_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot write"):
        Store.open(target / "data")


def open_in_another_process(path):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from mailcoach_server.store.store import Store; Store.open(Path(sys.argv[1]))",
         str(path)], capture_output=True, text=True, timeout=30)


async def test_one_process_per_data_directory(tmp_path):
    store = Store.open(tmp_path)
    try:
        probe = open_in_another_process(tmp_path)
        assert probe.returncode != 0
        assert "in use by another mailcoach process" in probe.stderr
    finally:
        await store.aclose()
    again = Store.open(tmp_path)  # released at close
    await again.aclose()


async def test_a_failed_group_is_cut_back_and_the_writer_goes_on(tmp_path):
    store = Store.open(tmp_path)
    await store.commit(plan(store, "kept"))
    trace_size = (tmp_path / "trace").stat().st_size
    (tmp_path / "victim@localdomain.mbox").mkdir()  # appends to it fail: EISDIR
    with pytest.raises(StoreError, match="cannot write"):
        await store.commit(plan(store, "lost", parties=("swe1@localdomain",
                                                         "victim@localdomain")))
    assert (tmp_path / "trace").stat().st_size == trace_size  # the torn append is cut
    assert "victim@localdomain" not in store.parties
    assert store.parties["swe1@localdomain"].memory == [1]
    await store.commit(plan(store, "next"))
    assert store.message_count() == 2
    await store.aclose()
    store = Store.open(tmp_path)
    assert store.message_count() == 2
    assert [store.read(n)[1].subject for n in store.parties["swe1@localdomain"].memory] == [
        "m1", "m3"]
    await store.aclose()
    assert read_box(tmp_path / "swe1@localdomain.mbox") == ["m1", "m3"]


async def test_a_failed_rewrite_is_redone_from_the_index(tmp_path):
    store = Store.open(tmp_path)
    await store.commit_many([plan(store, "a"), plan(store, "b")])
    # The rewrite lands (rename), then the group fails on another party's file.
    (tmp_path / "victim@localdomain.mbox").mkdir()
    doomed = plan(store, "c", parties=("swe1@localdomain", "victim@localdomain"),
                  rewrites={"swe1@localdomain": [1]})
    with pytest.raises(StoreError):
        await store.commit(doomed)
    assert store.parties["swe1@localdomain"].memory == [1, 2]
    await store.commit(plan(store, "d"))
    await store.aclose()
    assert read_box(tmp_path / "swe1@localdomain.mbox") == ["m1", "m2", "m4"]


async def test_party_files_are_named_by_the_encoding_and_stay_inside(tmp_path):
    store = Store.open(tmp_path / "data")
    await store.commit(plan(store, "x", parties=("a/b@localdomain", "/@localdomain")))
    await store.aclose()
    names = sorted(p.name for p in (tmp_path / "data").glob("*.mbox"))
    assert names == ["%2F@localdomain.mbox", "a%2Fb@localdomain.mbox"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    store = Store.open(tmp_path / "data")
    try:
        with pytest.raises(StoreError, match="safe file name"):
            await store.commit(plan(store, "y", parties=("x" * 300 + "@localdomain",)))
        assert "x" * 300 + "@localdomain" not in store.parties
    finally:
        await store.aclose()
