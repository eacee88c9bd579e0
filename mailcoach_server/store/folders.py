"""IMAP folders in the index: named reads and transactional writes, no SQL outside.

A folder is a ``folders`` row (UIDVALIDITY, UIDNEXT, special use, subscribed)
and its ``folder_messages`` rows (UID, message, flags as a space-separated
string). Reads use the store's read connection; every write is one
transaction in the store's writer thread, so it is ordered with message
commits and the UIDs they hand out (RENAME of a tree included: all or
nothing). The writer's UIDNEXT cache is corrected by exactly the writes
that can make it wrong (rename, delete, a move of messages).

Reads on a big folder cost what they return, not what the folder holds:
UID lists come back as a compact ``array('I')`` (4 bytes a message), read
on a connection of their own so a thread can build one while the event
loop keeps using the shared read connection; rows are read by UID range;
the flag sets in use, the first unseen message and the \\Deleted ones come
from the ``(folder, flags, uid)`` index without touching the other rows.

Not here: what a folder name may be, ``Agents/`` views as IMAP shows them,
\\Recent (``imap.folders``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import StoreError

__all__ = ["BriefRow", "FolderIndex", "FolderRecord", "FolderRow", "new_uidvalidity"]

#: Distinct flag sets found one index probe at a time before a plain scan is cheaper.
_MAX_FLAG_SETS = 512

_T = TypeVar("_T")

#: (uid, message, flags, file, offset, length, received_at)
FolderRow = tuple[int, int, str, str, int, int, float]

_ROW_COLUMNS = "m.file, m.offset, m.length, m.received_at"
_FOLDER_ROWS = (
    f"SELECT fm.uid, fm.message, fm.flags, {_ROW_COLUMNS} FROM folder_messages fm "
    "JOIN messages m ON m.id = fm.message WHERE fm.folder = ? AND fm.uid BETWEEN ? AND ? "
    "ORDER BY fm.uid"
)
#: (uid, message, flags, received_at): a row without where its bytes are
BriefRow = tuple[int, int, str, float]
_BRIEF_ROWS = (
    "SELECT fm.uid, fm.message, fm.flags, m.received_at FROM folder_messages fm "
    "JOIN messages m ON m.id = fm.message WHERE fm.folder = ? AND fm.uid BETWEEN ? AND ? "
    "ORDER BY fm.uid"
)
_MEMORY_ROWS = (
    f"SELECT DISTINCT m.id, m.id, '', {_ROW_COLUMNS} FROM memory mem "
    "JOIN messages m ON m.id = mem.message WHERE mem.party = ? "
    "AND mem.message BETWEEN ? AND ? ORDER BY m.id"
)
_TOP = 2**32 - 1  # above every UID (RFC 3501: 32-bit)
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
        #: where the index is, for the connections that read whole UID lists in a thread
        self._path = next(file for _, name, file in db.execute("PRAGMA database_list")
                          if name == "main")
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

    def folder_rows(self, folder: str, after_uid: int = 0,
                    upto_uid: int = _TOP) -> list[FolderRow]:
        """The folder's messages with ``after_uid < UID <= upto_uid``, by UID."""
        return self._query(_FOLDER_ROWS,  # type: ignore[return-value]
                           (folder, after_uid + 1, upto_uid))

    def brief_rows(self, folder: str, after_uid: int = 0, upto_uid: int = _TOP) -> list[BriefRow]:
        """:meth:`folder_rows` without the file, offset and length: what a FETCH answered
        from the header cache needs (a third less to read: no file name made per row)."""
        return self._query(_BRIEF_ROWS, (folder, after_uid + 1, upto_uid))  # type: ignore[return-value]

    def folder_rows_of(self, folder: str, uids: Iterable[int]) -> list[FolderRow]:
        """The folder's rows of exactly ``uids`` (those still there), by UID."""
        return self._query(  # type: ignore[return-value]
            f"SELECT fm.uid, fm.message, fm.flags, {_ROW_COLUMNS} FROM folder_messages fm "
            "JOIN messages m ON m.id = fm.message WHERE fm.folder = ? "
            "AND fm.uid IN (SELECT value FROM json_each(?)) ORDER BY fm.uid",
            (folder, json.dumps(list(uids))))

    def memory_rows(self, party: str, after: int = 0, upto: int = _TOP) -> list[FolderRow]:
        """A party's memory as folder rows: the UID is the message id, flags empty."""
        return self._query(_MEMORY_ROWS, (party, after + 1, upto))  # type: ignore[return-value]

    def _uid_array(self, sql: str, args: Sequence[Any]) -> array[int]:
        """UIDs as a compact array, from a connection of this call's own: a thread may
        build a million of them without holding the shared read connection."""
        uids: array[int] = array("I")
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            cursor = conn.execute(sql, args)
            while rows := cursor.fetchmany(16384):
                uids.extend([uid for (uid,) in rows])
        finally:
            conn.close()
        return uids

    def folder_uids(self, folder: str) -> array[int]:
        """Every UID of the folder, ascending."""
        return self._uid_array("SELECT uid FROM folder_messages WHERE folder = ? ORDER BY uid",
                               (folder,))

    def memory_uids(self, party: str) -> array[int]:
        """The message ids in a party's memory (its folder's UIDs), ascending, once each."""
        return self._uid_array("SELECT DISTINCT message FROM memory WHERE party = ? "
                               "ORDER BY message", (party,))

    def flag_sets(self, folder: str) -> list[str]:
        """The distinct flags texts of the folder's messages, one index probe each."""
        found: list[str] = []
        sql = "SELECT flags FROM folder_messages WHERE folder = ? AND flags {} ? " \
              "ORDER BY flags LIMIT 1"
        with self._read_lock:
            row = self._read.execute(sql.format(">="), (folder, "")).fetchone()
            while row is not None and len(found) < _MAX_FLAG_SETS:
                found.append(row[0])
                row = self._read.execute(sql.format(">"), (folder, row[0])).fetchone()
        if row is None:
            return found
        # Many sets (keywords per message): one scan of the index is cheaper from here.
        rest = self._query("SELECT DISTINCT flags FROM folder_messages WHERE folder = ? "
                           "AND flags >= ?", (folder, row[0]))
        return found + [flags for (flags,) in rest]

    def first_uid_with(self, folder: str, flags: str) -> int | None:
        """The lowest UID whose flags text is exactly ``flags``."""
        (uid,) = self._query("SELECT MIN(uid) FROM folder_messages WHERE folder = ? "
                             "AND flags = ?", (folder, flags))[0]
        return None if uid is None else int(uid)

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
        """UIDs carrying ``flag``: only the flag sets that hold it are read (by index)."""
        sets = [flags for flags in self.flag_sets(folder) if flag in flags.split()]
        if not sets:
            return []
        rows = self._query("SELECT uid FROM folder_messages WHERE folder = ? "
                           "AND flags IN (SELECT value FROM json_each(?)) ORDER BY uid",
                           (folder, json.dumps(sets)))
        return [uid for (uid,) in rows]

    def uids_of_message_ids(self, folder: str, message_ids: Iterable[str]) -> dict[str, int]:
        """Message-ID -> the lowest UID in ``folder`` of a message carrying it."""
        # CROSS JOIN: the messages by Message-ID first, then their rows by message (both
        # by index), never a scan of the folder's rows (a Sent of a million).
        return dict(self._query(  # type: ignore[arg-type]
            "SELECT m.message_id, MIN(fm.uid) FROM messages m CROSS JOIN folder_messages fm "
            "ON fm.message = m.id AND fm.folder = ? "
            "WHERE m.message_id IN (SELECT value FROM json_each(?)) GROUP BY m.message_id",
            (folder, json.dumps(list(message_ids)))))

    def appended_uids(self, folder: str, message_ids: Iterable[str]) -> list[int]:
        """UIDs in ``folder`` of messages a client APPENDed that carry one of ``message_ids``."""
        # CROSS JOIN: look the Message-IDs up first (by index; usually none was APPENDed),
        # then their rows by message: this runs after each commit that files in Sent.
        rows = self._query(
            "SELECT fm.uid FROM messages m CROSS JOIN folder_messages fm "
            "ON fm.folder = ? AND fm.message = m.id WHERE m.file = 'imap' "
            "AND m.message_id IN (SELECT value FROM json_each(?)) ORDER BY fm.uid",
            (folder, json.dumps(list(message_ids))))
        return [uid for (uid,) in rows]

    def newest_appended_message_ids(self, folder: str, limit: int) -> list[str]:
        """The Message-IDs of the messages a client APPENDed among the newest ``limit``
        of ``folder``, newest first: a bounded walk back from its last UID."""
        rows = self._query(
            "SELECT m.message_id FROM (SELECT message, uid FROM folder_messages "
            "WHERE folder = ? ORDER BY uid DESC LIMIT ?) fm "
            "JOIN messages m ON m.id = fm.message WHERE m.file = 'imap' "
            "AND m.message_id != '' ORDER BY fm.uid DESC", (folder, limit))
        return [message_id for (message_id,) in rows]

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
