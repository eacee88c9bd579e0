"""Is a data directory consistent? The files and the index, checked against each other.

What a restart after a crash relies on, read back from a data directory that
no process has open (``check(data_dir)``), without changing anything:

- SQLite's own ``quick_check`` of the index;
- each message file (trace, imap, copies) holds exactly the entries the index
  lists, back to back: a From_ line, the message where the index says, the
  blank separator line, and nothing after the last one;
- each party's ``<address>.mbox`` is as long as the index says;
- memories and folders name only indexed messages, and no folder holds a
  UID at or above its UIDNEXT (UIDs are never reused).

Reads the message files in one pass each (``mmap``), so a million messages
take seconds. Returns the problems found, in words; an empty list is a
consistent directory.

Not here: repairing anything (``Store.open`` cuts unacknowledged tails).
"""

from __future__ import annotations

import mmap
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from ..errors import StoreError
from .files import party_path
from .spans import MESSAGE_FILES

__all__ = ["check"]

_MAX_REPORTED = 20  # problems of one kind listed before "and N more"


def check(data_dir: Path) -> list[str]:
    """The inconsistencies between ``data_dir``'s files and its index (none: ``[]``)."""
    path = data_dir / "index.sqlite"
    if not path.exists():
        return [f"{path} does not exist"]
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        problems = [f"index: {row[0]}" for row in conn.execute("PRAGMA quick_check")
                    if row[0] != "ok"]
        for name in MESSAGE_FILES:
            problems += _check_message_file(conn, data_dir, name)
        problems += _check_party_files(conn, data_dir)
        problems += _check_references(conn)
    finally:
        conn.close()
    return problems


def _limited(kind: str, found: list[str]) -> list[str]:
    if len(found) <= _MAX_REPORTED:
        return found
    return [*found[:_MAX_REPORTED], f"{kind}: and {len(found) - _MAX_REPORTED} more"]


def _check_message_file(conn: sqlite3.Connection, data_dir: Path, name: str) -> list[str]:
    rows = conn.execute("SELECT id, offset, length FROM messages WHERE file = ? ORDER BY offset",
                        (name,))
    path = data_dir / name
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return _entries(name, b"", rows, size)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _entries(name, data, rows, size)


def _entries(name: str, data: bytes | mmap.mmap, rows: Iterable[tuple[int, int, int]],
             size: int) -> list[str]:
    """The entries of one message file, in file order, against its bytes."""
    found: list[str] = []
    end = 0  # where the next entry's From_ line must start
    for number, offset, length in rows:
        if (offset > size or data[end : end + 5] != b"From "
                or data.find(b"\n", end, offset) != offset - 1):
            found.append(f"{name}: message {number} does not start after a From_ line "
                         f"at byte {end}")
        elif data[offset + length : offset + length + 1] != b"\n":
            found.append(f"{name}: message {number} is not followed by a blank line")
        end = offset + length + 1
    if size != end:
        found.append(f"{name}: {size} bytes, the index accounts for {end}")
    return _limited(name, found)


def _check_party_files(conn: sqlite3.Connection, data_dir: Path) -> list[str]:
    found = []
    for address, expected in conn.execute("SELECT address, mbox_size FROM parties"):
        try:
            path = party_path(data_dir, address)
        except StoreError as exc:
            found.append(str(exc))
            continue
        actual = path.stat().st_size if path.exists() else 0
        if actual != expected:
            found.append(f"{path.name}: {actual} bytes, the index says {expected}")
    return _limited("party files", found)


def _check_references(conn: sqlite3.Connection) -> list[str]:
    found = []
    (orphans,) = conn.execute("SELECT COUNT(*) FROM memory WHERE message NOT IN "
                              "(SELECT id FROM messages)").fetchone()
    if orphans:
        found.append(f"memory: {orphans} entries name no indexed message")
    (orphans,) = conn.execute("SELECT COUNT(*) FROM folder_messages WHERE message NOT IN "
                              "(SELECT id FROM messages)").fetchone()
    if orphans:
        found.append(f"folders: {orphans} messages name no indexed message")
    for folder, top, uidnext in conn.execute(
            "SELECT f.name, MAX(fm.uid), f.uidnext FROM folders f "
            "JOIN folder_messages fm ON fm.folder = f.name GROUP BY f.name"):
        if top >= uidnext:
            found.append(f"folder {folder!r}: UID {top} is not below UIDNEXT {uidnext}")
    return found
