"""The selected mailbox as one session knows it: sequence numbers, flags, pending news.

RFC 3501 §2.3.1.2 ties sequence numbers to what the client has been told,
not to the store: a message another session expunged keeps its number here
until this session reports the EXPUNGE (and its bytes can still be fetched,
because the files never lose a message). So each session keeps a snapshot
(UIDs ascending, a :class:`~mailcoach_server.imap.folders.Row` each) and the
:class:`~mailcoach_server.imap.hub.Hub` tells it what changed: new
messages (fetched with one ``uid > last`` query), flag changes and expunges
from other sessions (carried in the notice), or "look again" (a rewritten
memory, a deleted folder).

:meth:`SelectedMailbox.poll` turns the pending news into untagged
responses, expunges only when the command in progress allows them (not
during FETCH, STORE or SEARCH: RFC 3501 §7.4.1).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable, Sequence

from .folders import Catalogue, Folder, Row
from .responses import Exists, Expunge, FetchResponse, Flags, Recent, ResponseCode, Untagged
from .sequence import SequenceSet
from .wire import format_list

__all__ = ["PERMANENT_FLAGS", "SYSTEM_FLAGS", "SelectedMailbox", "flag_items"]

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
PERMANENT_FLAGS = (*SYSTEM_FLAGS, "\\*")


def flag_items(flags: Iterable[str]) -> bytes:
    return format_list(f.encode("ascii", "replace") for f in flags)


class SelectedMailbox:
    """One session's snapshot of its selected folder (a :class:`Watcher` for the hub)."""

    def __init__(self, catalogue: Catalogue, folder: Folder, rows: list[Row], *,
                 read_only: bool) -> None:
        self.catalogue = catalogue
        self.folder = folder
        self.read_only = read_only
        self.uids = [row.uid for row in rows]
        self.rows = {row.uid: row for row in rows}
        self.last_uid = self.uids[-1] if self.uids else 0
        self.keywords = self._keywords(rows)
        #: UIDs this session is the first to see (RFC 3501 §2.3.2 \Recent); an EXAMINE
        #: sees them too but leaves them recent for the next SELECT
        self.recent = catalogue.claim_recent(folder, self.uids, claim=not read_only)
        #: set when there is news to report; IDLE waits on it
        self.changed = asyncio.Event()
        self._appended = False
        self._rescan = False
        self._flags: dict[int, tuple[str, ...]] = {}
        self._expunged: set[int] = set()

    @staticmethod
    def _keywords(rows: Iterable[Row]) -> set[str]:
        return {f for row in rows for f in row.flags if not f.startswith("\\")}

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def name(self) -> str:
        return self.folder.name

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
        for seq, uid in enumerate(self.uids, 1):
            if "\\Seen" not in self.rows[uid].flags:
                return seq
        return None

    # -- addressing --------------------------------------------------------------------

    def seq_of(self, uid: int) -> int:
        return bisect.bisect_left(self.uids, uid) + 1

    def resolve(self, numbers: SequenceSet, *, uid: bool) -> list[tuple[int, Row]]:
        """``(seq, row)`` for each message a sequence set names, ascending.

        Raises:
            ValueError: a sequence number beyond the mailbox (RFC 3501 §9: BAD).
        """
        if uid:
            uids = numbers.iter_uids(self.uids)
            return [(self.seq_of(u), self.rows[u]) for u in uids]
        if not numbers.uses_star and numbers.highest(self.exists) > self.exists:
            raise ValueError("no such message sequence number")
        return [(s, self.rows[self.uids[s - 1]]) for s in numbers.iter_seq(self.exists)]

    def all(self) -> list[tuple[int, Row]]:
        return [(seq, self.rows[uid]) for seq, uid in enumerate(self.uids, 1)]

    # -- changes made by this session ------------------------------------------------------

    def set_flags(self, changes: dict[int, tuple[str, ...]], *, own: bool = False) -> bool:
        """Record flags; True when a new keyword appeared (say FLAGS before any FETCH).

        ``own``: this session just stored them, so they are newer than any notice
        still pending for those UIDs (the store's writer applies changes in order).
        """
        new_keyword = False
        for uid, flags in changes.items():
            if own:
                self._flags.pop(uid, None)
            row = self.rows.get(uid)
            if row is not None:
                row.flags = flags
            for f in flags:
                if not f.startswith("\\") and f not in self.keywords:
                    self.keywords.add(f)
                    new_keyword = True
        return new_keyword

    def remove(self, uids: Iterable[int]) -> list[bytes]:
        """Drop messages (expunged by this session): their EXPUNGE responses.

        Said from the highest number down, so no number shifts under the next one.
        """
        gone = set(uids) & self.rows.keys()
        if not gone:
            return []
        seqs = [seq for seq, uid in enumerate(self.uids, 1) if uid in gone]
        self.uids = [uid for uid in self.uids if uid not in gone]
        for uid in gone:
            del self.rows[uid]
        self.recent -= gone
        return [bytes(Expunge(seq)) for seq in reversed(seqs)]

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

    def on_expunged(self, uids: Sequence[int]) -> None:
        self._expunged.update(uids)
        self.changed.set()

    def poll(self, *, expunge: bool = True) -> list[bytes]:
        """Untagged responses for everything pending (EXPUNGE only if ``expunge``)."""
        self.changed.clear()
        out: list[bytes] = []
        if self._rescan and expunge:
            self._rescan = self._appended = False
            current = {row.uid: row for row in self.catalogue.rows(self.folder)}
            gone = [u for u in self.uids if u not in current]
            out += self.remove(gone)
            for uid, row in current.items():
                if uid in self.rows and self.rows[uid].flags != row.flags:
                    self._flags[uid] = row.flags
            fresh = [row for uid, row in current.items() if uid > self.last_uid]
            out += self._add(fresh)
        elif self._appended or self._rescan:
            self._appended = False
            out += self._add(self.catalogue.rows(self.folder, self.last_uid))
        if self._expunged and expunge:
            out += self.remove(self._expunged)
            self._expunged.clear()
        if self._flags:
            changes = {u: f for u, f in self._flags.items()
                       if u in self.rows and u not in self._expunged}
            self._flags.clear()
            if self.set_flags(changes):
                out.append(bytes(self.flags_response()))
            for uid in sorted(changes):
                shown = flag_items(self.flags_of(self.rows[uid]))
                items = ((b"UID", b"%d" % uid), (b"FLAGS", shown))
                out.append(bytes(FetchResponse(self.seq_of(uid), items)))
        if self._rescan or (self._expunged and not expunge):
            self.changed.set()  # still owed once expunges may be said
        return out

    def _add(self, rows: list[Row]) -> list[bytes]:
        rows = [row for row in rows if row.uid > self.last_uid]
        if not rows:
            return []
        for row in rows:
            self.uids.append(row.uid)
            self.rows[row.uid] = row
        self.last_uid = rows[-1].uid
        self.recent |= self.catalogue.claim_recent(
            self.folder, [row.uid for row in rows], claim=not self.read_only)
        out = []
        if self._new_keywords(rows):
            out.append(bytes(self.flags_response()))
        out += [bytes(Exists(self.exists)), bytes(Recent(len(self.recent)))]
        return out

    def _new_keywords(self, rows: Iterable[Row]) -> bool:
        new = self._keywords(rows) - self.keywords
        self.keywords |= new
        return bool(new)
