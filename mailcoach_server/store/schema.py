"""The SQLite index beside the mbox files: what mbox cannot hold.

Messages live in ``trace`` (byte offsets here); this index adds each
party's memory order, pending deliveries (the "processed up to" state),
party state (model, expectations), IMAP folders with UIDs and flags, and
costs. WAL mode, one writer. The file is created 0600 before SQLite opens
it; SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.

An index of an older schema is brought up to date at open (:func:`migrate`):
version 2 added the ``tokens`` column, filled from each stored message's
header, and the indexes that make IMAP reads range queries (a folder by
flags, a memory by message) and opening a big store quick (messages by file).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from .spans import SpanReader
from .tokens import HEAD_PROBE, tokens_of

__all__ = ["INDEX_FILES", "SCHEMA_VERSION", "connect", "migrate"]

log = logging.getLogger(__name__)

#: The index and the files SQLite keeps beside it (WAL mode).
INDEX_FILES = ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm")

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY,     -- order of arrival, 1-based
    file        TEXT NOT NULL,           -- 'trace', or 'imap' for mail appended by a client
    offset      INTEGER NOT NULL,        -- start of the quoted message in that file
    length      INTEGER NOT NULL,        -- bytes of the quoted message
    size        INTEGER NOT NULL,        -- bytes of the message itself (LF line ends)
    message_id  TEXT NOT NULL,
    sender      TEXT NOT NULL,
    recipients  TEXT NOT NULL,           -- To and Cc, comma separated
    subject     TEXT NOT NULL,
    in_reply_to TEXT NOT NULL,
    thread      TEXT NOT NULL,           -- Message-ID of the thread's first message
    auto_round  INTEGER NOT NULL,        -- automatic messages since the last human one
    cost        REAL NOT NULL,           -- USD spent to generate it
    received_at REAL NOT NULL,
    tokens      INTEGER NOT NULL DEFAULT 0  -- input + output tokens spent to generate it
);
CREATE INDEX IF NOT EXISTS messages_by_mid ON messages(message_id);
CREATE TABLE IF NOT EXISTS parties (
    address   TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,             -- user, agent, robot
    state     TEXT NOT NULL,             -- JSON: model, expect
    mbox_size INTEGER NOT NULL           -- bytes of <address>.mbox as last committed
);
CREATE TABLE IF NOT EXISTS memory (
    party   TEXT NOT NULL,
    pos     INTEGER NOT NULL,
    message INTEGER NOT NULL,
    PRIMARY KEY (party, pos)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id      INTEGER PRIMARY KEY,
    party   TEXT NOT NULL,
    message INTEGER NOT NULL,
    model   TEXT,                        -- model in force when it arrived (agents)
    done    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(party, done, id);
CREATE TABLE IF NOT EXISTS folders (
    name        TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    uidnext     INTEGER NOT NULL,
    special     TEXT NOT NULL DEFAULT '',
    subscribed  INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS folder_messages (
    folder  TEXT NOT NULL,
    uid     INTEGER NOT NULL,
    message INTEGER NOT NULL,
    flags   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (folder, uid)
) WITHOUT ROWID;  -- rows kept in (folder, uid) order: a UID range is one scan, no lookups
CREATE TABLE IF NOT EXISTS memory_edits (   -- store/memory_log.py: a memory's versions
    message INTEGER NOT NULL,                -- the message whose plan made the edit
    party   TEXT NOT NULL,
    at      REAL NOT NULL,
    who     TEXT NOT NULL,
    how     TEXT NOT NULL,                   -- imap-expunge, imap-add, restore, rewrite, ...
    added   TEXT NOT NULL,                   -- JSON list of message ids
    removed TEXT NOT NULL,
    size    INTEGER NOT NULL,                -- messages in the memory after it
    PRIMARY KEY (party, message)
);
CREATE TABLE IF NOT EXISTS memory_flags (   -- an Agents/<address> folder's flags; no row: seen
    party   TEXT NOT NULL,
    message INTEGER NOT NULL,
    flags   TEXT NOT NULL,
    PRIMARY KEY (party, message)
);
"""

