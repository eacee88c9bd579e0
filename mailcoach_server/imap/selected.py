"""The selected mailbox as one session knows it: sequence numbers, pending news.

RFC 3501 §2.3.1.2 ties sequence numbers to what the client has been told,
not to the store: a message another session expunged keeps its number here
until this session reports the EXPUNGE (and its bytes can still be fetched,
because the files never lose a message). So each session keeps a snapshot:
the UIDs it has been told about, ascending, in a compact ``array('I')`` (4
bytes a message: a million-message folder is 4 MB, read off the event loop
at SELECT). Sequence number ``n`` is position ``n - 1``; everything else
(flags, where the bytes are) is read from the store when a command needs it,
a batch of UIDs at a time by UID range, so a command costs what it touches,
not what the folder holds. Rows another session is expunging are handed to
this one first (:meth:`SelectedMailbox.on_expunging`) and kept until the
EXPUNGE is reported.

The :class:`~mailcoach_server.imap.hub.Hub` tells the session what changed:
new messages (fetched with one ``uid > last`` query), flag changes and
expunges from other sessions (carried in the notice), or "look again" (a
rewritten memory, a deleted folder). :meth:`SelectedMailbox.poll` turns the
pending news into untagged responses, expunges only when the command in
progress allows them (not during FETCH, STORE or SEARCH: RFC 3501 §7.4.1).
"""

from __future__ import annotations

import asyncio
import bisect
from array import array
from collections.abc import Iterable, Iterator, Sequence

from ..store.folders import BriefRow
from .folders import Catalogue, Folder, Row, Snapshot
from .responses import Exists, Expunge, FetchResponse, Flags, Recent, ResponseCode, Untagged
from .sequence import SequenceSet
from .wire import format_list

__all__ = ["PERMANENT_FLAGS", "SYSTEM_FLAGS", "SelectedMailbox", "flag_items"]

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
PERMANENT_FLAGS = (*SYSTEM_FLAGS, "\\*")

Span = tuple[int, int]  # [start, stop) positions in the snapshot


def flag_items(flags: Iterable[str]) -> bytes:
    return format_list(f.encode("ascii", "replace") for f in flags)


def _keywords(flags: Iterable[str]) -> set[str]:
    return {f for f in flags if not f.startswith("\\")}


def _missing(ours: Sequence[int], current: Sequence[int]) -> list[int]:
    """UIDs of ``ours`` not in ``current`` (both ascending): one merge, no set of either."""
    gone: list[int] = []
    j, size = 0, len(current)
    for uid in ours:
        while j < size and current[j] < uid:
            j += 1
        if j == size or current[j] != uid:
            gone.append(uid)
    return gone


