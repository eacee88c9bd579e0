"""The user's IMAP folders over the store: real folders and ``Agents/<address>``.

Real folders live in the store's folder index (``store.folders``, a
:class:`~mailcoach_server.store.folders.FolderIndex`: UIDs handed out by the
store's writer, flags as a space-separated string); this module calls its
named operations and holds no SQL. ``Trace`` is real but read-only. ``Agents/<address>``
folders are virtual: a party's memory, in order, the UID of a message
being its store id (ascending within a memory), so a message that leaves a
memory (X-Rollback) is simply gone (expunged). Their UIDVALIDITY and
UIDNEXT high-water mark live in a folder record created the first time the
folder is opened, so they survive restarts. An agent's folder is editable
(``runtime.memory_edits`` makes the plans): EXPUNGE takes messages out of
the memory, APPEND and COPY add new copies at the end, CREATE of
``Agents/<new address>`` makes an agent; its flags are the store's memory
flags (a message nobody flagged is \\Seen). Other parties' folders
(robots, the user) and a catalogue without an editor stay read-only.

Folder names are limited as Dovecot limits them, so that no tree a client
can build makes LIST (or CREATE itself) slow: at most
:data:`MAX_FOLDER_DEPTH` levels, :data:`MAX_FOLDER_NAME` bytes (UTF-8) in
all, and :data:`MAX_FOLDERS` folders of the user's own; past them CREATE and
RENAME answer ``NO [LIMIT]``.

\\Recent (RFC 3501 §2.3.2) is the catalogue's too: per folder, the highest
UID some session has already been told about. A session that selects the
folder read-write (or hears of new mail) claims what is above it; the
mark lives as long as the server process (at start, what is there is not
recent).

Not here: LIST (``listing``), change notices (``hub``), sequence numbers and
what a session was told (``selected``), IMAP command semantics (``commands``).
"""

from __future__ import annotations

import asyncio
import bisect
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, ParamSpec, TypeVar

from ..runtime.memory_edits import MemoryEditError, MemoryEditor
from ..store.folders import BriefRow, FolderRow
from ..store.store import Store
from .responses import Cannot, LimitExceeded, MailboxExists, MailboxNotFound, NoPermission

__all__ = [
    "AGENTS", "DELIMITER", "MAX_FOLDERS", "MAX_FOLDER_DEPTH", "MAX_FOLDER_NAME", "PROTECTED",
    "Catalogue", "Folder", "Row", "Snapshot", "flags_text",
]

#: Levels of a folder name (``a/b/c`` has 3); Dovecot's default is 16 as well.
MAX_FOLDER_DEPTH: Final = 16
#: Bytes of a whole folder name, UTF-8 (Dovecot: 255 per level; ours is for the whole path).
MAX_FOLDER_NAME: Final = 255
#: Folders of the user's own (Agents/ views are not counted).
MAX_FOLDERS: Final = 2000

AGENTS = "Agents"
DELIMITER = "/"
#: Folders the router files mail into: never deleted, only INBOX renamed (RFC 3501 §6.3.5).
PROTECTED = frozenset({"INBOX", "Sent", "Drafts", "Trash", "Trace"})
_READ_ONLY = frozenset({"Trace"})
_SEEN = ("\\Seen",)


@lru_cache(maxsize=1024)
def _flag_tuple(text: str) -> tuple[str, ...]:
    """The flags of a stored flags text: a folder has a few texts for many rows."""
    return tuple(text.split())


def flags_text(flags: Iterable[str]) -> str:
    """Flags as the index stores them."""
    return " ".join(flags)


@dataclass(frozen=True, slots=True)
class Folder:
    """One selectable folder as of when it was looked up."""

    name: str
    uidvalidity: int
    uidnext: int
    special: str = ""
    #: the party whose memory an ``Agents/<address>`` folder shows
    party: str | None = None
    #: an agent's memory that clients may edit
    editable: bool = False

    @property
    def read_only(self) -> bool:
        return (self.party is not None and not self.editable) or self.name in _READ_ONLY


