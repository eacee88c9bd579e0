"""The store's named operations: folders, flags, UIDs, deliveries and costs.

Each operation is checked on a real store in a temporary directory, and the
writes are checked again from a second SQLite connection (what is on disk),
or after reopening the store.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from mailcoach_server.errors import StoreError
from mailcoach_server.store.store import MessageMeta, Store, WritePlan

AGENT = "swe1@localdomain"


@pytest.fixture
async def store(tmp_path):
    opened = Store.open(tmp_path)
    yield opened
    await opened.aclose()


def on_disk(store: Store, sql: str, args=()) -> list[tuple]:
    """What another connection sees: only committed transactions."""
    conn = sqlite3.connect(store.data_dir / "index.sqlite")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def file_message(store: Store, folders=("INBOX",), *, flags="", memory=(),
                       file="trace", sender="user@localdomain", cost=0.0) -> int:
    number = store.allocate_message_id()
    mid = f"<m{number}@t>"
    raw = f"From: {sender}\nSubject: m{number}\nMessage-ID: {mid}\n\nbody {number}\n".encode()
    meta = MessageMeta(number, mid, sender, (AGENT,), f"m{number}", "", mid, 0, cost,
                       time.time())
    plan = WritePlan(raw=raw, meta=meta, file=file, folders=list(folders),
                     folder_flags={f: flags for f in folders}, memory_appends=list(memory))
    for party in memory:
        if party not in store.parties:
            plan.party_states[party] = ("agent", {})
    for folder in folders:
        store.ensure_folder(folder)
    stored = await store.commit(plan)
    return stored.meta.id


async def test_ensure_lists_and_gets_a_folder_and_it_survives_reopen(tmp_path):
    store = Store.open(tmp_path)
    assert store.folders.get("INBOX") is None and "INBOX" not in store.folders
    store.folders.ensure("INBOX", "\\Inbox")
    record = store.folders.get("INBOX")
    assert record is not None and record.uidnext == 1 and record.special == "\\Inbox"
    assert record.subscribed and store.folders.uidvalidity("INBOX") == record.uidvalidity
    assert [f.name for f in store.folders.list_folders()] == ["INBOX"]
    await store.aclose()
    store = Store.open(tmp_path)
    assert store.folders.uidvalidity("INBOX") == record.uidvalidity
    await store.aclose()


async def test_create_folder_goes_above_a_retired_uidvalidity(store):
    first = await store.folders.create_folder("Work")
    assert on_disk(store, "SELECT uidvalidity FROM folders WHERE name='Work'") == [(first,)]
    again = await store.folders.create_folder("Work", above=first)
    assert again == first + 1 == store.folders.uidvalidity("Work")
    assert on_disk(store, "SELECT uidvalidity FROM folders WHERE name='Work'") == [(again,)]


async def test_children_and_count_outside(store):
    for name in ("a", "a/b", "a/b/c", "ab", "Agents/x@localdomain"):
        await store.folders.create_folder(name)
    assert store.folders.children("a") == ["a/b", "a/b/c"]
    assert store.folders.children("ab") == []
    assert store.folders.count_outside("Agents") == 4


async def test_folder_rows_counts_and_uids(store):
    first = await file_message(store)
    second = await file_message(store, flags="\\Seen")
    rows = store.folders.folder_rows("INBOX")
    assert [(uid, message, flags) for uid, message, flags, *_ in rows] == [
        (1, first, ""), (2, second, "\\Seen")]
    _, _, _, file, offset, length, _ = rows[0]
    raw, _ = store.read(first)
    data = (store.data_dir / file).read_bytes()
    assert data[offset : offset + length] == raw  # the row says where the bytes are
    assert [r[0] for r in store.folders.folder_rows("INBOX", after_uid=1)] == [2]
    assert store.folders.counts("INBOX", "\\Seen") == (2, 1)
    assert store.folders.count_above("INBOX", 1) == 1
    assert store.folders.max_uid("INBOX") == 2
    assert store.folders.max_uid("Nowhere") == 0


async def test_memory_rows_top_and_count(store):
    await file_message(store, folders=())
    kept = await file_message(store, folders=(), memory=(AGENT,))
    later = await file_message(store, folders=(), memory=(AGENT,))
    assert [r[0] for r in store.folders.memory_rows(AGENT)] == [kept, later]
    assert [r[0] for r in store.folders.memory_rows(AGENT, after=kept)] == [later]
    assert store.folders.memory_top(AGENT) == later
    assert store.folders.memory_count(AGENT) == 2
    assert store.folders.memory_top("nobody@localdomain") == 0


async def test_write_flags_and_read_them_back(store):
    await file_message(store)
    await file_message(store)
    await store.folders.write_flags("INBOX", {1: "\\Seen \\Deleted", 2: "\\Flagged", 9: "x"})
    assert store.folders.flags("INBOX", [1, 2, 9]) == {1: "\\Seen \\Deleted", 2: "\\Flagged"}
    assert store.folders.uids_flagged("INBOX", "\\Deleted") == [1]
    assert on_disk(store, "SELECT uid FROM folder_messages ORDER BY uid") == [(1,), (2,)]


async def test_expunge_removes_only_the_given_uids(store):
    for _ in range(3):
        await file_message(store)
    await store.folders.expunge("INBOX", [1, 3])
    assert [r[0] for r in store.folders.folder_rows("INBOX")] == [2]
    assert on_disk(store, "SELECT uid FROM folder_messages") == [(2,)]


async def test_uids_of_message_ids_and_appended_uids(store):
    sent = await file_message(store, folders=("Sent",))
    copy = await file_message(store, folders=("Sent",), file="imap")
    ids = store.message_ids([sent, copy, 99])
    assert ids == {sent: f"<m{sent}@t>", copy: f"<m{copy}@t>"}
    assert store.folders.uids_of_message_ids("Sent", [ids[sent], "<none@t>"]) == {ids[sent]: 1}
    assert store.folders.appended_uids("Sent", [ids[sent], ids[copy]]) == [2]


async def test_subscribe(store):
    await store.folders.create_folder("Work")
    await store.folders.subscribe("Work", False)
    assert store.folders.get("Work").subscribed is False
    assert on_disk(store, "SELECT subscribed FROM folders WHERE name='Work'") == [(0,)]
    await store.folders.subscribe("Work", True)
    assert store.folders.get("Work").subscribed is True


async def test_delete_folder_drops_it_and_its_places(store):
    await file_message(store, folders=("Work",))
    validity = store.folders.uidvalidity("Work")
    assert await store.folders.delete_folder("Work") == validity
    assert store.folders.get("Work") is None and "Work" not in store.folders
    assert on_disk(store, "SELECT COUNT(*) FROM folder_messages WHERE folder='Work'") == [(0,)]
    store.folders.ensure("Work")  # made again: UIDs start over, not from the old cache
    await file_message(store, folders=("Work",))
    assert [r[0] for r in store.folders.folder_rows("Work")] == [1]


async def test_rename_folder_moves_the_tree_and_uids_go_on(tmp_path):
    store = Store.open(tmp_path)
    await file_message(store, folders=("a",))
    await file_message(store, folders=("a/b",))
    validity = store.folders.uidvalidity("a")
    moved = await store.folders.rename_folder("a", "z")
    assert [(old, new) for old, new, _ in moved] == [("a", "z"), ("a/b", "z/b")]
    assert moved[0][2] == validity == store.folders.uidvalidity("z")
    assert "a" not in store.folders and store.folders.get("a") is None
    await file_message(store, folders=("z",))  # the writer's UIDNEXT follows the rename
    assert [r[0] for r in store.folders.folder_rows("z")] == [1, 2]
    store.folders.ensure("a")
    await file_message(store, folders=("a",))
    assert [r[0] for r in store.folders.folder_rows("a")] == [1]
    await store.aclose()
    store = Store.open(tmp_path)
    assert sorted(f.name for f in store.folders.list_folders()) == ["a", "z", "z/b"]
    assert store.folders.uidvalidity("z") == validity
    await store.aclose()


async def test_rename_of_a_tree_is_one_transaction(store):
    await file_message(store, folders=("a",))
    await file_message(store, folders=("a/b",))
    await file_message(store, folders=("a/c",))
    before = on_disk(store, "SELECT folder, uid, message FROM folder_messages ORDER BY folder")
    # The index itself refuses the last folder's new name: the failure comes after
    # the first folders (and all of their messages but the last's) were moved.
    conn = sqlite3.connect(store.data_dir / "index.sqlite")
    conn.execute("CREATE TRIGGER refuse BEFORE UPDATE OF name ON folders "
                 "WHEN NEW.name = 'z/c' BEGIN SELECT RAISE(ABORT, 'refused here'); END")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="refused here"):
        await store.folders.rename_folder("a", "z")
    assert sorted(n for (n,) in on_disk(store, "SELECT name FROM folders")) == [
        "a", "a/b", "a/c"]
    assert on_disk(store, "SELECT folder, uid, message FROM folder_messages "
                          "ORDER BY folder") == before
    assert "a/b" in store.folders and "z" not in store.folders  # memory agrees with disk
    await file_message(store, folders=("a",))  # and the writer goes on with the old names
    assert [r[0] for r in store.folders.folder_rows("a")] == [1, 2]


async def test_move_messages_takes_the_uidnext_along(store):
    await file_message(store)
    await file_message(store)
    await store.folders.create_folder("Old")
    await store.folders.move_messages("INBOX", "Old")
    assert [r[0] for r in store.folders.folder_rows("Old")] == [1, 2]
    assert store.folders.folder_rows("INBOX") == []
    assert store.folders.get("Old").uidnext == 3
    await file_message(store, folders=("Old",))  # no UID handed out twice
    assert [r[0] for r in store.folders.folder_rows("Old")] == [1, 2, 3]


async def test_raise_uidnext_never_goes_back(store):
    await store.folders.create_folder("Agents/x")
    await store.folders.raise_uidnext("Agents/x", 7)
    await store.folders.raise_uidnext("Agents/x", 3)
    assert store.folders.get("Agents/x").uidnext == 7
    assert on_disk(store, "SELECT uidnext FROM folders WHERE name='Agents/x'") == [(7,)]


async def test_deliveries_marked_done(store):
    number = store.allocate_message_id()
    meta = MessageMeta(number, "<d@t>", "user@localdomain", (AGENT,), "d", "", "<d@t>", 0, 0.0,
                       time.time())
    await store.commit(WritePlan(raw=b"Subject: d\n\nx\n", meta=meta,
                                 party_states={AGENT: ("agent", {})},
                                 deliveries=[(AGENT, None)]))
    (delivery,) = store.pending_deliveries(AGENT)
    assert store.pending_count() == 1
    await store.mark_delivery_done(delivery.id)
    assert store.pending_count() == 0 and store.pending_deliveries(AGENT) == []
    assert on_disk(store, "SELECT done FROM deliveries") == [(1,)]


async def test_senders_after_reads_one_file_in_order(store):
    first = await file_message(store, folders=(), sender="a@localdomain")
    await file_message(store, folders=(), sender="b@localdomain", file="imap")
    third = await file_message(store, folders=(), sender="c@localdomain")
    assert store.senders_after(0) == [(first, "a@localdomain"), (third, "c@localdomain")]
    assert store.senders_after(first) == [(third, "c@localdomain")]


def test_the_store_takes_no_sql_from_outside():
    assert not hasattr(Store, "query") and not hasattr(Store, "execute")