# Made after the tables (and after migrating them): the column they cover must exist.
_INDEXES = """
-- a memory as an IMAP folder (Agents/<address>): UID ranges are message ranges
CREATE INDEX IF NOT EXISTS memory_by_message ON memory(party, message);
-- SELECT and STATUS on a big folder: distinct flag sets, first unseen, counts, Deleted
CREATE INDEX IF NOT EXISTS folder_messages_by_flags ON folder_messages(folder, flags, uid);
-- opening: where each message file's last entry ends, without a scan of every message
CREATE INDEX IF NOT EXISTS messages_by_file ON messages(file, id);
-- "already in Sent?" for a message a client APPENDs or COPYs there: a lookup, not a scan
CREATE INDEX IF NOT EXISTS folder_messages_by_message ON folder_messages(message);
"""


def connect(path: Path) -> sqlite3.Connection:
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # private from the start
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at each commit, so "accepted" survives power loss too.
    conn.execute("PRAGMA synchronous=FULL")
    # The store checkpoints in a thread of its own (store/checkpoints.py); SQLite's own,
    # inside a commit, is only the safety net (40 MB of WAL).
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    conn.executescript(_SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    return conn


def migrate(conn: sqlite3.Connection, data_dir: Path) -> None:
    """Bring an index written by an older version to :data:`SCHEMA_VERSION`, in place.

    Version 1 had no ``tokens`` column: it is added and filled from the header
    of every message of the trace (the only file model replies are in), in one
    transaction, so a crash during it leaves the old schema to migrate again.
    Versions 1 and 2 kept ``folder_messages`` in a rowid table: it is copied into
    its ``WITHOUT ROWID`` form, also in one transaction (about 3 s a million rows).
    Version 3 had no index of folder rows by message: made at open (0.3 s a
    million rows), as every index of ``_INDEXES`` is when missing.
    """
    columns = {name for _, name, *_ in conn.execute("PRAGMA table_info(messages)")}
    if "tokens" not in columns:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("ALTER TABLE messages ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0")
            filled = _fill_tokens(conn, data_dir)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("index migrated: tokens of %d stored replies filled in", filled)
    if _has_rowid(conn, "folder_messages"):
        _rebuild_without_rowid(conn, "folder_messages")
    conn.executescript(_INDEXES)
    conn.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))


def _has_rowid(conn: sqlite3.Connection, table: str) -> bool:
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?",
                          (table,)).fetchone()
    return "WITHOUT ROWID" not in sql.upper()


def _rebuild_without_rowid(conn: sqlite3.Connection, table: str) -> None:
    """``table`` copied into the form ``_SCHEMA`` gives it now; its indexes are made
    again after (``_INDEXES``)."""
    start = _SCHEMA.index(f"CREATE TABLE IF NOT EXISTS {table} (")
    definition = _SCHEMA[start : _SCHEMA.index(";", start)]
    new = f"{table}_rebuilt"
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"DROP TABLE IF EXISTS {new}")
        conn.execute(definition.replace(f"IF NOT EXISTS {table} (", f"{new} ("))
        conn.execute(f"INSERT INTO {new} SELECT * FROM {table}")
        rows = conn.execute(f"SELECT count(*) FROM {new}").fetchone()[0]
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {new} RENAME TO {table}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("index migrated: %s kept without rowids (%d rows)", table, rows)


def _fill_tokens(conn: sqlite3.Connection, data_dir: Path) -> int:
    """Inside ``migrate``'s transaction: the ``tokens`` of every trace message."""
    filled = 0
    with SpanReader(data_dir) as spans:
        rows = conn.execute("SELECT id, offset, length FROM messages WHERE file='trace'")
        for number, offset, length in rows.fetchall():
            head = spans.read("trace", offset, min(length, HEAD_PROBE))
            if b"\n\n" not in head and length > HEAD_PROBE:  # a header longer than the probe
                head = spans.read("trace", offset, length)
            tokens = tokens_of(head)
            if tokens:
                conn.execute("UPDATE messages SET tokens=? WHERE id=?", (tokens, number))
                filled += 1
    return filled
