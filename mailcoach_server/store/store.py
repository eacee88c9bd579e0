"""The durable store: ``trace``, one ``<address>.mbox`` per party, and the index.

Every accepted message goes through ``Store.commit`` with a ``WritePlan``
that says everything the message changes (memories, deliveries, party
state, folders). Plans are made on the event loop, in order, against the
in-memory state kept here; a single writer thread persists them in that
order. Concurrent commits are grouped: one fsync of each touched file and
one SQLite transaction for the whole group, then every waiter is told.

Order of writes inside a group: the message files (trace, imap, copies)
are written; their fsync runs in a thread of its own while the party files
are appended and the SQLite transaction commits (FULL: its own fsync); the
group is acknowledged only once both are done, so two fsyncs cost the time
of one. Recovery at open follows from that order. Bytes in a file past what
the index knows were never acknowledged: they are cut off. Index rows whose
bytes are not on disk can only be the last group's, after a power loss
between its commit and the files' fsync (a killed process cannot leave
them: the bytes were written, only not yet synced); it was not acknowledged
either, and the record its transaction kept (``unsynced``) takes it back.
A group that rewrites a memory keeps the serial order: files synced, then
the commit. The writer thread takes the next group from the queue itself,
so groups form and are written while the event loop is busy.

The message files (trace, imap, copies) and the index are the record; a
party's ``<address>.mbox`` is a view of it (its memory, in order) and is
not fsynced on every append (nor its directory entry when new): that would
be a third fsync per group for bytes the index can always rebuild. A party
file that comes back shorter than the index says (power loss) is rewritten
at open; rewrites for X-Rollback go through a temp file, fsync and rename.

A group that cannot be written (disk full, an I/O error) fails alone: its
waiters and the plans queued behind it (made against its state) get a
``StoreError``, the bytes it appended are cut back, the in-memory state of
its parties is read again from the index, and the writer serves the next
group. Party file paths come from ``files.party_path`` (an encoding of the
address, checked); the directory is 0700 and its files 0600.

IMAP folders are ``Store.folders`` (``folders.FolderIndex``); no SQL leaves this
package: callers use named operations.

Not here: deciding what a message means (postmaster/router) or IMAP.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StoreError
from . import mbox, memory_log, unsynced
from .checkpoints import Checkpointer
from .files import open_append, open_new, party_path, private_dir, truncate_to
from .folders import FolderIndex
from .header_cache import CACHE_FILES
from .memory_log import MemoryChange, MemoryEdit, changed_between
from .schema import INDEX_FILES, connect, migrate
from .spans import MESSAGE_FILES
from .tokens import tokens_of

__all__ = [
    "FILES", "Delivery", "MessageMeta", "Store", "StoredMessage", "WritePlan", "party_file_name",
]

log = logging.getLogger(__name__)


FILES = MESSAGE_FILES

#: groups the writer thread writes in a row before folder writes queued behind get a turn
_GROUPS_PER_TURN = 16
#: seconds without a new group after which the last group's record is cleared
_CLEAR_AFTER = 0.05


def party_file_name(address: str) -> str:
    """``swe1@localdomain.mbox``; unusual addresses are percent-encoded (``a%2Fb@d.mbox``)."""
    return party_path(Path("."), address).name


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What the index records of a message (the bytes are in the file)."""

    id: int
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    in_reply_to: str
    thread: str
    auto_round: int
    cost: float
    received_at: float


