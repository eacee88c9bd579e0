"""A persistent cache of what FETCH derives from a message's header: rebuildable, never an error.

A header FETCH of a whole folder (``RFC822.SIZE``, ``BODY.PEEK[HEADER.FIELDS
(...)]``, ``ENVELOPE``) needs a few hundred bytes of each message, but
without a cache it reads and converts every message. Dovecot answers it
from ``dovecot.index.cache``; this is ours: one SQLite file,
``headers.sqlite`` in the data directory, holding per message its size on
the wire, its CRLF header block, and the FETCH items made from it (keyed by
a name such as ``HEADER.FIELDS DATE FROM``), filled the first time a client
asks for them, 64 messages of neighbouring ids to a row (a folder's batch
is a few rows, not one per message).

Messages never change once stored, so an entry never goes stale; each
one also records the message's arrival time (to the microsecond), and is
used only when the index gives the same time for that id, so an index
rebuilt with other ids, a new store in the same directory, or an id given
again after a crash dropped the messages that had not reached the disk, is
never answered from old entries. (The time alone: reading the file, offset
and length of every message to check them too cost a header FETCH a third
more in the index.) A CRC of every row catches bytes that rotted
on disk. It is a cache: no fsync, and a missing, corrupt or unwritable
file costs a rebuild or a miss, never an error to a client (a warning in
the log), and a file another connection is writing is a miss, not a wait.
Values over :data:`MAX_VALUE` bytes (a hostile header) are not kept; they
are recomputed from the message each time.

Not here: what the items are (``imap.fetch``), when to ask (``imap.messages``).
"""

from __future__ import annotations

import logging
import marshal
import os
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["CACHE_FILES", "MAX_VALUE", "CachedHeader", "HeaderCache"]

log = logging.getLogger(__name__)

#: The cache and the files SQLite keeps beside it (WAL mode).
CACHE_FILES = ("headers.sqlite", "headers.sqlite-wal", "headers.sqlite-shm")

#: Bytes of the biggest header block or item kept; a bigger one is recomputed each time.
MAX_VALUE = 64 * 1024

_FORMAT = "5"  # bump when the layout changes: a file of another format is rebuilt
_MAX_REBUILDS = 3  # then the cache is off until the server restarts (a disk that keeps failing)
_CHUNK_BITS = 6  # 64 messages of consecutive ids a row

# A row costs a few microseconds whatever it holds, and a header FETCH wants every
# message of a folder, mostly in id order: so one row holds the entries of 64
# consecutive message ids. Its blob is a CRC-32 (4 bytes, big endian) of the rest, then
# marshal of {message id: (received_at, size, block, items version, items)}: the
# arrival time the entry was made for, RFC822.SIZE, the CRLF header block (None: over
# MAX_VALUE) and the items, {name: bytes}. One marshal call decodes a row: a folder's
# sweep asks for all 64 entries anyway.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunk (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""

#: (message id, received_at): the message as the index has it
Key = tuple[int, float]


class CachedHeader(NamedTuple):
    """One message's entry: its wire size, its header block (None: not kept), its items."""

    size: int
    block: bytes | None
    items: dict[str, bytes] = {}  # noqa: RUF012 - a default only put() reads, never changed


#: What a row holds for a message: (received_at, size, block, items version, items)
_Stored = tuple[float, int, "bytes | None", int, dict[str, bytes]]
_new_entry = tuple.__new__  # CachedHeader(...) without its Python-level __new__: per message


