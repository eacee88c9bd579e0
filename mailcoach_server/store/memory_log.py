"""Memory edits in the index: every change to a memory other than a plain append, and the
flags a mail client keeps on the messages of an ``Agents/<address>`` folder.

A memory is a party's list of message ids, ascending (a message joins the
memories it concerns when it is stored, and ids are handed out in commit
order; rewrites only remove, and a restore puts old ids back in their
place). An edit is recorded as what it added and what it removed, keyed by
the message whose plan made it (the X-Rollback mail, a trim note, the
record of an edit from a mail client), with who made it, when and how. So
the memory as it was just after edit (or message) ``t`` is the current one
with every later edit undone (in reverse: take out what it added, put back
what it removed), keeping the ids up to ``t``: a message appended later has
a higher id.

The flags of a memory's messages live in ``memory_flags``; a message
without a row is ``\\Seen`` (a memory is an archive, not new mail). Rows of
messages that leave the memory go with them.

Not here: when an edit happens or what its record says (``runtime.memory_edits``),
IMAP (``imap.folders``). Called by the store (writes inside the writer's
transaction, reads on its read connection), and by ``mailcoach memory``
on a read-only connection of its own, beside a running server.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError

__all__ = [
    "DEFAULT_FLAGS", "MemoryChange", "MemoryEdit", "agents", "apply_flag_change", "change_flags",
    "changed_between", "current", "deleted", "described", "edits_of", "flag_rows", "memory_at",
    "read_only", "record",
]

#: The flags of a memory message nobody has flagged.
DEFAULT_FLAGS = "\\Seen"


@dataclass(frozen=True, slots=True)
class MemoryChange:
    """What one plan did to one memory, beyond appending its own message."""

    added: tuple[int, ...]
    removed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MemoryEdit:
    """One recorded edit of a memory: a version of it."""

    #: the message whose plan made the edit; the memory's version number
    message: int
    party: str
    at: float
    who: str
    how: str
    added: tuple[int, ...]
    removed: tuple[int, ...]
    #: messages in the memory just after it
    size: int


def changed_between(old: Sequence[int], new: Sequence[int]) -> MemoryChange:
    before, after = set(old), set(new)
    return MemoryChange(tuple(sorted(after - before)), tuple(sorted(before - after)))


# -- writes (the writer's transaction) ---------------------------------------------------------


def record(db: sqlite3.Connection, message: int, at: float, who: str, how: str,
           changes: dict[str, MemoryChange], sizes: dict[str, int]) -> None:
    """Record each party's change; forget the flags of what left a memory."""
    for party, change in changes.items():
        if not change.added and not change.removed:
            continue
        db.execute("INSERT OR REPLACE INTO memory_edits VALUES (?,?,?,?,?,?,?,?)",
                   (message, party, at, who, how, json.dumps(change.added),
                    json.dumps(change.removed), sizes.get(party, 0)))
        if change.removed:
            db.execute("DELETE FROM memory_flags WHERE party = ? "
                       "AND message IN (SELECT value FROM json_each(?))",
                       (party, json.dumps(change.removed)))


def apply_flag_change(base: tuple[str, ...], mode: str, wanted: Sequence[str]) -> tuple[str, ...]:
    """``mode`` ("add", "remove", "replace") ``wanted`` on ``base``; case-insensitive."""
    if mode == "replace":
        return tuple(wanted)
    lowered = {f.lower() for f in wanted}
    if mode == "remove":
        return tuple(f for f in base if f.lower() not in lowered)
    have = {f.lower() for f in base}
    return base + tuple(f for f in wanted if f.lower() not in have)


