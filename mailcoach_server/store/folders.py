"""IMAP folders in the index: named reads and transactional writes, no SQL outside.

A folder is a ``folders`` row (UIDVALIDITY, UIDNEXT, special use, subscribed)
and its ``folder_messages`` rows (UID, message, flags as a space-separated
string). Reads use the store's read connection; every write is one
transaction in the store's writer thread, so it is ordered with message
commits and the UIDs they hand out (RENAME of a tree included: all or
nothing). The writer's UIDNEXT cache is corrected by exactly the writes
that can make it wrong (rename, delete, a move of messages).

Not here: what a folder name may be, ``Agents/`` views as IMAP shows them,
\\Recent (``imap.folders``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import StoreError

__all__ = ["FolderIndex", "FolderRecord", "FolderRow", "new_uidvalidity"]

_T = TypeVar("_T")

#: (uid, message, flags, file, offset, length, received_at)
FolderRow = tuple[int, int, str, str, int, int, float]

_ROW_COLUMNS = "m.file, m.offset, m.length, m.received_at"
_FOLDER_ROWS = (
    f"SELECT fm.uid, fm.message, fm.flags, {_ROW_COLUMNS} FROM folder_messages fm "
    "JOIN messages m ON m.id = fm.message WHERE fm.folder = ? AND fm.uid > ? ORDER BY fm.uid"
)
_MEMORY_ROWS = (
    f"SELECT DISTINCT m.id, m.id, '', {_ROW_COLUMNS} FROM memory mem "
    "JOIN messages m ON m.id = mem.message WHERE mem.party = ? AND mem.message > ? "
    "ORDER BY m.id"
)
_HAS_FLAG = "instr(' ' || flags || ' ', ' ' || ? || ' ')"


def new_uidvalidity() -> int:
    # Seconds since the epoch, as Dovecot does: grows across re-creations.
    return int(time.time()) & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class FolderRecord:
    name: str
    uidvalidity: int
    uidnext: int
    special: str
    subscribed: bool


class FolderIndex:
    """The folders of one store; made by :class:`~mailcoach_server.store.store.Store`."""

    def __init__(self, db: sqlite3.Connection, read: sqlite3.Connection,
                 read_lock: threading.Lock, executor: ThreadPoolExecutor,
                 uidnext: dict[str, int]) -> None:
        self._db = db  # the writer's connection: used in the executor only
        self._read = read
        self._read_lock = read_lock
        self._executor = executor
        self._uidnext = uidnext  # the writer's cache, shared with the message path
        #: name -> uidvalidity of every folder, as last written
        self._validity: dict[str, int] = {
            name: validity for name, validity in db.execute(
                "SELECT name, uidvalidity FROM folders")}

    # -- reads (read connection) --------------------------------------------------------

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            return self._read.execute(sql, args).fetchall()

    def __contains__(self, name: str) -> bool:
        return name in self._validity

    def uidvalidity(self, name: str) -> int | None:
        return self._validity.get(name)

    def list_folders(self) -> list[FolderRecord]:
        return [FolderRecord(n, v, u, s, bool(sub)) for n, v, u, s, sub in self._query(
            "SELECT name, uidvalidity, uidnext, special, subscribed FROM folders")]

    def get(self, name: str) -> FolderRecord | None:
        rows = self._query("SELECT uidvalidity, uidnext, special, subscribed FROM folders "
                           "WHERE name = ?", (name,))
        if not rows:
            return None
        validity, uidnext, special, subscribed = rows[0]
        return FolderRecord(name, validity, uidnext, special, bool(subscribed))

    def children(self, name: str, delimiter: str = "/") -> list[str]:
        """Every folder below ``name`` (any depth)."""
        rows = self._query("SELECT name FROM folders WHERE substr(name, 1, ?) = ? ORDER BY name",
                           (len(name) + 1, name + delimiter))
        return [n for (n,) in rows]

    def count_outside(self, top: str, delimiter: str = "/") -> int:
        """Folders other than ``top`` and what is below it."""
        (count,) = self._query(
            "SELECT COUNT(*) FROM folders WHERE name != ? AND substr(name, 1, ?) != ?",
            (top, len(top) + 1, top + delimiter))[0]
        return int(count)

    def folder_rows(self, folder: str, after_uid: int = 0) -> list[FolderRow]:
        """The folder's messages with a UID above ``after_uid``, by UID."""
        return self._query(_FOLDER_ROWS, (folder, after_uid))  # type: ignore[return-value]

    def memory_rows(self, party: str, after: int = 0) -> list[FolderRow]:
        """A party's memory as folder rows: the UID is the message id, flags empty."""
        return self._query(_MEMORY_ROWS, (party, after))  # type: ignore[return-value]

    def memory_top(self, party: str) -> int:
        """The highest message id in the party's memory (0 if none)."""
        (top,) = self._query("SELECT COALESCE(MAX(message), 0) FROM memory WHERE party = ?",
                             (party,))[0]
        return int(top)

    def memory_count(self, party: str) -> int:
        (count,) = self._query("SELECT COUNT(DISTINCT message) FROM memory WHERE party = ?",
                               (party,))[0]
        return int(count)

    def counts(self, folder: str, flag: str = "\\Seen") -> tuple[int, int]:
        """``(messages, messages without flag)``."""
        count, without = self._query(
            f"SELECT COUNT(*), COALESCE(SUM({_HAS_FLAG} = 0), 0) FROM folder_messages "
            "WHERE folder = ?", (flag, folder))[0]
        return int(count), int(without)

    def count_above(self, folder: str, uid: int) -> int:
        (count,) = self._query("SELECT COUNT(*) FROM folder_messages WHERE folder = ? AND uid > ?",
                               (folder, uid))[0]
        return int(count)

    def max_uid(self, folder: str) -> int:
        (top,) = self._query("SELECT COALESCE(MAX(uid), 0) FROM folder_messages WHERE folder = ?",
                             (folder,))[0]
        return int(top)

    def flags(self, folder: str, uids: Iterable[int]) -> dict[int, str]:
        """UID -> stored flags, for those of ``uids`` still in the folder."""
        return dict(self._query(  # type: ignore[arg-type]
            "SELECT uid, flags FROM folder_messages WHERE folder = ? "
            "AND uid IN (SELECT value FROM json_each(?))", (folder, json.dumps(list(uids)))))

    def uids_flagged(self, folder: str, flag: str) -> list[int]:
        rows = self._query(f"SELECT uid FROM folder_messages WHERE folder = ? AND {_HAS_FLAG} > 0 "
                           "ORDER BY uid", (folder, flag))
        return [uid for (uid,) in rows]

    def uids_of_message_ids(self, folder: str, message_ids: Iterable[str]) -> dict[str, int]:
        """Message-ID -> the lowest UID in ``folder`` of a message carrying it."""
        return dict(self._query(  # type: ignore[arg-type]
            "SELECT m.message_id, MIN(fm.uid) FROM folder_messages fm "
            "JOIN messages m ON m.id = fm.message WHERE fm.folder = ? "
            "AND m.message_id IN (SELECT value FROM json_each(?)) GROUP BY m.message_id",
            (folder, json.dumps(list(message_ids)))))

    def appended_uids(self, folder: str, message_ids: Iterable[str]) -> list[int]:
        """UIDs in ``folder`` of messages a client APPENDed that carry one of ``message_ids``."""
        # CROSS JOIN: look the Message-IDs up first (by index; usually none was APPENDed),
        # not every row of the folder: this runs after each commit that files in Sent.
        rows = self._query(
            "SELECT fm.uid FROM messages m CROSS JOIN folder_messages fm "
            "ON fm.folder = ? AND fm.message = m.id WHERE m.file = 'imap' "
            "AND m.message_id IN (SELECT value FROM json_each(?)) ORDER BY fm.uid",
            (folder, json.dumps(list(message_ids))))
        return [uid for (uid,) in rows]

    # -- writes (writer thread, one transaction each) -----------------------------------

    async def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        def run() -> _T:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the index: {exc}") from exc

    def ensure(self, folder: str, special: str = "") -> None:
        """Create a folder record (durably, at once) if there is none."""
        if folder in self._validity:
            return
        validity = new_uidvalidity()
        self._validity[folder] = validity
        # Rare, and must be on disk before any message is filed in it.
        def create() -> None:
            self._uidnext.pop(folder, None)
            self._db.execute(
                "INSERT OR IGNORE INTO folders(name, uidvalidity, uidnext, special) "
                "VALUES (?,?,1,?)", (folder, validity, special))
        try:
            self._executor.submit(create).result()
        except sqlite3.Error as exc:
            self._validity.pop(folder, None)
            raise StoreError(f"cannot write the index: {exc}") from exc

    async def create_folder(self, name: str, *, above: int = 0) -> int:
        """Create ``name`` with a UIDVALIDITY above ``above`` (a retired one); returns it.

        An existing folder keeps its UIDVALIDITY unless it is not above ``above``.
        """
        validity = max(self._validity.get(name) or new_uidvalidity(), above + 1)
        def work(db: sqlite3.Connection) -> None:
            self._uidnext.pop(name, None)
            db.execute("INSERT INTO folders(name, uidvalidity, uidnext) VALUES (?,?,1) "
                       "ON CONFLICT(name) DO UPDATE SET uidvalidity = excluded.uidvalidity",
                       (name, validity))
        await self._write(work)
        self._validity[name] = validity
        return validity

    async def raise_uidnext(self, name: str, uidnext: int) -> None:
        """UIDNEXT of ``name`` becomes at least ``uidnext`` (a high-water mark)."""
        def work(db: sqlite3.Connection) -> None:
            self._uidnext.pop(name, None)
            db.execute("UPDATE folders SET uidnext = ? WHERE name = ? AND uidnext < ?",
                       (uidnext, name, uidnext))
        await self._write(work)

    async def write_flags(self, folder: str, changes: dict[int, str]) -> None:
        """Store new flags (UID -> flags text); UIDs no longer in the folder are left out.

        An upsert, because SQLite plans ``UPDATE ... FROM json_each`` as a nested
        scan (quadratic); only rows that exist are touched (the EXISTS).
        """
        if not changes:
            return
        pairs = json.dumps([[uid, flags] for uid, flags in changes.items()])
        await self._write(lambda db: db.execute(
            "INSERT INTO folder_messages(folder, uid, message, flags) "
            "SELECT ?1, json_extract(j.value, '$[0]'), 0, json_extract(j.value, '$[1]') "
            "FROM json_each(?2) AS j WHERE EXISTS (SELECT 1 FROM folder_messages f "
            "WHERE f.folder = ?1 AND f.uid = json_extract(j.value, '$[0]')) "
            "ON CONFLICT(folder, uid) DO UPDATE SET flags = excluded.flags",
            (folder, pairs)))

    async def expunge(self, folder: str, uids: Sequence[int]) -> None:
        if uids:
            await self._write(lambda db: db.execute(
                "DELETE FROM folder_messages WHERE folder = ? "
                "AND uid IN (SELECT value FROM json_each(?))", (folder, json.dumps(list(uids)))))

    async def subscribe(self, name: str, on: bool) -> None:
        await self._write(lambda db: db.execute(
            "UPDATE folders SET subscribed = ? WHERE name = ?", (1 if on else 0, name)))

    async def delete_folder(self, name: str) -> int | None:
        """The folder and its messages' places in it go (the files keep the messages).

        Returns its UIDVALIDITY (None if there was no such folder).
        """
        def work(db: sqlite3.Connection) -> None:
            self._uidnext.pop(name, None)
            db.execute("DELETE FROM folder_messages WHERE folder = ?", (name,))
            db.execute("DELETE FROM folders WHERE name = ?", (name,))
        await self._write(work)
        return self._validity.pop(name, None)

    async def rename_folder(self, old: str, new: str,
                            delimiter: str = "/") -> list[tuple[str, str, int | None]]:
        """``old`` and every folder below it move under ``new``, in one transaction.

        Returns ``(old name, new name, uidvalidity)`` of each folder moved, ``old`` first.
        """
        moved = [old, *self.children(old, delimiter)]
        targets = [(name, new + name[len(old):]) for name in moved]
        def work(db: sqlite3.Connection) -> None:
            for name, _ in targets:
                self._uidnext.pop(name, None)
            for name, target in targets:
                self._uidnext.pop(target, None)
                db.execute("UPDATE folder_messages SET folder = ? WHERE folder = ?",
                           (target, name))
                db.execute("UPDATE folders SET name = ? WHERE name = ?", (target, name))
        await self._write(work)
        out = []
        for name, target in targets:
            validity = self._validity.pop(name, None)
            if validity is not None:
                self._validity[target] = validity
            out.append((name, target, validity))
        return out

    async def move_messages(self, source: str, target: str) -> None:
        """Every message of ``source`` goes to ``target``, which takes its UIDNEXT too
        (RENAME of INBOX: the UIDs stay, so they must stay unique in ``target``)."""
        def work(db: sqlite3.Connection) -> None:
            self._uidnext.pop(source, None)
            self._uidnext.pop(target, None)
            db.execute("UPDATE folder_messages SET folder = ? WHERE folder = ?", (target, source))
            db.execute("UPDATE folders SET uidnext = (SELECT uidnext FROM folders WHERE name = ?) "
                       "WHERE name = ?", (source, target))
        await self._write(work)