@dataclass(frozen=True, slots=True)
class StoredMessage:
    meta: MessageMeta
    size: int
    #: folder -> the UID the message got there
    uids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message a party has to act on, not yet done."""

    id: int
    party: str
    message: int
    model: str | None


@dataclass(slots=True)
class WritePlan:
    """Everything one message changes, decided before it is written."""

    raw: bytes
    meta: MessageMeta
    file: str = "trace"
    #: parties whose memory gets the message appended, in order
    memory_appends: list[str] = field(default_factory=list)
    #: party -> its whole new memory (rollback, pop), applied before the appends
    memory_rewrites: dict[str, list[int]] = field(default_factory=dict)
    #: new or changed parties: address -> (kind, state)
    party_states: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    #: parties that must act on the message: (party, model)
    deliveries: list[tuple[str, str | None]] = field(default_factory=list)
    #: the delivery this message answers, marked done in the same transaction
    completes: int | None = None
    #: IMAP folders the message appears in (its UID there is its message id)
    folders: list[str] = field(default_factory=list)
    folder_flags: dict[str, str] = field(default_factory=dict)
    #: how the memories changed, for their history ("imap-expunge", "restore"...); a
    #: rewrite without one is a "rewrite", a plain append is no edit
    edit: str = ""
    #: filled when planned: party -> what the plan added to and removed from its memory
    memory_changes: dict[str, MemoryChange] = field(default_factory=dict)


@dataclass(slots=True)
class _Party:
    kind: str
    state: dict[str, Any]
    memory: list[int]
    mbox_size: int


class Store:
    """Open with ``Store.open(data_dir)``; close with ``await store.aclose()``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.trace_path = data_dir / "trace"
        self._db = connect(data_dir / "index.sqlite")
        migrate(self._db, data_dir)
        self._read = sqlite3.connect(
            data_dir / "index.sqlite", isolation_level=None, check_same_thread=False
        )
        self._read_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        # fsyncs the message files while the writer commits the index
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-fsync")
        self._checkpoints = Checkpointer(data_dir / "index.sqlite")
        # plans to write, appended on the loop and taken by the writer thread, and
        # whether a drain of the queue runs there (both under the lock)
        self._queue: list[tuple[WritePlan, asyncio.Future[StoredMessage]]] = []
        self._queue_lock = threading.Lock()
        self._draining = False
        self._idle: asyncio.Event | None = None  # set while no drain runs
        self._groups = 0  # writer thread: groups written (a delayed clear checks it)
        self._clear_timer: asyncio.TimerHandle | None = None
        self._drained_at = 0.0  # loop time the writer last went idle
        self._recorded = False  # writer thread: an unsynced-group record is in the index
        self._broken: str | None = None  # why no write can be trusted until a restart
        self._lost_ids = 0  # ids of plans whose write failed: never reused
        # writer thread: party -> bytes of its file as last committed; parties whose
        # file a failed group rewrote, to write again from the index
        self._party_sizes: dict[str, int] = {}
        self._dirty_parties: set[str] = set()
        self._closed = False
        self._files: dict[str, int] = {}  # file name -> size committed (trace and imap)
        self.parties: dict[str, _Party] = {}
        self._next_id = 1
        self._pending_meta: dict[int, MessageMeta] = {}  # planned, not yet committed
        self._pending_raw: dict[int, bytes] = {}
        self._lock: int | None = None  # the data directory's lock file, held while open
        # folder -> uidnext, as the writer last wrote it; the folder writes that move,
        # delete or re-create folders drop their entries
        self._uidnext: dict[str, int] = {}
        self._uidnext_unsaved: set[str] = set()  # advanced in this transaction
        #: IMAP folders: named reads and one-transaction writes
        self.folders = FolderIndex(self._db, self._read, self._read_lock, self._executor,
                                   self._uidnext)
        self._next_delivery = 1
        self.listeners: list[Any] = []  # callables(list[WritePlan]) after each group commit
        self._recover()

    # -- opening and recovery -------------------------------------------------

    @classmethod
    def open(cls, data_dir: Path) -> Store:
        try:
            private_dir(data_dir, [*FILES, *INDEX_FILES, *CACHE_FILES, "lock"])
            probe = data_dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"cannot write the data directory {data_dir}: {exc.strerror}") from None
        lock = _lock_data_dir(data_dir)
        try:
            store = cls(data_dir)
        except sqlite3.DatabaseError as exc:
            os.close(lock)
            raise StoreError(f"{data_dir / 'index.sqlite'}: {exc}") from None
        except BaseException:
            os.close(lock)
            raise
        store._lock = lock
        return store

    def _recover(self) -> None:
        db = self._db
        dropped = unsynced.recover(db, self.data_dir)  # a group a power loss took: undone
        for address, before in (dropped.parties if dropped else {}).items():
            if before is None:  # a party only that group made: its file holds nothing kept
                with contextlib.suppress(StoreError, FileNotFoundError):
                    truncate_to(party_path(self.data_dir, address), 0)
        top, count = db.execute("SELECT MAX(id), COUNT(*) FROM messages").fetchone()
        self._next_id = (top or 0) + 1
        self._lost_ids = (top or 0) - count  # ids of groups that failed to write
        self._next_delivery = (db.execute("SELECT MAX(id) FROM deliveries").fetchone()[0] or 0) + 1
        for name in FILES:
            row = db.execute(
                "SELECT offset + length + 1 FROM messages WHERE file=? ORDER BY id DESC LIMIT 1",
                (name,),
            ).fetchone()
            committed = row[0] if row else 0
            self._files[name] = self._cut_file(self.data_dir / name, committed)
        for address, kind, state, size in db.execute(
            "SELECT address, kind, state, mbox_size FROM parties"
        ):
            memory = [m for (m,) in db.execute(
                "SELECT message FROM memory WHERE party=? ORDER BY pos", (address,)
            )]
            self.parties[address] = _Party(kind, json.loads(state), memory, size)
            self._party_sizes[address] = size
            try:
                path = party_path(self.data_dir, address)
            except StoreError as exc:  # indexed by an older version; its mail stays readable
                log.error("%s", exc)
                continue
            actual = path.stat().st_size if path.exists() else 0
            if actual > size:
                self._cut_file(path, size)
            elif actual < size:
                log.warning("%s is shorter than the index says; rewriting it", path.name)
                self._rewrite_party_file(address)

    def _cut_file(self, path: Path, committed: int) -> int:
        """Drop bytes past the last committed entry: they were never acknowledged."""
        actual = path.stat().st_size if path.exists() else 0
        if actual < committed:
            raise StoreError(
                f"{path} is shorter ({actual} bytes) than its index says ({committed}); "
                "it was truncated or replaced outside mailcoach"
            )
        if actual > committed:
            log.warning("%s: cutting %d unacknowledged bytes after a crash",
                        path.name, actual - committed)
            with open(path, "r+b") as f:
                f.truncate(committed)
                os.fsync(f.fileno())
        return committed

    # -- planning helpers (event loop thread) ---------------------------------

    def allocate_message_id(self) -> int:
        number = self._next_id
        self._next_id += 1
        return number

    def ensure_folder(self, folder: str, special: str = "") -> None:
        """Create an IMAP folder record (durably) if it does not exist yet."""
        self.folders.ensure(folder, special)

    # -- committing ------------------------------------------------------------

    async def commit(self, plan: WritePlan) -> StoredMessage:
        """Persist ``plan``; returns once it is on disk (fsync) and indexed."""
        return (await self.commit_many([plan]))[0]

    async def commit_many(self, plans: Sequence[WritePlan]) -> list[StoredMessage]:
        """Persist plans in order, in one group if the writer is idle.

        Everything before the first ``await`` runs at once, so plans made
        one after the other on the event loop are written in that order.
        """
        if self._closed:
            raise StoreError("the store is closed")
        if self._broken is not None:
            raise StoreError(self._broken)
        for plan in plans:  # before anything changes: a refused plan changes nothing
            for address in (*plan.party_states, *plan.memory_appends, *plan.memory_rewrites):
                party_path(self.data_dir, address)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[StoredMessage]] = []
        for plan in plans:
            self._apply_in_memory(plan)
            future: asyncio.Future[StoredMessage] = loop.create_future()
            with self._queue_lock:
                self._queue.append((plan, future))
            futures.append(future)
        self._start_drain(loop)
        return [await future for future in futures]

    def _apply_in_memory(self, plan: WritePlan) -> None:
        """Plans are made against this state, so it changes at once, in order."""
        for address, (kind, state) in plan.party_states.items():
            party = self.parties.get(address)
            if party is None:
                self.parties[address] = _Party(kind, dict(state), [], 0)
            else:
                party.kind, party.state = kind, dict(state)
        for address, memory in plan.memory_rewrites.items():
            party = self.parties[address]
            plan.memory_changes[address] = changed_between(party.memory, memory)
            party.memory = list(memory)
        for address in plan.memory_appends:
            self.parties[address].memory.append(plan.meta.id)
            if plan.edit and not plan.memory_rewrites:  # put in from a client (APPEND, COPY)
                before = plan.memory_changes.get(address, MemoryChange((), ()))
                plan.memory_changes[address] = MemoryChange(
                    (*before.added, plan.meta.id), before.removed)
        self._pending_meta[plan.meta.id] = plan.meta
        self._pending_raw[plan.meta.id] = mbox.to_lf(plan.raw)

    def _start_drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Loop thread: hand the queue to the writer thread, unless a drain running there
        will take it. No loop task sits in between: groups form and are written while
        the loop is busy (a hundred replies made back to back land in a few groups)."""
        with self._queue_lock:
            if self._draining or not self._queue:
                return
            self._draining = True
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.clear()
        self._executor.submit(self._drain, loop)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Writer thread: write queued groups until none is left, acknowledging each on
        the loop as soon as it is durable. A failed group goes to the loop (``_fail``),
        which fails the plans queued behind it too before the writer goes on."""
        for _ in range(_GROUPS_PER_TURN):
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    loop.call_soon_threadsafe(self._drained)
                    return
            try:
                results = self._write_batch([plan for plan, _ in batch])
            except Exception as exc:  # disk full, I/O error: this group fails
                loop.call_soon_threadsafe(self._fail, batch, exc)
                return
            self._groups += 1
            with self._queue_lock:  # nothing queued meanwhile: one wake-up of the loop
                last = not self._queue
                if last:
                    self._draining = False
            loop.call_soon_threadsafe(self._acknowledge, batch, results, last)
            if last:
                return
        self._executor.submit(self._drain, loop)  # folder writes queued meanwhile go first

    def _fail(self, batch: list[tuple[WritePlan, asyncio.Future[StoredMessage]]],
              exc: Exception) -> None:
        """Loop thread: a group failed; it fails alone, with the plans queued behind it
        (made against its state), and the writer goes on."""
        with self._queue_lock:
            failed, self._queue = batch + self._queue, []
            self._draining = False
        log.error("store write failed (%s); %d message(s) not accepted", exc, len(failed),
                  exc_info=None if isinstance(exc, OSError | sqlite3.Error) else exc)
        self._forget([plan for plan, _ in failed])
        for _, future in failed:
            if not future.done():
                future.set_exception(StoreError(f"cannot write the store: {exc}"))
        self._drained()

    def _drained(self) -> None:
        """Loop thread: no drain runs. The last group's record is cleared once the writer
        has been idle a while (a next group's transaction would replace it)."""
        assert self._idle is not None
        self._idle.set()
        loop = asyncio.get_running_loop()
        self._drained_at = loop.time()
        # one timer at a time, looking again when it fires: not one per group
        if self._recorded and not self._closed and self._clear_timer is None:
            self._clear_timer = loop.call_later(_CLEAR_AFTER, self._clear_later)

    def _clear_later(self) -> None:
        self._clear_timer = None
        if self._closed or not self._recorded:  # aclose clears it; or a group did
            return
        loop = asyncio.get_running_loop()
        wait = self._drained_at + _CLEAR_AFTER - loop.time()
        if self._draining or wait > 0:
            self._clear_timer = loop.call_later(max(wait, _CLEAR_AFTER / 4), self._clear_later)
            return
        self._executor.submit(self._clear_record, self._groups)

    def _acknowledge(self, batch: list[tuple[WritePlan, asyncio.Future[StoredMessage]]],
                     results: list[StoredMessage], last: bool = False) -> None:
        """Loop thread: a group is durable; its waiters and the listeners are told.
        ``last``: the drain that wrote it ended (unless another started since)."""
        plans = [plan for plan, _ in batch]
        for plan in plans:
            self._pending_meta.pop(plan.meta.id, None)
            self._pending_raw.pop(plan.meta.id, None)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        for listener in list(self.listeners):
            try:
                listener(plans)
            except Exception:
                log.exception("store listener failed")
        if last:
            with self._queue_lock:
                again = self._draining
            if not again:
                self._drained()

    def _clear_record(self, groups: int | None = None) -> None:
        """Writer thread: drop the record if no group was written since the clear was
        asked for (``groups``); without an fsync of its own (the next commit syncs it;
        a stale record of a durable group only repeats a check that passes)."""
        if not self._recorded or groups is not None and groups != self._groups:
            return
        db = self._db
        try:
            db.execute("PRAGMA synchronous=OFF")
            try:
                unsynced.clear(db)
            finally:
                db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:  # left for the next group to replace
            log.warning("cannot clear the last group's record: %s", exc)
        self._recorded = False

    def _forget(self, plans: Sequence[WritePlan]) -> None:
        """Loop thread, after a failed group: drop its plans from the in-memory state."""
        touched: set[str] = set()
        for plan in plans:
            self._pending_meta.pop(plan.meta.id, None)
            self._pending_raw.pop(plan.meta.id, None)
            touched.update(plan.party_states, plan.memory_appends, plan.memory_rewrites)
        self._lost_ids += len(plans)
        with self._read_lock:
            for address in touched:
                row = self._read.execute("SELECT kind, state, mbox_size FROM parties "
                                         "WHERE address=?", (address,)).fetchone()
                if row is None:
                    self.parties.pop(address, None)
                    continue
                memory = [m for (m,) in self._read.execute(
                    "SELECT message FROM memory WHERE party=? ORDER BY pos", (address,))]
                self.parties[address] = _Party(row[0], json.loads(row[1]), memory, row[2])

    def _write_batch(self, plans: Sequence[WritePlan]) -> list[StoredMessage]:
        """Writer thread: write a group; on any failure undo its appends and re-raise."""
        appended: set[str] = set()
        parties: set[str] = set()
        try:
            return self._write_group(plans, appended, parties)
        except BaseException:
            if self._broken is not None:  # the index names these bytes: the restart decides
                raise
            self._uidnext.clear()  # the transaction that advanced them was rolled back
            for name in appended:
                try:
                    truncate_to(self.data_dir / name, self._files[name])
                except OSError as exc:  # the next group finds the tail and cuts it first
                    log.warning("cannot cut %s back yet: %s", name, exc.strerror)
            for party in parties:
                path = party_path(self.data_dir, party)
                path.with_name(path.name + ".tmp").unlink(missing_ok=True)
                if party in self._dirty_parties:
                    continue
                # A tail that cannot be cut now is cut before the next append to it.
                with contextlib.suppress(OSError):
                    truncate_to(path, self._party_sizes.get(party, 0))
            raise

    def _write_group(self, plans: Sequence[WritePlan], appended: set[str],
                     parties: set[str]) -> list[StoredMessage]:
        """Message files written, then synced by the fsync thread while the party files
        and the index are written; the group counts once both are durable.

        ``appended``/``parties`` say what was touched, for ``_write_batch`` to undo.
        In-memory sizes change only after both.
        """
        entries: dict[str, list[tuple[WritePlan, bytes, int]]] = {}
        framed: dict[int, bytes] = {}
        for plan in plans:
            entry, head = mbox.frame(plan.raw, plan.meta.sender, plan.meta.received_at)
            entries.setdefault(plan.file, []).append((plan, entry, head))
            framed[plan.meta.id] = entry
        offsets, sizes, spans, handles = self._append_message_files(entries, appended)
        synced = self._syncer.submit(_sync_files, self.data_dir, handles)
        # A memory rewrite keeps the serial order: its record would hold the old memory.
        serial = any(plan.memory_rewrites or plan.memory_changes for plan in plans)
        touched = {p for plan in plans for p in (*plan.memory_appends, *plan.memory_rewrites)}
        try:
            if serial:
                synced.result()
            party_sizes = self._write_party_files(plans, framed, touched, parties)
            results, record = self._index_group(plans, offsets, party_sizes,
                                                None if serial else spans)
        except BaseException:
            synced.exception()  # waits: the files are cut back next, not while being synced
            raise
        self._checkpoints.poke()
        if record is not None:
            self._await_sync(synced, record)
        self._files.update(sizes)
        self._party_sizes.update(party_sizes)
        self._dirty_parties -= touched
        return results

    def _await_sync(self, synced: Future[None], record: unsynced.GroupRecord) -> None:
        """Writer thread: the index has the group; if its bytes cannot be synced (an I/O
        error), its rows are taken back out, or the store refuses writes until a restart."""
        try:
            synced.result()
        except BaseException as exc:
            db = self._db
            try:
                db.execute("BEGIN")
                try:
                    unsynced.undo(db, record)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                self._recorded = False
            except Exception as undo_exc:
                self._broken = (f"the store needs a restart: a sync failed ({exc}) and the "
                                f"index could not be taken back ({undo_exc})")
                log.critical("%s", self._broken)
            raise

    def _append_message_files(
        self, entries: dict[str, list[tuple[WritePlan, bytes, int]]], appended: set[str]
    ) -> tuple[dict[int, tuple[int, int]], dict[str, int], dict[str, tuple[int, int, int]],
               list[tuple[int, bool]]]:
        """Append each file's framed entries in one write (synced by the caller).

        Returns ``(offset, length)`` of each message's body by id, each file's new size,
        each file's span (start, end, CRC-32) and a duplicate of each file's descriptor
        for the fsync, with whether the file is new (its directory needs one too).
        """
        offsets: dict[int, tuple[int, int]] = {}
        sizes: dict[str, int] = {}
        spans: dict[str, tuple[int, int, int]] = {}
        handles: list[tuple[int, bool]] = []
        try:
            for name, items in entries.items():
                start = self._files[name]
                appended.add(name)
                with open_append(self.data_dir / name) as f:
                    if f.tell() != start:  # a failed group's tail that could not be cut then
                        if f.tell() < start:
                            raise StoreError(f"{name} is shorter than the index says")
                        f.truncate(start)
                        f.seek(0, os.SEEK_END)
                    position = start
                    for plan, entry, head in items:
                        offsets[plan.meta.id] = (position + head, len(entry) - head - 1)
                        position += len(entry)
                    data = b"".join(entry for _, entry, _ in items)
                    f.write(data)
                    f.flush()
                    handles.append((os.dup(f.fileno()), start == 0))
                sizes[name] = position
                spans[name] = (start, position, unsynced.crc_of(data))
        except BaseException:
            for fd, _ in handles:
                os.close(fd)
            raise
        return offsets, sizes, spans, handles

    def _write_party_files(self, plans: Sequence[WritePlan], framed: dict[int, bytes],
                           touched: set[str], parties: set[str]) -> dict[str, int]:
        """Party files: rewrites (atomic replace) then appends, each file fsynced once.

        Returns each written party file's new size.
        """
        party_sizes: dict[str, int] = {}
        appends: dict[str, list[bytes]] = {}
        for party in self._dirty_parties & touched:  # a failed group rewrote it: from the index
            parties.add(party)
            party_sizes[party] = self._rewrite_party_file(party)
        for plan in plans:
            parties.update(plan.memory_appends)
            for party in plan.memory_rewrites:
                parties.add(party)
                self._dirty_parties.add(party)  # until committed, it may not match the index
                self._flush_appends(appends, party_sizes)
                party_sizes[party] = self._rewrite_party_file(party, pending=plan)
            for party in plan.memory_appends:
                appends.setdefault(party, []).append(framed[plan.meta.id])
        self._flush_appends(appends, party_sizes)
        return party_sizes

    def _index_group(
        self, plans: Sequence[WritePlan], offsets: dict[int, tuple[int, int]],
        party_sizes: dict[str, int], spans: dict[str, tuple[int, int, int]] | None,
    ) -> tuple[list[StoredMessage], unsynced.GroupRecord | None]:
        """Record the whole group in one SQLite transaction (rolled back on any error).

        With ``spans`` (the message files are not synced yet) the transaction also
        records how to take the group back (``unsynced``), which it returns.
        """
        db = self._db
        results: list[StoredMessage] = []
        next_pos: dict[str, int] = {}  # the next memory position of each party in this group
        record: unsynced.GroupRecord | None = None
        db.execute("BEGIN")
        try:
            if spans is not None:
                before = unsynced.parties_before(
                    db, dict.fromkeys(a for plan in plans for a in plan.party_states))
            for plan in plans:
                results.append(self._index_plan(plan, offsets[plan.meta.id], next_pos))
            db.executemany("UPDATE parties SET mbox_size=? WHERE address=?",
                           [(size, party) for party, size in party_sizes.items()])
            if spans is not None:
                record = self._group_record(plans, spans, results, before, party_sizes)
                unsynced.save(db, record)
            elif self._recorded:  # synced before this commit: the last record is void
                unsynced.clear(db)
            self._save_uidnext()
            db.execute("COMMIT")
        except BaseException:
            self._uidnext_unsaved.clear()
            if db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                db.execute("ROLLBACK")
            raise
        self._recorded = record is not None
        return results, record

    def _group_record(self, plans: Sequence[WritePlan], spans: dict[str, tuple[int, int, int]],
                      results: Sequence[StoredMessage],
                      before: dict[str, tuple[str, str] | None],
                      party_sizes: dict[str, int]) -> unsynced.GroupRecord:
        uids: dict[str, list[int]] = {}
        for result in results:
            for folder, uid in result.uids.items():
                uids.setdefault(folder, []).append(uid)
        return unsynced.GroupRecord(
            files=spans, ids=[plan.meta.id for plan in plans],
            memories=sorted({p for plan in plans for p in plan.memory_appends}),
            deliveries=sorted({p for plan in plans for p, _ in plan.deliveries}),
            uids=uids, completes=[p.completes for p in plans if p.completes is not None],
            parties=before,
            sizes={party: self._party_sizes.get(party, 0) for party in party_sizes})

    def _index_plan(self, plan: WritePlan, span: tuple[int, int],
                    next_pos: dict[str, int]) -> StoredMessage:
        """Inside ``_index_group``'s transaction: one plan's rows; ``next_pos`` is updated."""
        db = self._db
        meta = plan.meta
        offset, length = span
        size = len(mbox.to_lf(plan.raw))
        db.execute(
            "INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (meta.id, plan.file, offset, length, size,
             meta.message_id, meta.sender, ",".join(meta.recipients), meta.subject,
             meta.in_reply_to, meta.thread, meta.auto_round, meta.cost,
             meta.received_at, tokens_of(plan.raw) if plan.file == "trace" else 0),
        )
        for address, (kind, state) in plan.party_states.items():
            db.execute(
                "INSERT INTO parties VALUES (?,?,?,0) ON CONFLICT(address) "
                "DO UPDATE SET kind=excluded.kind, state=excluded.state",
                (address, kind, json.dumps(state)),
            )
        for party, memory in plan.memory_rewrites.items():
            db.execute("DELETE FROM memory WHERE party=?", (party,))
            db.executemany(
                "INSERT INTO memory VALUES (?,?,?)",
                [(party, pos, m) for pos, m in enumerate(memory)],
            )
            next_pos[party] = len(memory)
        for party in plan.memory_appends:
            pos = next_pos.get(party)
            if pos is None:
                pos = db.execute("SELECT COALESCE(MAX(pos)+1, 0) FROM memory "
                                 "WHERE party=?", (party,)).fetchone()[0]
            db.execute("INSERT INTO memory VALUES (?,?,?)", (party, pos, meta.id))
            next_pos[party] = pos + 1
        for party, model in plan.deliveries:
            db.execute(
                "INSERT INTO deliveries(party, message, model) VALUES (?,?,?)",
                (party, meta.id, model),
            )
        if plan.completes is not None:
            db.execute("UPDATE deliveries SET done=1 WHERE id=?", (plan.completes,))
        if plan.memory_changes:
            memory_log.record(db, meta.id, meta.received_at, meta.sender,
                              plan.edit or "rewrite", plan.memory_changes, next_pos)
        uids = {
            folder: self._file_in_folder(folder, meta.id, plan.folder_flags.get(folder, ""))
            for folder in plan.folders
        }
        return StoredMessage(meta, size, uids)

    def _file_in_folder(self, folder: str, message: int, flags: str) -> int:
        """Writer thread, inside a transaction: the next UID of ``folder``, never reused."""
        uid = self._uidnext.get(folder)
        if uid is None:
            row = self._db.execute("SELECT uidnext FROM folders WHERE name=?",
                                   (folder,)).fetchone()
            if row is None:
                raise StoreError(f"no folder {folder!r}")
            uid = row[0]
        self._db.execute("INSERT INTO folder_messages VALUES (?,?,?,?)",
                         (folder, uid, message, flags))
        self._uidnext[folder] = uid + 1
        self._uidnext_unsaved.add(folder)
        return uid

    def _save_uidnext(self) -> None:
        """Inside the transaction, before its COMMIT: the UIDNEXT of each folder filed in
        (once a group, not once a message)."""
        self._db.executemany("UPDATE folders SET uidnext=? WHERE name=?",
                             [(self._uidnext[f], f) for f in self._uidnext_unsaved])
        self._uidnext_unsaved.clear()

    async def add_to_folder(self, folder: str, items: Sequence[tuple[int, str]]) -> list[int]:
        """File stored messages (id, flags) in ``folder`` (IMAP COPY); returns their new UIDs.

        Runs in the writer thread, so UIDs are handed out in one order with commits.
        """
        def run() -> list[int]:
            self._db.execute("BEGIN")
            try:
                uids = [self._file_in_folder(folder, m, flags) for m, flags in items]
                self._save_uidnext()
                self._db.execute("COMMIT")
            except BaseException:
                self._uidnext_unsaved.clear()
                self._db.execute("ROLLBACK")
                raise
            return uids
        uids = await asyncio.get_running_loop().run_in_executor(self._executor, run)
        for listener in list(self.listeners):
            try:
                listener([])
            except Exception:
                log.exception("store listener failed")
        return uids

    def _flush_appends(self, appends: dict[str, list[bytes]], sizes: dict[str, int]) -> None:
        # Neither the file nor (when new) its directory entry is synced: a party file
        # that comes back short or missing is rewritten from the index at open.
        for party, chunks in appends.items():
            path = party_path(self.data_dir, party)
            with open_append(path) as f:
                expected = sizes.get(party, self._party_sizes.get(party, 0))
                if f.tell() > expected:  # a failed group's tail that could not be cut then
                    f.truncate(expected)
                    f.seek(0, os.SEEK_END)
                f.write(b"".join(chunks))
                sizes[party] = f.tell()
        appends.clear()

    def _rewrite_party_file(self, party: str, pending: WritePlan | None = None) -> int:
        """Write ``<party>.mbox`` anew from its memory: temp file, fsync, rename."""
        if pending is not None and party in pending.memory_rewrites:
            memory = pending.memory_rewrites[party]
        else:
            memory = [m for (m,) in self._db.execute(
                "SELECT message FROM memory WHERE party=? ORDER BY pos", (party,)
            )]
        path = party_path(self.data_dir, party)
        tmp = path.with_name(path.name + ".tmp")
        with open_new(tmp) as f:
            for number in memory:
                # A message of this same group is not indexed yet: read() finds it
                # among the planned ones (popped only after the commit).
                raw, meta = self.read(number)
                entry, _ = mbox.frame(raw, meta.sender, meta.received_at)
                f.write(entry)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
        _fsync_dir(self.data_dir)
        return size

    # -- IMAP flags: one delta, applied in the writer ---------------------------

    async def change_flags(
        self, folder: str, uids: Sequence[int], mode: str, flags: Sequence[str],
    ) -> tuple[dict[int, tuple[str, ...]], dict[int, tuple[str, ...]]]:
        """``mode`` ("add", "remove" or "replace") ``flags`` on ``uids`` of ``folder``.

        The stored flags are read and written in one transaction of the writer
        thread, so two sessions' changes to one message compose (one adds
        \\Answered, the other removes \\Seen: both happen). Flags compare
        case-insensitively; UIDs no longer in the folder are left out.

        Returns:
            (flags, changed): every found UID's flags after the change, and the
            subset that actually changed.
        """
        if mode not in ("add", "remove", "replace"):
            raise ValueError(f"unknown flag change {mode!r}")
        wanted = list(dict.fromkeys(flags))

        def run() -> tuple[dict[int, tuple[str, ...]], dict[int, tuple[str, ...]]]:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    "SELECT uid, flags FROM folder_messages WHERE folder = ? "
                    "AND uid IN (SELECT value FROM json_each(?))",
                    (folder, json.dumps(list(uids)))).fetchall()
                after: dict[int, tuple[str, ...]] = {}
                changed: dict[int, tuple[str, ...]] = {}
                for uid, text in rows:
                    base = tuple(text.split())
                    new = after[uid] = memory_log.apply_flag_change(base, mode, wanted)
                    if new != base:
                        changed[uid] = new
                db.executemany(
                    "UPDATE folder_messages SET flags = ? WHERE folder = ? AND uid = ?",
                    [(" ".join(new), folder, uid) for uid, new in changed.items()])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return after, changed

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    # -- memories as IMAP folders: flags and versions (store/memory_log.py) -----------

    async def change_memory_flags(
        self, party: str, uids: Sequence[int], mode: str, flags: Sequence[str],
    ) -> tuple[dict[int, tuple[str, ...]], dict[int, tuple[str, ...]]]:
        """:meth:`change_flags` for the messages of a memory (``Agents/<party>``)."""
        if mode not in ("add", "remove", "replace"):
            raise ValueError(f"unknown flag change {mode!r}")
        wanted = list(dict.fromkeys(flags))
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, memory_log.change_flags, self._db, party, list(uids), mode, wanted)

    def memory_flags(self, party: str, uids: Iterable[int] | None = None) -> dict[int, str]:
        """Message -> flags of the memory's messages that have some other than \\Seen."""
        with self._read_lock:
            return memory_log.flag_rows(self._read, party, uids)

    def memory_deleted(self, party: str) -> list[int]:
        with self._read_lock:
            return memory_log.deleted(self._read, party)

    def memory_history(self, party: str) -> list[MemoryEdit]:
        """The recorded edits of a party's memory, oldest first."""
        with self._read_lock:
            return memory_log.edits_of(self._read, party)

    def memory_version(self, party: str, version: int) -> list[int]:
        """The party's memory as it was just after message ``version``."""
        with self._read_lock:
            later = memory_log.edits_of(self._read, party, after=version)
        return memory_log.memory_at(self.parties[party].memory, later, version)

    # -- reading (event loop thread) --------------------------------------------

    def _load(self, number: int, conn: sqlite3.Connection) -> tuple[bytes, MessageMeta]:
        row = conn.execute(
            "SELECT file, offset, length, message_id, sender, recipients, subject, "
            "in_reply_to, thread, auto_round, cost, received_at FROM messages WHERE id=?",
            (number,),
        ).fetchone()
        if row is None:
            raise StoreError(f"message {number} is not in the index")
        name, offset, length, *rest = row
        with open(self.data_dir / name, "rb") as f:
            data = os.pread(f.fileno(), length, offset)
        return mbox.unquote(data), _meta(number, rest)

    def read(self, number: int) -> tuple[bytes, MessageMeta]:
        """The message bytes (LF line ends) and its index record."""
        # Planned, not yet indexed: from memory. Two gets, not a check and an
        # index, since the loop thread pops them after the commit.
        raw, meta = self._pending_raw.get(number), self._pending_meta.get(number)
        if raw is not None and meta is not None:
            return raw, meta
        with self._read_lock:
            return self._load(number, self._read)

    def meta(self, number: int) -> MessageMeta:
        return self.read(number)[1]

    def find_by_message_id(self, message_id: str) -> MessageMeta | None:
        with self._read_lock:
            row = self._read.execute(
                "SELECT id, message_id, sender, recipients, subject, in_reply_to, thread, "
                "auto_round, cost, received_at FROM messages WHERE message_id=? "
                "ORDER BY id LIMIT 1",
                (message_id,),
            ).fetchone()
        return None if row is None else _meta(row[0], row[1:])

    def metas(self, numbers: Iterable[int]) -> list[MessageMeta]:
        wanted = list(numbers)
        if not wanted:
            return []
        pending = {n: self._pending_meta[n] for n in wanted if n in self._pending_meta}
        with self._read_lock:
            rows = self._read.execute(
                "SELECT id, message_id, sender, recipients, subject, in_reply_to, thread, "
                f"auto_round, cost, received_at FROM messages WHERE id IN ({_marks(wanted)})",
                wanted,
            ).fetchall()
        by_id = {row[0]: _meta(row[0], row[1:]) for row in rows} | pending
        return [by_id[n] for n in wanted if n in by_id]

    def pending_deliveries(self, party: str) -> list[Delivery]:
        with self._read_lock:
            rows = self._read.execute(
                "SELECT id, party, message, model FROM deliveries "
                "WHERE party=? AND done=0 ORDER BY id",
                (party,),
            ).fetchall()
        return [Delivery(*row) for row in rows]

    def parties_with_pending(self) -> list[str]:
        with self._read_lock:
            rows = self._read.execute(
                "SELECT DISTINCT party FROM deliveries WHERE done=0"
            ).fetchall()
        return [party for (party,) in rows]

    def spent(self, sender: str | None = None) -> float:
        with self._read_lock:
            if sender is None:
                row = self._read.execute("SELECT COALESCE(SUM(cost), 0) FROM messages").fetchone()
            else:
                row = self._read.execute(
                    "SELECT COALESCE(SUM(cost), 0) FROM messages WHERE sender=?", (sender,)
                ).fetchone()
        return float(row[0])

    def tokens_after(self, number: int) -> tuple[int, dict[str, int]]:
        """Tokens spent per sender by the trace's messages after id ``number``.

        Returns:
            (top, spent): the highest id indexed (count from there next time), and
            sender -> tokens of the messages in ``number < id <= top`` that cost any.
        """
        with self._read_lock:
            (top,) = self._read.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
            rows = self._read.execute(
                "SELECT sender, SUM(tokens) FROM messages WHERE id > ? AND id <= ? "
                "AND file = 'trace' AND tokens > 0 GROUP BY sender", (number, top)).fetchall()
        return max(int(top), number), {sender: int(total) for sender, total in rows}

    @property
    def closed(self) -> bool:
        return self._closed

    def release_memory(self, then: Callable[[], None] | None = None) -> None:
        """Loop thread: SQLite's page caches of the read, writer and checkpoint
        connections back to the allocator (reads fill them again), then ``then`` (in
        the checkpoint thread, after the others): for when the clients have gone."""
        if self._closed:  # its connections are gone
            return
        with self._read_lock:
            self._read.execute("PRAGMA shrink_memory")

        def writer() -> None:
            self._db.execute("PRAGMA shrink_memory")  # between groups: no transaction open
            self._checkpoints.shrink(then)
        self._executor.submit(writer)

    def message_count(self) -> int:
        return self._next_id - 1 - self._lost_ids

    def message_ids(self, numbers: Iterable[int]) -> dict[int, str]:
        """Store id -> Message-ID of those of ``numbers`` that are indexed."""
        with self._read_lock:
            rows = self._read.execute(
                "SELECT id, message_id FROM messages WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(numbers)),)).fetchall()
        return dict(rows)

    def senders_after(self, number: int, file: str = "trace") -> list[tuple[int, str]]:
        """``(id, sender)`` of the messages of ``file`` after id ``number``, in order."""
        with self._read_lock:
            return self._read.execute(
                "SELECT id, sender FROM messages WHERE id > ? AND file = ? ORDER BY id",
                (number, file)).fetchall()

    def pending_count(self) -> int:
        """Deliveries not done yet, of every party."""
        with self._read_lock:
            (count,) = self._read.execute(
                "SELECT COUNT(*) FROM deliveries WHERE done=0").fetchone()
        return int(count)

    async def mark_delivery_done(self, delivery: int) -> None:
        """A delivery that is over without a reply (its reply marks it in its own commit)."""
        def run() -> None:
            self._db.execute("UPDATE deliveries SET done=1 WHERE id=?", (delivery,))
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the index: {exc}") from exc

    # -- closing ---------------------------------------------------------------

    async def aclose(self) -> None:
        self._closed = True
        if self._idle is not None:
            await asyncio.shield(self._idle.wait())  # the queue written
        if self._clear_timer is not None:
            self._clear_timer.cancel()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._clear_record)
        self._executor.shutdown(wait=True)
        self._syncer.shutdown(wait=True)
        self._checkpoints.close()
        self._db.close()
        self._read.close()
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None


def _meta(number: int, row: Sequence[Any]) -> MessageMeta:
    message_id, sender, recipients, subject, in_reply_to, thread, auto_round, cost, when = row
    return MessageMeta(
        id=number,
        message_id=message_id,
        sender=sender,
        recipients=tuple(r for r in recipients.split(",") if r),
        subject=subject,
        in_reply_to=in_reply_to,
        thread=thread,
        auto_round=auto_round,
        cost=cost,
        received_at=when,
    )


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _lock_data_dir(data_dir: Path) -> int:
    """One process per data directory: a second would "recover" the first's writes."""
    fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise StoreError(f"the data directory {data_dir} is in use by another mailcoach "
                         f"process (pid {holder}); stop it first or use another --data-dir"
                         ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


# The data and what reading it back needs (the size of an appended file), not the times:
# fdatasync where there is one (Linux), one journal write fewer than fsync.
_datasync = getattr(os, "fdatasync", os.fsync)


def _sync_files(data_dir: Path, handles: list[tuple[int, bool]]) -> None:
    """The fsync thread: sync (and close) the descriptors; a new file's directory too."""
    try:
        for fd, new in handles:
            _datasync(fd)
            if new:
                _fsync_dir(data_dir)
    finally:
        for fd, _ in handles:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