def change_flags(db: sqlite3.Connection, party: str, uids: Sequence[int], mode: str,
                 wanted: Sequence[str]) -> tuple[dict[int, tuple[str, ...]],
                                                  dict[int, tuple[str, ...]]]:
    """One transaction: the flag change on those of ``uids`` in the memory.

    Returns (flags after, for every one found; the subset that changed).
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(
            "SELECT DISTINCT mem.message, COALESCE(f.flags, ?) FROM memory mem "
            "LEFT JOIN memory_flags f ON f.party = mem.party AND f.message = mem.message "
            "WHERE mem.party = ? AND mem.message IN (SELECT value FROM json_each(?))",
            (DEFAULT_FLAGS, party, json.dumps(list(uids)))).fetchall()
        after: dict[int, tuple[str, ...]] = {}
        changed: dict[int, tuple[str, ...]] = {}
        for uid, text in rows:
            base = tuple(text.split())
            new = after[uid] = apply_flag_change(base, mode, wanted)
            if new != base:
                changed[uid] = new
        db.executemany("INSERT OR REPLACE INTO memory_flags VALUES (?,?,?)",
                       [(party, uid, " ".join(new)) for uid, new in changed.items()])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return after, changed


# -- reads ---------------------------------------------------------------------------------------


def flag_rows(db: sqlite3.Connection, party: str,
              uids: Iterable[int] | None = None) -> dict[int, str]:
    """Message -> flags text of the memory's flagged messages (of ``uids`` only, if given)."""
    sql = ("SELECT f.message, f.flags FROM memory_flags f WHERE f.party = ? AND EXISTS "
           "(SELECT 1 FROM memory mem WHERE mem.party = f.party AND mem.message = f.message)")
    args: tuple[object, ...] = (party,)
    if uids is not None:
        sql += " AND f.message IN (SELECT value FROM json_each(?))"
        args = (party, json.dumps(list(uids)))
    return dict(db.execute(sql, args).fetchall())


def deleted(db: sqlite3.Connection, party: str) -> list[int]:
    """Messages of the memory flagged \\Deleted, ascending."""
    return sorted(uid for uid, text in flag_rows(db, party).items()
                  if "\\deleted" in text.lower().split())


def edits_of(db: sqlite3.Connection, party: str, after: int = 0) -> list[MemoryEdit]:
    """The memory's recorded edits after version ``after``, oldest first."""
    rows = db.execute("SELECT * FROM memory_edits WHERE party = ? AND message > ? "
                      "ORDER BY message", (party, after)).fetchall()
    return [MemoryEdit(m, p, at, who, how, tuple(json.loads(a)), tuple(json.loads(r)), size)
            for m, p, at, who, how, a, r, size in rows]


def memory_at(current: Sequence[int], later: Sequence[MemoryEdit], version: int) -> list[int]:
    """The memory just after ``version``, from the current one and the edits after it."""
    memory = set(current)
    for edit in reversed(later):
        memory.difference_update(edit.added)
        memory.update(edit.removed)
    return sorted(m for m in memory if m <= version)


# -- reads beside a running server (its index in WAL mode; no lock taken) ----------------------


def read_only(data_dir: Path) -> sqlite3.Connection:
    """The index of ``data_dir``, opened read-only: a running server keeps writing it."""
    path = data_dir / "index.sqlite"
    if not path.exists():
        raise StoreError(f"{data_dir} holds no mailcoach store (no index.sqlite)")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from None


def current(db: sqlite3.Connection, party: str) -> list[int]:
    """The party's memory, in order."""
    return [m for (m,) in db.execute("SELECT message FROM memory WHERE party = ? ORDER BY pos",
                                     (party,))]


def agents(db: sqlite3.Connection) -> list[tuple[str, int]]:
    """Every agent and the size of its memory."""
    return db.execute("SELECT p.address, COUNT(DISTINCT m.message) FROM parties p LEFT JOIN "
                      "memory m ON m.party = p.address WHERE p.kind = 'agent' "
                      "GROUP BY p.address ORDER BY p.address").fetchall()


def described(db: sqlite3.Connection, numbers: Sequence[int]) -> dict[int, tuple[str, str, float]]:
    """Message -> (sender, subject, received_at)."""
    return {n: (sender, subject, at) for n, sender, subject, at in db.execute(
        "SELECT id, sender, subject, received_at FROM messages "
        "WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(list(numbers)),))}
