"""The one group whose index may be ahead of its bytes: its undo record, checked at open.

The writer commits a group's index while another thread fsyncs the message
files the group appended to; the group is acknowledged only once both are
durable. In between, a power loss can leave index rows that name bytes that
never reached the disk (a process crash cannot: the bytes were written,
only not yet synced). So the group's own transaction also stores, under one
key of the ``meta`` table, what takes it back: where its bytes are in each
message file (start, end, CRC-32), its message ids, the UIDs it got, the
deliveries it marked done and its parties as they were before it. Such a
group only appends to memories (rewrites keep the serial order, below), so
taking its rows back leaves every memory as it was.

At open (``recover``), a record whose bytes are all in the files is just
dropped; otherwise the group is undone (it was never acknowledged) and the
files' tails are then cut as any unacknowledged tail is. A file shorter than
the group's start lost acknowledged mail: that is left to the store's
"shorter than the index says" error. The writer clears the record once the
group is durable and nothing waits (``clear``, not fsynced: the next commit
syncs it, and a stale record of a durable group only repeats a check that
passes). Groups that rewrite a memory are not recorded: they keep the
serial order (bytes synced before the index commit).

Not here: the write path (``store``), checking a whole directory (``check``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KEY", "GroupRecord", "clear", "crc_of", "parties_before", "recover", "save", "undo"]

log = logging.getLogger(__name__)

#: the ``meta`` key of the record
KEY = "unsynced_group"


@dataclass(slots=True)
class GroupRecord:
    """What one group changed, enough to take it back."""

    #: message file -> (start, end, CRC-32 of the bytes in between)
    files: dict[str, tuple[int, int, int]]
    #: the group's message ids
    ids: list[int]
    #: parties whose memory got the group's messages appended
    memories: list[str] = field(default_factory=list)
    #: parties the group gave deliveries to
    deliveries: list[str] = field(default_factory=list)
    #: folder -> the UIDs the group's messages got there
    uids: dict[str, list[int]] = field(default_factory=dict)
    #: deliveries the group marked done
    completes: list[int] = field(default_factory=list)
    #: party -> (kind, state JSON) before the group; None: the group created it
    parties: dict[str, tuple[str, str] | None] = field(default_factory=dict)
    #: party -> the size of its file the index had before the group
    sizes: dict[str, int] = field(default_factory=dict)


def crc_of(data: bytes) -> int:
    return zlib.crc32(data)


def parties_before(db: sqlite3.Connection, addresses: Iterable[str]) -> dict[
        str, tuple[str, str] | None]:
    """Inside the group's transaction, before it changes them: the parties' rows."""
    found: dict[str, tuple[str, str] | None] = {}
    for address in addresses:
        row = db.execute("SELECT kind, state FROM parties WHERE address=?",
                         (address,)).fetchone()
        found[address] = None if row is None else (row[0], row[1])
    return found


def save(db: sqlite3.Connection, record: GroupRecord) -> None:
    """Inside the group's transaction: the record, replacing the last one."""
    value = json.dumps({
        "files": record.files, "ids": record.ids, "memories": record.memories,
        "deliveries": record.deliveries, "uids": record.uids, "completes": record.completes,
        "parties": record.parties, "sizes": record.sizes,
    })
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (KEY, value))


def clear(db: sqlite3.Connection) -> None:
    """The recorded group is durable: drop the record (a transaction of its own, or the
    caller's)."""
    db.execute("DELETE FROM meta WHERE key=?", (KEY,))


def undo(db: sqlite3.Connection, record: GroupRecord) -> None:
    """Inside a transaction: take the group's rows back out of the index.

    UIDNEXT stays where the group moved it: UIDs are never reused.
    """
    ids = json.dumps(record.ids)
    db.execute("DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))", (ids,))
    db.executemany("DELETE FROM memory WHERE party=? AND message IN "
                   "(SELECT value FROM json_each(?))",
                   [(party, ids) for party in record.memories])
    db.executemany("DELETE FROM deliveries WHERE party=? AND message IN "
                   "(SELECT value FROM json_each(?))",
                   [(party, ids) for party in record.deliveries])
    db.executemany("UPDATE deliveries SET done=0 WHERE id=?",
                   [(number,) for number in record.completes])
    for folder, uids in record.uids.items():
        db.executemany("DELETE FROM folder_messages WHERE folder=? AND uid=?",
                       [(folder, uid) for uid in uids])
    for address, before in record.parties.items():
        if before is None:
            db.execute("DELETE FROM parties WHERE address=?", (address,))
        else:
            db.execute("UPDATE parties SET kind=?, state=? WHERE address=?",
                       (*before, address))
    db.executemany("UPDATE parties SET mbox_size=? WHERE address=?",
                   [(size, address) for address, size in record.sizes.items()])
    clear(db)


def recover(db: sqlite3.Connection, data_dir: Path) -> GroupRecord | None:
    """At open: undo the recorded group if its bytes are not all on disk.

    Returns the record of the group dropped, if one was.
    """
    row = db.execute("SELECT value FROM meta WHERE key=?", (KEY,)).fetchone()
    if row is None:
        return None
    record = _parse(row[0])
    missing = [name for name, span in record.files.items()
               if not _bytes_present(data_dir / name, *span)]
    db.execute("BEGIN IMMEDIATE")
    try:
        if missing:
            undo(db, record)
        else:
            clear(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if not missing:
        return None
    log.warning("%s: the last group's bytes did not reach the disk (power loss before "
                "its fsync); its %d unacknowledged message(s) are dropped from the index",
                ", ".join(missing), len(record.ids))
    return record


def _bytes_present(path: Path, start: int, end: int, crc: int) -> bool:
    """The group's bytes are there, unchanged; a file shorter than ``start`` counts as
    present (acknowledged mail is missing: the store's check at open says so)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < start:
                return True
            f.seek(start)
            return size >= end and crc_of(f.read(end - start)) == crc
    except FileNotFoundError:
        return start > 0


def _parse(text: str) -> GroupRecord:
    data = json.loads(text)
    return GroupRecord(
        files={name: (int(a), int(b), int(c)) for name, (a, b, c) in data["files"].items()},
        ids=[int(n) for n in data["ids"]],
        memories=list(data["memories"]), deliveries=list(data["deliveries"]),
        uids={folder: [int(u) for u in uids] for folder, uids in data["uids"].items()},
        completes=[int(n) for n in data["completes"]],
        parties={a: None if p is None else (p[0], p[1]) for a, p in data["parties"].items()},
        sizes={a: int(s) for a, s in data["sizes"].items()},
    )
