"""The index's ``tokens`` column: filled at commit, migrated into an index of the old schema."""

from __future__ import annotations

import sqlite3
import time

from mailcoach_server.runtime.budgets import TokenTally
from mailcoach_server.store.schema import SCHEMA_VERSION
from mailcoach_server.store.store import MessageMeta, Store, WritePlan

AGENT_STAMP = "Received: from localhost by localdomain (mailcoach) with local (agent);\n\tdate\n"


def reply(store: Store, sender: str, tokens_in: int, tokens_out: int, *,
          stamp: str = AGENT_STAMP, file: str = "trace", body: str = "body") -> WritePlan:
    number = store.allocate_message_id()
    raw = (f"{stamp}From: {sender}\nTo: user@localdomain\nSubject: r{number}\n"
           f"Message-ID: <r{number}@t>\nM-Tokens-Input: {tokens_in}\n"
           f"M-Tokens-Output: {tokens_out}\n\n{body}\n").encode()
    meta = MessageMeta(number, f"<r{number}@t>", sender, ("user@localdomain",), f"r{number}",
                       "", f"<r{number}@t>", 0, 0.0, time.time())
    return WritePlan(raw=raw, meta=meta, file=file)


async def fill(store: Store) -> None:
    await store.commit_many([
        reply(store, "swe1@localdomain", 100, 20),
        reply(store, "swe2@localdomain", 7, 3),
        reply(store, "swe1@localdomain", 1, 2),
        # not written by a model of ours: a user's mail, a loaded memory, a cloned copy
        reply(store, "user@localdomain", 500, 500,
              stamp="Received: from x by localdomain (mailcoach) with ESMTP;\n"),
        reply(store, "swe1@localdomain", 900, 900,
              stamp="Received: from x by localdomain (mailcoach) with local (memory);\n"),
        reply(store, "swe1@localdomain", 800, 800, file="copies"),
    ])


def tokens_column(data_dir) -> list[tuple[int, int]]:
    conn = sqlite3.connect(data_dir / "index.sqlite")
    try:
        return conn.execute("SELECT id, tokens FROM messages ORDER BY id").fetchall()
    finally:
        conn.close()


def make_old_schema(data_dir) -> None:
    """Turn an index back into version 1: no tokens column, no range indexes."""
    conn = sqlite3.connect(data_dir / "index.sqlite")
    try:
        conn.execute("DROP INDEX memory_by_message")
        conn.execute("DROP INDEX folder_messages_by_flags")
        conn.execute("DROP INDEX messages_by_file")
        conn.execute("ALTER TABLE messages DROP COLUMN tokens")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema'")
        conn.commit()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(messages)")]
        assert "tokens" not in columns
    finally:
        conn.close()


async def test_tokens_are_recorded_at_commit(tmp_path):
    store = Store.open(tmp_path)
    try:
        await fill(store)
        tally = TokenTally(store)
        assert tally.spent("swe1@localdomain") == 123
        assert tally.spent("swe2@localdomain") == 10
        assert tally.spent() == 133
        await store.commit(reply(store, "swe2@localdomain", 5, 5))
        assert tally.spent("swe2@localdomain") == 20  # only the new message is summed
        assert tally.spent("user@localdomain") == 0
    finally:
        await store.aclose()
    assert tokens_column(tmp_path) == [(1, 120), (2, 10), (3, 3), (4, 0), (5, 0), (6, 0),
                                       (7, 10)]


async def test_an_index_of_the_old_schema_gets_its_tokens_at_open(tmp_path):
    store = Store.open(tmp_path)
    await fill(store)
    long_header = "X-Long: " + "x" * 70_000 + "\n"  # past the migration's first read
    await store.commit(reply(store, "swe2@localdomain", 4, 4, stamp=AGENT_STAMP + long_header))
    await store.aclose()
    make_old_schema(tmp_path)

    store = Store.open(tmp_path)
    try:
        assert tokens_column(tmp_path) == [(1, 120), (2, 10), (3, 3), (4, 0), (5, 0), (6, 0),
                                           (7, 8)]
        assert TokenTally(store).spent() == 141
        conn = sqlite3.connect(tmp_path / "index.sqlite")
        try:
            assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == (
                str(SCHEMA_VERSION),)
            names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master "
                                                "WHERE type='index'")}
        finally:
            conn.close()
        assert {"memory_by_message", "folder_messages_by_flags", "messages_by_file"} <= names
        # and the migrated index takes new commits with their tokens
        await store.commit(reply(store, "swe1@localdomain", 2, 2))
        assert TokenTally(store).spent("swe1@localdomain") == 127
    finally:
        await store.aclose()