class HeaderCache:
    """``headers.sqlite`` of one data directory; opened on first use, on the caller's thread.

    ``items_version`` names the code that makes the items: items made by another
    version are not returned (and are dropped when the entry is next written).
    """

    def __init__(self, path: Path, *, items_version: int = 0) -> None:
        self.path = path
        self.items_version = items_version
        self._db: sqlite3.Connection | None = None
        self._rebuilds = 0
        self.disabled = False

    # -- reading ------------------------------------------------------------------------

    def get(self, keys: Sequence[Key]) -> dict[int, CachedHeader]:
        """The entries of ``keys`` still valid for them; a message without a valid
        entry (none, another arrival time, a bad CRC) is left out."""
        if not keys or self.disabled:
            return {}
        try:
            return self._get(keys)
        except (sqlite3.Error, OSError) as exc:
            self._failed("read", exc)
            return {}

    def _get(self, keys: Sequence[Key]) -> dict[int, CachedHeader]:
        db = self._open()
        found: dict[int, _Stored] = {}
        for _, entries in self._chunks(db, {message >> _CHUNK_BITS for message, _ in keys}):
            found.update(entries)
        out: dict[int, CachedHeader] = {}
        version, new, entry_type = self.items_version, _new_entry, CachedHeader
        for message, received_at in keys:
            stored = found.get(message)
            if stored is None:
                continue
            try:
                received, size, block, made_by, items = stored
            except (ValueError, TypeError):  # not a tuple of five: a miss
                continue
            if received == received_at and type(items) is dict:
                out[message] = new(entry_type, (size, block, items if made_by == version else {}))
        return out

    def _chunks(self, db: sqlite3.Connection,
                ids: Iterable[int]) -> Iterator[tuple[int, dict[int, _Stored]]]:
        """``(chunk id, {message: stored entry})`` of the readable ones of ``ids``."""
        wanted = tuple(ids)
        for chunk, data in db.execute(
                f"SELECT id, data FROM chunk WHERE id IN ({','.join('?' * len(wanted))})", wanted):
            if zlib.crc32(data[4:]) != int.from_bytes(data[:4], "big"):
                continue  # rotted on disk: its entries are misses, made again when read
            try:
                entries = marshal.loads(data[4:])
            except (ValueError, EOFError, TypeError):
                continue
            if isinstance(entries, dict):
                yield chunk, entries

    def count(self) -> int:
        """Entries held, every row read (for tests and checks, not for a FETCH)."""
        try:
            db = self._open()
            ids = [row[0] for row in db.execute("SELECT id FROM chunk")]
            return sum(len(entries) for _, entries in self._chunks(db, ids))
        except (sqlite3.Error, OSError) as exc:
            self._failed("read", exc)
            return 0

    # -- writing ------------------------------------------------------------------------

    def put(self, entries: Iterable[tuple[Key, CachedHeader]]) -> None:
        """Keep these entries (replacing what a message had); one transaction.

        A block or item over :data:`MAX_VALUE` bytes is left out of its entry.
        """
        if self.disabled:
            return
        try:
            self._put(list(entries))
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._failed("write", exc)

    def _put(self, entries: list[tuple[Key, CachedHeader]]) -> None:
        if not entries:
            return
        changed: dict[int, dict[int, _Stored]] = {}
        for (message, received), entry in entries:
            block = entry.block if entry.block is not None and len(entry.block) <= MAX_VALUE \
                else None
            items = {k: v for k, v in entry.items.items() if len(v) <= MAX_VALUE}
            changed.setdefault(message >> _CHUNK_BITS, {})[message] = (
                received, entry.size, block, self.items_version, items)
        db = self._open()
        with db:  # read, merge and write under one lock: another connection's entries stay
            db.execute("BEGIN IMMEDIATE")
            rows = []
            old = dict(self._chunks(db, changed))
            for chunk, new in changed.items():
                merged = old.get(chunk, {})
                merged.update(new)
                body = marshal.dumps(merged)
                rows.append((chunk, zlib.crc32(body).to_bytes(4, "big") + body))
            db.executemany("INSERT OR REPLACE INTO chunk VALUES (?, ?)", rows)

    # -- opening, rebuilding ------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        # created 0600 before SQLite opens it; SQLite gives -wal and -shm the same mode
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        # timeout 0: a file another connection is writing is a miss, not a wait on the loop
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # a cache: a lost write is a miss
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (_FORMAT,))
            elif row[0] != _FORMAT:
                raise sqlite3.DatabaseError(f"cache format {row[0][:20]!r}, not {_FORMAT}")
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def _failed(self, doing: str, exc: Exception) -> None:
        """A locked file is a miss; anything else means the file is unusable: rebuild it."""
        text = str(exc).lower()
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return  # another connection is writing: the next batch will do
        self.close()
        self._rebuilds += 1
        if self._rebuilds > _MAX_REBUILDS:
            self.disabled = True
            log.warning("header cache %s: %s failed again (%s); off until restart",
                        self.path, doing, exc)
            return
        log.warning("header cache %s: %s failed (%s); rebuilding it", self.path, doing, exc)
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass
            except OSError as unlink_error:
                log.warning("header cache: cannot remove %s%s: %s", self.path, suffix,
                            unlink_error.strerror)
                self.disabled = True

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
