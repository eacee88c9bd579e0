"""An index of schema 2 (``folder_messages`` a rowid table) is migrated at open, losing nothing."""

from __future__ import annotations

import sqlite3
import time

from mailcoach_server.store.schema import SCHEMA_VERSION
from mailcoach_server.store.store import MessageMeta, Store, WritePlan

ROWID_FOLDER_MESSAGES = """CREATE TABLE folder_messages (
    folder  TEXT NOT NULL,
    uid     INTEGER NOT NULL,
    message INTEGER NOT NULL,
    flags   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (folder, uid)
)"""


def filed(store: Store, folders: list[str], flags: str = "") -> WritePlan:
    number = store.allocate_message_id()
    raw = (f"From: user@localdomain\nTo: user@localdomain\nSubject: m{number}\n"
           f"Message-ID: <m{number}@t>\n\nbody\n").encode()
    meta = MessageMeta(number, f"<m{number}@t>", "user@localdomain", ("user@localdomain",),
                       f"m{number}", "", f"<m{number}@t>", 0, 0.0, time.time())
    return WritePlan(raw=raw, meta=meta, folders=folders,
                     folder_flags=dict.fromkeys(folders, flags))


def picture(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT folder, uid, message, flags FROM folder_messages "
                        "ORDER BY folder, uid").fetchall()


def make_schema_2(path) -> list[tuple]:
    """folder_messages back in its rowid form, as version 2 wrote it; its rows."""
    conn = sqlite3.connect(path)
    try:
        rows = picture(conn)
        conn.execute("DROP TABLE folder_messages")  # its index goes with it
        conn.execute(ROWID_FOLDER_MESSAGES)
        conn.executemany("INSERT INTO folder_messages VALUES (?,?,?,?)", rows)
        conn.execute("UPDATE meta SET value='2' WHERE key='schema'")
        conn.commit()
        return rows
    finally:
        conn.close()


async def test_folder_rows_move_to_a_table_without_rowids_at_open(tmp_path):
    store = Store.open(tmp_path)
    try:
        store.ensure_folder("INBOX")
        store.ensure_folder("Keep")
        await store.commit_many([filed(store, ["INBOX"]), filed(store, ["INBOX", "Keep"], "\\Seen"),
                                 filed(store, ["Keep"], "$Label \\Flagged")])
    finally:
        await store.aclose()
    index = tmp_path / "index.sqlite"
    rows = make_schema_2(index)
    assert len(rows) == 4
    store = Store.open(tmp_path)
    try:
        assert [r[:4] for r in store.folders.folder_rows("Keep")] == [
            (1, 2, "\\Seen", "trace"), (2, 3, "$Label \\Flagged", "trace")]
        await store.commit(filed(store, ["Keep"]))  # UIDs go on where they were
        assert [r[0] for r in store.folders.folder_rows("Keep")] == [1, 2, 3]
    finally:
        await store.aclose()
    conn = sqlite3.connect(index)
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name='folder_messages'"
                              ).fetchone()
        assert "WITHOUT ROWID" in sql
        assert picture(conn) == sorted([*rows, ("Keep", 3, 4, "")])
        assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (
            str(SCHEMA_VERSION),)
        indexes = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='folder_messages'")}
        assert "folder_messages_by_flags" in indexes
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


async def test_an_index_of_schema_3_gets_folder_rows_by_message_at_open(tmp_path):
    store = Store.open(tmp_path)
    try:
        store.ensure_folder("Sent")
        for _ in range(3):
            await store.commit(filed(store, ["Sent"]))
    finally:
        await store.aclose()
    index = tmp_path / "index.sqlite"
    with sqlite3.connect(index) as conn:
        conn.execute("DROP INDEX folder_messages_by_message")
        conn.execute("UPDATE meta SET value='3' WHERE key='schema'")
    conn.close()
    store = Store.open(tmp_path)
    try:
        assert store.folders.uids_of_message_ids("Sent", ["<m2@t>", "<none@t>"]) == {"<m2@t>": 2}
        with sqlite3.connect(index) as conn:
            plan = " ".join(str(row) for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT m.message_id, MIN(fm.uid) FROM messages m "
                "CROSS JOIN folder_messages fm ON fm.message = m.id AND fm.folder = 'Sent' "
                "WHERE m.message_id IN ('<m2@t>') GROUP BY m.message_id"))
            assert "folder_messages_by_message" in plan, plan  # a lookup, not a scan
            assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (
                str(SCHEMA_VERSION),)
        conn.close()
    finally:
        await store.aclose()