class SelectedMailbox:
    """One session's snapshot of its selected folder (a :class:`Watcher` for the hub)."""

    def __init__(self, catalogue: Catalogue, folder: Folder, snapshot: Snapshot, *,
                 read_only: bool) -> None:
        self.catalogue = catalogue
        self.folder = folder
        self.read_only = read_only
        self.uids: array[int] = snapshot.uids
        self.last_uid = self.uids[-1] if self.uids else 0
        self.keywords = set(snapshot.keywords)
        self._first_unseen = snapshot.first_unseen
        #: UIDs this session is the first to see (RFC 3501 §2.3.2 \Recent); an EXAMINE
        #: sees them too but leaves them recent for the next SELECT
        self.recent = catalogue.claim_recent(folder, self.uids, claim=not read_only)
        #: set when there is news to report; IDLE waits on it
        self.changed = asyncio.Event()
        # The snapshot was read off the loop: mail that came meanwhile is looked for
        # with the first poll (one range query).
        self._appended = True
        self._rescan = False
        self._flags: dict[int, tuple[str, ...]] = {}
        self._expunged: set[int] = set()
        #: rows another session expunges, fetchable until the EXPUNGE is reported here
        self._ghosts: dict[int, Row] = {}

    @classmethod
    async def open(cls, catalogue: Catalogue, folder: Folder, *,
                   read_only: bool) -> SelectedMailbox:
        return cls(catalogue, folder, await catalogue.snapshot(folder), read_only=read_only)

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def name(self) -> str:
        return self.folder.name

    def holds(self, uid: int) -> bool:
        """Is ``uid`` in what this session was told?"""
        i = bisect.bisect_left(self.uids, uid)
        return i < len(self.uids) and self.uids[i] == uid

    # -- what SELECT says --------------------------------------------------------------

    def flags_of(self, row: Row) -> tuple[str, ...]:
        """What FETCH FLAGS says: the stored flags, and \\Recent for this session."""
        return (*row.flags, "\\Recent") if row.uid in self.recent else row.flags

    def flags_response(self) -> Flags:
        return Flags((*SYSTEM_FLAGS, *sorted(self.keywords)))

    def permanent_flags(self) -> Untagged:
        flags = () if self.read_only else PERMANENT_FLAGS
        return Untagged.ok("flags that stick", ResponseCode.permanent_flags(flags))

    def first_unseen(self) -> int | None:
        uid = self._first_unseen
        if uid is None or not self.holds(uid):
            return None
        return bisect.bisect_left(self.uids, uid) + 1

    # -- addressing --------------------------------------------------------------------

    def seq_of(self, uid: int) -> int:
        return bisect.bisect_left(self.uids, uid) + 1

    def spans(self, numbers: SequenceSet, *, uid: bool) -> list[Span]:
        """The positions a sequence set names, as ascending ``[start, stop)`` ranges.

        Raises:
            ValueError: a sequence number beyond the mailbox (RFC 3501 §9: BAD).
        """
        if uid:
            return numbers.uid_spans(self.uids)
        if not numbers.uses_star and numbers.highest(self.exists) > self.exists:
            raise ValueError("no such message sequence number")
        return numbers.seq_spans(self.exists)

    def every(self) -> list[Span]:
        return [(0, self.exists)] if self.uids else []

    def rows(self, start: int, stop: int) -> list[tuple[int, Row]]:
        """``(seq, row)`` of positions ``start..stop-1``: one range query.

        A message expunged meanwhile comes from the rows handed over before it went.
        """
        uids = self.uids[start:stop]
        if not uids:
            return []
        rows = self.catalogue.rows(self.folder, uids[0] - 1, uids[-1])
        if len(rows) == len(uids):
            # The store's UIDs in this range are a subset of the snapshot's (a new
            # message gets a UID above them all): as many means the same ones.
            return list(enumerate(rows, start + 1))
        found = {row.uid: row for row in rows}
        out = []
        for seq, uid in enumerate(uids, start + 1):
            row = found.get(uid) or self._ghosts.get(uid)
            if row is not None:
                out.append((seq, row))
        return out

    def brief_rows(self, start: int, stop: int) -> list[BriefRow] | None:
        """The store's brief rows of positions ``start..stop-1`` (sequence numbers from
        ``start + 1``), or None when they are not exactly the snapshot's (a message
        expunged meanwhile, a memory): then :meth:`rows` it is."""
        uids = self.uids[start:stop]
        if not uids:
            return []
        rows = self.catalogue.brief_rows(self.folder, uids[0] - 1, uids[-1])
        # a subset of the snapshot's UIDs (see rows): as many means the same ones
        return rows if rows is not None and len(rows) == len(uids) else None

    @staticmethod
    def ranges(spans: Iterable[Span], size: int, first: int = 0) -> Iterator[Span]:
        """``spans`` cut into ranges of at most ``size`` positions; with ``first``, the
        first range is at most that long and each next one twice the last, up to
        ``size`` (a client reads the first lines while the longer ones are made)."""
        if size < 1:
            raise ValueError(f"ranges of {size} positions")
        step = min(first, size) or size
        for start, stop in spans:
            low = start
            while low < stop:  # step >= 1: ends
                yield low, min(stop, low + step)
                low += step
                step = min(step * 2, size)

    def batches(self, spans: Iterable[Span], size: int) -> Iterator[list[tuple[int, Row]]]:
        """The rows of ``spans``, ``size`` at a time, each batch read when it is reached."""
        for start, stop in self.ranges(spans, size):
            yield self.rows(start, stop)

    def targets(self, spans: Iterable[Span]) -> list[tuple[int, Row]]:
        """Every ``(seq, row)`` of ``spans`` (STORE, COPY: work on all of them at once)."""
        return [item for batch in self.batches(spans, 4096) for item in batch]

    # -- changes made by this session ------------------------------------------------------

    def note_keywords(self, flags: Iterable[str]) -> bool:
        """Remember keywords seen in stored flags; True when one is new (say FLAGS first)."""
        new = _keywords(flags) - self.keywords
        self.keywords |= new
        return bool(new)

    def set_flags(self, changes: dict[int, tuple[str, ...]], *, own: bool = False) -> bool:
        """Record flags; True when a new keyword appeared (say FLAGS before any FETCH).

        ``own``: this session just stored them, so they are newer than any notice
        still pending for those UIDs (the store's writer applies changes in order).
        """
        new_keyword = False
        for uid, flags in changes.items():
            if own:
                self._flags.pop(uid, None)
            ghost = self._ghosts.get(uid)
            if ghost is not None:
                ghost.flags = flags
            new_keyword |= self.note_keywords(flags)
        return new_keyword

    def remove(self, uids: Iterable[int]) -> list[bytes]:
        """Drop messages (expunged by this session): their EXPUNGE responses.

        Said from the highest number down, so no number shifts under the next one.
        """
        gone = {u for u in set(uids) if self.holds(u)}
        if not gone:
            return []
        positions = sorted(bisect.bisect_left(self.uids, u) for u in gone)
        kept: array[int] = array("I")
        previous = 0
        for i in positions:  # slices between the gaps: copies in C, not a loop per message
            kept.extend(self.uids[previous:i])
            previous = i + 1
        kept.extend(self.uids[previous:])
        self.uids = kept
        for uid in gone:
            self._ghosts.pop(uid, None)
        self.recent -= gone
        return [bytes(Expunge(i + 1)) for i in reversed(positions)]

    # -- news from the hub (Watcher) ----------------------------------------------------

    def on_appended(self) -> None:
        self._appended = True
        self.changed.set()

    def on_rescan(self) -> None:
        self._rescan = True
        self.changed.set()

    def on_flags(self, changes: dict[int, tuple[str, ...]]) -> None:
        self._flags.update(changes)
        self.changed.set()

    def on_expunging(self, rows: Sequence[Row]) -> None:
        """Another session is about to expunge ``rows``: keep them until it is reported.

        All of them: one this session has not heard of yet may still reach it (a poll
        for new mail) before the expunge is written.
        """
        for row in rows:
            self._ghosts[row.uid] = row

    def on_expunged(self, uids: Sequence[int]) -> None:
        for uid in uids:
            if not self.holds(uid):  # never told of it, and it cannot come now: not needed
                self._ghosts.pop(uid, None)
        self._expunged.update(uids)
        self.changed.set()

    def poll(self, *, expunge: bool = True) -> list[bytes]:
        """Untagged responses for everything pending (EXPUNGE only if ``expunge``)."""
        self.changed.clear()
        out: list[bytes] = []
        if self._rescan and expunge:
            self._rescan = self._appended = False
            out += self.remove(_missing(self.uids, self.catalogue.uids(self.folder)))
            out += self._add(self.catalogue.rows(self.folder, self.last_uid))
        elif self._appended or self._rescan:
            self._appended = False
            out += self._add(self.catalogue.rows(self.folder, self.last_uid))
        if self._expunged and expunge:
            out += self.remove(self._expunged)
            self._expunged.clear()
        if self._flags:
            changes = {u: f for u, f in self._flags.items()
                       if u not in self._expunged and self.holds(u)}
            self._flags.clear()
            if self.set_flags(changes):
                out.append(bytes(self.flags_response()))
            for uid in sorted(changes):
                shown = flag_items((*changes[uid], "\\Recent") if uid in self.recent
                                   else changes[uid])
                items = ((b"UID", b"%d" % uid), (b"FLAGS", shown))
                out.append(bytes(FetchResponse(self.seq_of(uid), items)))
        if self._rescan or (self._expunged and not expunge):
            self.changed.set()  # still owed once expunges may be said
        return out

    def _add(self, rows: list[Row]) -> list[bytes]:
        rows = [row for row in rows if row.uid > self.last_uid]
        if not rows:
            return []
        fresh = [row.uid for row in rows]
        self.uids.extend(fresh)
        self.last_uid = fresh[-1]
        self.recent |= self.catalogue.claim_recent(self.folder, fresh,
                                                   claim=not self.read_only)
        out = []
        if self.note_keywords(f for row in rows for f in row.flags):
            out.append(bytes(self.flags_response()))
        out += [bytes(Exists(self.exists)), bytes(Recent(len(self.recent)))]
        return out