@dataclass(slots=True)
class Row:
    """A message in a folder: its UID, flags and where its bytes are."""

    uid: int
    message: int
    flags: tuple[str, ...]
    file: str
    offset: int
    length: int
    received_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What SELECT needs of a folder, read without a row per message in Python."""

    #: every UID, ascending (4 bytes each)
    uids: array[int]
    #: keywords (flags without a backslash) some message carries
    keywords: frozenset[str]
    #: the lowest UID without \Seen, if any
    first_unseen: int | None


_TOP = 2**32 - 1


def _inbox_folded(name: str) -> str:
    head, sep, rest = name.partition(DELIMITER)
    return "INBOX" + sep + rest if head.upper() == "INBOX" else name


class Catalogue:
    """Folder names, attributes and contents over one :class:`Store`."""

    def __init__(self, store: Store, editor: MemoryEditor | None = None) -> None:
        self.store = store
        self.index = store.folders
        #: plans for edits of agents' memories; None: every Agents/ folder is read-only
        self.editor = editor
        #: uidvalidity of folders deleted or renamed away in this process, so a new
        #: folder of the same name never reuses it (it is seconds since the epoch)
        self._retired: dict[str, int] = {}
        #: (folder, uidvalidity) -> highest UID a session has been told is new;
        #: what is in a folder when the server starts is not recent
        self._recent_mark: dict[tuple[str, int], int] = {
            (f.name, f.uidvalidity): f.uidnext - 1 for f in self.index.list_folders()}

    # -- lookup ------------------------------------------------------------------------

    def _party(self, name: str) -> str | None:
        if not name.startswith(AGENTS + DELIMITER):
            return None
        party = name[len(AGENTS) + 1 :]
        return party if party in self.store.parties else None

    def _row(self, name: str) -> tuple[int, int, str, int] | None:
        record = self.index.get(name)
        if record is None:
            return None
        return record.uidvalidity, record.uidnext, record.special, int(record.subscribed)

    async def folder(self, name: str) -> Folder:
        """The folder called ``name``.

        Raises:
            MailboxNotFound: there is none.
            Cannot: ``Agents`` itself (a folder of folders, \\Noselect).
        """
        if name == AGENTS:
            raise Cannot(f"{AGENTS} holds one folder per party and no mail itself")
        party = self._party(name)
        if party is not None:
            return await self._virtual(name, party)
        if name.startswith(AGENTS + DELIMITER):
            raise MailboxNotFound(f"no party {name[len(AGENTS) + 1 :]!r}")
        row = self._row(name)
        if row is None:
            raise MailboxNotFound(f"no mailbox {name!r}")
        validity, uidnext, special, _ = row
        return Folder(name, validity, uidnext, special)

    async def _virtual(self, name: str, party: str) -> Folder:
        self.store.ensure_folder(name)  # once per folder: UIDVALIDITY that survives restarts
        row = self._row(name)
        assert row is not None
        validity, stored_next, _, _ = row
        uidnext = max(stored_next, self.index.memory_top(party) + 1)
        if uidnext > stored_next:  # a high-water mark: UIDNEXT never goes back
            await self.index.raise_uidnext(name, uidnext)
        editable = self.editor is not None and self.editor.is_agent(party)
        return Folder(name, validity, uidnext, party=party, editable=editable)

    def uids(self, folder: Folder) -> array[int]:
        """Every UID of the folder, ascending (safe to call from a thread)."""
        if folder.party is not None:
            return self.index.memory_uids(folder.party)
        return self.index.folder_uids(folder.name)

    async def snapshot(self, folder: Folder) -> Snapshot:
        """The folder as SELECT shows it; the UID list is read off the event loop."""
        uids = await asyncio.to_thread(self.uids, folder)
        if folder.read_only:  # archives: everything is \Seen, no keywords
            return Snapshot(uids, frozenset(), None)
        if folder.party is not None:
            return self._memory_snapshot(folder.party, uids)
        sets = {text: text.split() for text in self.index.flag_sets(folder.name)}
        keywords = frozenset(f for flags in sets.values() for f in flags
                             if not f.startswith("\\"))
        unseen = [self.index.first_uid_with(folder.name, text)
                  for text, flags in sets.items() if "\\Seen" not in flags]
        return Snapshot(uids, keywords, min((u for u in unseen if u is not None), default=None))

    def _memory_snapshot(self, party: str, uids: array[int]) -> Snapshot:
        flagged = {uid: text.split() for uid, text in self.store.memory_flags(party).items()}
        keywords = frozenset(f for flags in flagged.values() for f in flags
                             if not f.startswith("\\"))
        unseen = [uid for uid, flags in flagged.items() if "\\Seen" not in flags]
        return Snapshot(uids, keywords, min(unseen, default=None))

    def rows(self, folder: Folder, after: int = 0, upto: int = _TOP) -> list[Row]:
        """The folder's messages with ``after < UID <= upto``, by UID."""
        if folder.party is not None:
            raw = self.index.memory_rows(folder.party, after, upto)
        else:
            raw = self.index.folder_rows(folder.name, after, upto)
        if folder.read_only:  # archives: nothing to read, nothing to mark
            return [Row(u, m, _SEEN, f, o, n, r) for u, m, _, f, o, n, r in raw]
        if folder.party is not None:
            return self._memory_rows(folder.party, raw)
        return [Row(u, m, _flag_tuple(fl), f, o, n, r) for u, m, fl, f, o, n, r in raw]

    def brief_rows(self, folder: Folder, after: int, upto: int) -> list[BriefRow] | None:
        """``(uid, message, flags text, received_at)`` of ``after < UID <= upto``, by UID:
        :meth:`rows` without where the bytes are, for a FETCH the header cache answers.
        None for a memory (its flags are kept apart)."""
        if folder.party is not None:
            return None
        raw = self.index.brief_rows(folder.name, after, upto)
        if folder.read_only:  # archives: everything is \Seen
            return [(u, m, "\\Seen", r) for u, m, _, r in raw]
        return raw

    def _memory_rows(self, party: str, raw: Sequence[FolderRow]) -> list[Row]:
        flagged = self.store.memory_flags(party, [u for u, *_ in raw]) if raw else {}
        return [Row(u, m, tuple(flagged[u].split()) if u in flagged else _SEEN, f, o, n, r)
                for u, m, _, f, o, n, r in raw]

    def rows_of(self, folder: Folder, uids: Sequence[int]) -> list[Row]:
        """The rows of exactly ``uids`` (read before they are expunged)."""
        if folder.party is not None:
            wanted = set(uids)
            rows = self.rows(folder, min(wanted) - 1, max(wanted)) if wanted else []
            return [row for row in rows if row.uid in wanted]
        return [Row(u, m, _flag_tuple(fl), f, o, n, r)
                for u, m, fl, f, o, n, r in self.index.folder_rows_of(folder.name, uids)]

    def counts(self, folder: Folder) -> tuple[int, int]:
        """``(messages, unseen)`` for STATUS."""
        if folder.party is not None:
            unseen = 0 if folder.read_only else sum(
                "\\Seen" not in text.split()
                for text in self.store.memory_flags(folder.party).values())
            return self.index.memory_count(folder.party), unseen
        count, unseen = self.index.counts(folder.name, "\\Seen")
        return count, 0 if folder.read_only else unseen

    def claim_recent(self, folder: Folder, uids: Sequence[int], *, claim: bool) -> set[int]:
        """Which of ``uids`` (ascending) no session has been told about yet; with ``claim``,
        this session is now the one (they are recent for it alone)."""
        if folder.read_only or folder.party is not None or not uids:
            return set()  # Trace and memories are archives: nothing is new
        key = (folder.name, folder.uidvalidity)
        mark = self._recent_mark.get(key, 0)
        fresh = set(uids[bisect.bisect_right(uids, mark):])  # only what is above the mark
        if claim and uids[-1] > mark:
            self._recent_mark[key] = uids[-1]
        return fresh

    def unclaimed_recent(self, folder: Folder) -> int:
        """STATUS RECENT: messages no session has been told about yet."""
        if folder.read_only or folder.party is not None:
            return 0
        mark = self._recent_mark.get((folder.name, folder.uidvalidity), 0)
        return self.index.count_above(folder.name, mark)

    def current_flags(self, folder: Folder, uids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        """The stored flags of those of ``uids`` still in the folder."""
        if folder.party is not None:
            return {row.uid: row.flags for row in self.rows_of(folder, uids)}
        return {uid: tuple(flags.split())
                for uid, flags in self.index.flags(folder.name, uids).items()}

    def deleted_uids(self, folder: Folder) -> list[int]:
        if folder.party is not None:
            return self.store.memory_deleted(folder.party)
        return self.index.uids_flagged(folder.name, "\\Deleted")

    def uids_of_message_ids(self, folder: Folder, message_ids: Iterable[str]) -> dict[str, int]:
        """Message-ID → UID of the messages in ``folder`` carrying it (first one wins)."""
        wanted = [m for m in set(message_ids) if m]
        if not wanted:
            return {}
        return self.index.uids_of_message_ids(folder.name, wanted)

    def message_ids(self, messages: Iterable[int]) -> dict[int, str]:
        return self.store.message_ids(messages)

    # -- writes --------------------------------------------------------------------------

    async def write_flags(self, folder: Folder, changes: dict[int, tuple[str, ...]]) -> None:
        """Store new flags for some UIDs: one transaction."""
        await self.index.write_flags(
            folder.name, {uid: flags_text(flags) for uid, flags in changes.items()})

    async def change_flags(self, folder: Folder, uids: Sequence[int], mode: str,
                           flags: Sequence[str]
                           ) -> tuple[dict[int, tuple[str, ...]], dict[int, tuple[str, ...]]]:
        """STORE: ``Store.change_flags`` (or its memory twin), one delta in the writer."""
        if folder.party is not None:
            return await self.store.change_memory_flags(folder.party, uids, mode, flags)
        return await self.store.change_flags(folder.name, uids, mode, flags)

    async def expunge(self, folder: Folder, uids: Sequence[int]) -> None:
        if folder.party is None:
            await self.index.expunge(folder.name, uids)
        elif uids:  # an edit of the memory, with its record
            editor, party = self._editor(folder)
            await self.store.commit(_planned(editor.remove, party, uids, editor.config.user))

    async def add_to_memory(self, folder: Folder, raw: bytes, received_at: float | None) -> int:
        """APPEND to an agent's folder: the message at the end of its memory; its UID."""
        editor, party = self._editor(folder)
        stored = await self.store.commit(_planned(editor.add, party, raw, received_at))
        return stored.meta.id

    async def copy_to_memory(self, folder: Folder, messages: Sequence[int],
                             source: Folder) -> list[int]:
        """COPY into an agent's folder: new copies at the end of its memory; their UIDs."""
        editor, party = self._editor(folder)
        plans = _planned(editor.copy, party, messages, source.party)
        return [stored.meta.id for stored in await self.store.commit_many(plans)]

    async def restore(self, folder: Folder, version: int) -> int:
        """XRESTORE: the agent's memory as just after ``version``; the restore's own version.

        Messages put back have UIDs below UIDNEXT, so the folder gets a new
        UIDVALIDITY: clients read it again (a session that has it selected
        sees them when it selects it again).
        """
        editor, party = self._editor(folder)
        before = set(self.store.parties[party].memory)
        plan = _planned(editor.restore, party, version, editor.config.user)
        await self.store.commit(plan)
        if set(plan.memory_rewrites[party]) - before:
            await self.index.create_folder(folder.name, above=folder.uidvalidity)
        return plan.meta.id

    def _editor(self, folder: Folder) -> tuple[MemoryEditor, str]:
        if self.editor is None or not folder.editable or folder.party is None:
            raise NoPermission(f"{folder.name} is read-only")
        return self.editor, folder.party

    def _check_new_name(self, name: str) -> None:
        parts = name.split(DELIMITER)
        if not name or any(not p for p in parts) or any(c in name for c in "*%\r\n\0"):
            raise Cannot(f"invalid mailbox name {name[:80]!r}")
        if len(parts) > MAX_FOLDER_DEPTH:
            raise LimitExceeded(f"a folder name has at most {MAX_FOLDER_DEPTH} levels")
        if len(name.encode("utf-8", "surrogatepass")) > MAX_FOLDER_NAME:
            raise LimitExceeded(f"a folder name has at most {MAX_FOLDER_NAME} bytes")
        if parts[0] == AGENTS:
            raise NoPermission(f"{AGENTS}/ shows the parties' memories; it takes no folders")
        if self._row(name) is not None:
            raise MailboxExists(f"{name!r} already exists")

    async def create(self, name: str) -> None:
        """CREATE, with any missing superior folders (RFC 3501 §6.3.3);
        ``Agents/<address>`` makes a new agent (its memory empty)."""
        name = _inbox_folded(name.rstrip(DELIMITER))
        if name.startswith(AGENTS + DELIMITER) and self.editor is not None:
            address = name[len(AGENTS) + 1:]
            if address in self.store.parties:
                raise MailboxExists(f"{name!r} already exists")
            editor = self.editor
            problem = editor.new_agent_problem(address) or (
                f"{address!r} holds the hierarchy delimiter" if DELIMITER in address else "")
            if problem:
                raise NoPermission(f"{AGENTS}/ holds one folder per agent: {problem}")
            await self.store.commit(_planned(editor.create, address, editor.config.user))
            return
        self._check_new_name(name)
        parts = name.split(DELIMITER)
        missing = [path for path in (DELIMITER.join(parts[:depth])
                                     for depth in range(1, len(parts) + 1))
                   if path != "INBOX" and self._row(path) is None]
        count = self.index.count_outside(AGENTS, DELIMITER)
        if count + len(missing) > MAX_FOLDERS:
            raise LimitExceeded(f"at most {MAX_FOLDERS} folders")
        for path in missing:
            await self._make(path)

    async def _make(self, name: str) -> None:
        # Deleted and made again within a second: UIDVALIDITY must still change.
        await self.index.create_folder(name, above=self._retired.get(name, 0))

    def _children(self, name: str) -> list[str]:
        return self.index.children(name, DELIMITER)

    async def delete(self, name: str) -> None:
        """DELETE of a folder of the user's own: its messages leave it, the files keep them."""
        if name in PROTECTED or name == AGENTS or name.startswith(AGENTS + DELIMITER):
            raise NoPermission(f"{name!r} cannot be deleted")
        if self._row(name) is None:
            raise MailboxNotFound(f"no mailbox {name!r}")
        if self._children(name):
            raise Cannot(f"{name!r} has subfolders; delete them first")
        self._retire(name, await self.index.delete_folder(name))

    def _retire(self, name: str, validity: int | None) -> None:
        if validity is not None:
            self._retired[name] = max(validity, self._retired.get(name, 0))

    async def rename(self, old: str, new: str) -> list[str]:
        """RENAME (with subfolders); INBOX moves its messages and stays (RFC 3501 §6.3.5).

        Returns the names that no longer exist, for the hub.
        """
        new = _inbox_folded(new.rstrip(DELIMITER))
        if old == AGENTS or old.startswith(AGENTS + DELIMITER) or (
                old in PROTECTED and old != "INBOX"):
            raise NoPermission(f"{old!r} cannot be renamed")
        if self._row(old) is None:
            raise MailboxNotFound(f"no mailbox {old!r}")
        self._check_new_name(new)
        if new.startswith(old + DELIMITER):
            raise Cannot("a folder cannot move inside itself")
        if old == "INBOX":
            await self.create(new)
            await self.index.move_messages("INBOX", new)
            return ["INBOX"]
        parent = new.rpartition(DELIMITER)[0]
        if parent and self._row(parent) is None:
            await self.create(parent)
        # The whole tree in one transaction: every old name, or every new one.
        moved = await self.index.rename_folder(old, new, DELIMITER)
        for name, _, validity in moved:
            self._retire(name, validity)
        return [name for name, _, _ in moved]

    async def subscribe(self, name: str, on: bool) -> None:
        party = self._party(name)
        if party is not None:
            self.store.ensure_folder(name)
        elif self._row(name) is None:
            raise MailboxNotFound(f"no mailbox {name!r}")
        await self.index.subscribe(name, on)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _planned(make: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """A memory edit's plan, or the client's NO [CANNOT] saying why there is none."""
    try:
        return make(*args, **kwargs)
    except MemoryEditError as exc:
        raise Cannot(str(exc)) from None
