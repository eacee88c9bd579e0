"""The user's IMAP folders over the store: real folders and ``Agents/<address>``.

Real folders are rows of the ``folders`` table; their messages are the
``folder_messages`` rows (UIDs handed out by the store's writer, flags as a
space-separated string). ``Trace`` is real but read-only. ``Agents/<address>``
folders are virtual: a party's memory, in order, read-only, the UID of a
message being its store id (ascending within a memory), so a message that
leaves a memory (X-Rollback) is simply gone (expunged). Their UIDVALIDITY
and UIDNEXT high-water mark live in a ``folders`` row created the first time
the folder is opened, so they survive restarts.

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

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ..store.store import Store
from .responses import Cannot, LimitExceeded, MailboxExists, MailboxNotFound, NoPermission

__all__ = [
    "AGENTS", "DELIMITER", "MAX_FOLDERS", "MAX_FOLDER_DEPTH", "MAX_FOLDER_NAME", "PROTECTED",
    "Catalogue", "Folder", "Row", "flags_text",
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

_ROW_COLUMNS = "m.file, m.offset, m.length, m.received_at"
_REAL_ROWS = (
    f"SELECT fm.uid, fm.message, fm.flags, {_ROW_COLUMNS} FROM folder_messages fm "
    "JOIN messages m ON m.id = fm.message WHERE fm.folder = ? AND fm.uid > ? ORDER BY fm.uid"
)
_VIRTUAL_ROWS = (
    f"SELECT DISTINCT m.id, m.id, '', {_ROW_COLUMNS} FROM memory mem "
    "JOIN messages m ON m.id = mem.message WHERE mem.party = ? AND mem.message > ? "
    "ORDER BY m.id"
)


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

    @property
    def read_only(self) -> bool:
        return self.party is not None or self.name in _READ_ONLY


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


def _inbox_folded(name: str) -> str:
    head, sep, rest = name.partition(DELIMITER)
    return "INBOX" + sep + rest if head.upper() == "INBOX" else name


class Catalogue:
    """Folder names, attributes and contents over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: uidvalidity of folders deleted or renamed away in this process, so a new
        #: folder of the same name never reuses it (it is seconds since the epoch)
        self._retired: dict[str, int] = {}
        #: (folder, uidvalidity) -> highest UID a session has been told is new;
        #: what is in a folder when the server starts is not recent
        self._recent_mark: dict[tuple[str, int], int] = {
            (name, validity): uidnext - 1 for name, validity, uidnext in store.query(
                "SELECT name, uidvalidity, uidnext FROM folders")}

    # -- lookup ------------------------------------------------------------------------

    def _party(self, name: str) -> str | None:
        if not name.startswith(AGENTS + DELIMITER):
            return None
        party = name[len(AGENTS) + 1 :]
        return party if party in self.store.parties else None

    def _row(self, name: str) -> tuple[int, int, str, int] | None:
        rows = self.store.query(
            "SELECT uidvalidity, uidnext, special, subscribed FROM folders WHERE name = ?",
            (name,),
        )
        return rows[0] if rows else None

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
        (top,) = self.store.query(
            "SELECT COALESCE(MAX(message), 0) FROM memory WHERE party = ?", (party,))[0]
        uidnext = max(stored_next, top + 1)
        if uidnext > stored_next:  # a high-water mark: UIDNEXT never goes back
            await self.store.execute(
                "UPDATE folders SET uidnext = ? WHERE name = ? AND uidnext < ?",
                (uidnext, name, uidnext))
        return Folder(name, validity, uidnext, party=party)

    def rows(self, folder: Folder, after: int = 0) -> list[Row]:
        """The folder's messages with a UID above ``after``, by UID."""
        if folder.party is not None:
            raw = self.store.query(_VIRTUAL_ROWS, (folder.party, after))
        else:
            raw = self.store.query(_REAL_ROWS, (folder.name, after))
        if folder.read_only:  # archives: nothing to read, nothing to mark
            return [Row(u, m, _SEEN, f, o, n, r) for u, m, _, f, o, n, r in raw]
        return [Row(u, m, tuple(fl.split()), f, o, n, r) for u, m, fl, f, o, n, r in raw]

    def counts(self, folder: Folder) -> tuple[int, int]:
        """``(messages, unseen)`` for STATUS."""
        if folder.party is not None:
            (count,) = self.store.query(
                "SELECT COUNT(DISTINCT message) FROM memory WHERE party = ?", (folder.party,))[0]
            return count, 0
        count, unseen = self.store.query(
            "SELECT COUNT(*), COALESCE(SUM(instr(' ' || flags || ' ', ' \\Seen ') = 0), 0) "
            "FROM folder_messages WHERE folder = ?", (folder.name,))[0]
        return count, 0 if folder.read_only else unseen

    def claim_recent(self, folder: Folder, uids: Sequence[int], *, claim: bool) -> set[int]:
        """Which of ``uids`` (ascending) no session has been told about yet; with ``claim``,
        this session is now the one (they are recent for it alone)."""
        if folder.read_only or not uids:  # Trace and memories are archives: nothing is new
            return set()
        key = (folder.name, folder.uidvalidity)
        mark = self._recent_mark.get(key, 0)
        fresh = {uid for uid in uids if uid > mark}
        if claim and uids[-1] > mark:
            self._recent_mark[key] = uids[-1]
        return fresh

    def unclaimed_recent(self, folder: Folder) -> int:
        """STATUS RECENT: messages no session has been told about yet."""
        if folder.read_only:
            return 0
        mark = self._recent_mark.get((folder.name, folder.uidvalidity), 0)
        (count,) = self.store.query(
            "SELECT COUNT(*) FROM folder_messages WHERE folder = ? AND uid > ?",
            (folder.name, mark))[0]
        return int(count)

    def current_flags(self, folder: Folder, uids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        """The stored flags of those of ``uids`` still in the folder."""
        rows = self.store.query(
            "SELECT uid, flags FROM folder_messages WHERE folder = ? "
            "AND uid IN (SELECT value FROM json_each(?))", (folder.name, json.dumps(list(uids))))
        return {uid: tuple(flags.split()) for uid, flags in rows}

    def deleted_uids(self, folder: Folder) -> list[int]:
        rows = self.store.query(
            "SELECT uid FROM folder_messages WHERE folder = ? "
            "AND instr(' ' || flags || ' ', ' \\Deleted ') > 0 ORDER BY uid", (folder.name,))
        return [uid for (uid,) in rows]

    def uids_of_message_ids(self, folder: Folder, message_ids: Iterable[str]) -> dict[str, int]:
        """Message-ID → UID of the messages in ``folder`` carrying it (first one wins)."""
        wanted = [m for m in set(message_ids) if m]
        if not wanted:
            return {}
        rows = self.store.query(
            "SELECT m.message_id, MIN(fm.uid) FROM folder_messages fm "
            "JOIN messages m ON m.id = fm.message WHERE fm.folder = ? "
            "AND m.message_id IN (SELECT value FROM json_each(?)) GROUP BY m.message_id",
            (folder.name, json.dumps(wanted)))
        return dict(rows)

    def message_ids(self, messages: Iterable[int]) -> dict[int, str]:
        rows = self.store.query(
            "SELECT id, message_id FROM messages WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(messages)),))
        return dict(rows)

    # -- writes --------------------------------------------------------------------------

    async def write_flags(self, folder: Folder, changes: dict[int, tuple[str, ...]]) -> None:
        """Store new flags for some UIDs: one statement, one transaction.

        An upsert, because SQLite plans ``UPDATE ... FROM json_each`` as a nested
        scan (quadratic); only rows that exist are touched (the EXISTS).
        """
        if not changes:
            return
        pairs = json.dumps([[uid, flags_text(flags)] for uid, flags in changes.items()])
        await self.store.execute(
            "INSERT INTO folder_messages(folder, uid, message, flags) "
            "SELECT ?1, json_extract(j.value, '$[0]'), 0, json_extract(j.value, '$[1]') "
            "FROM json_each(?2) AS j WHERE EXISTS (SELECT 1 FROM folder_messages f "
            "WHERE f.folder = ?1 AND f.uid = json_extract(j.value, '$[0]')) "
            "ON CONFLICT(folder, uid) DO UPDATE SET flags = excluded.flags",
            (folder.name, pairs))

    async def expunge(self, folder: Folder, uids: Sequence[int]) -> None:
        if uids:
            await self.store.execute(
                "DELETE FROM folder_messages WHERE folder = ? "
                "AND uid IN (SELECT value FROM json_each(?))",
                (folder.name, json.dumps(list(uids))))

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
        """CREATE, with any missing superior folders (RFC 3501 §6.3.3)."""
        name = _inbox_folded(name.rstrip(DELIMITER))
        self._check_new_name(name)
        parts = name.split(DELIMITER)
        missing = [path for path in (DELIMITER.join(parts[:depth])
                                     for depth in range(1, len(parts) + 1))
                   if path != "INBOX" and self._row(path) is None]
        (count,) = self.store.query(
            "SELECT COUNT(*) FROM folders WHERE name != ? AND substr(name, 1, ?) != ?",
            (AGENTS, len(AGENTS) + 1, AGENTS + DELIMITER))[0]
        if count + len(missing) > MAX_FOLDERS:
            raise LimitExceeded(f"at most {MAX_FOLDERS} folders")
        for path in missing:
            await self._make(path)

    async def _make(self, name: str) -> None:
        self.store.ensure_folder(name)
        retired = self._retired.get(name)
        if retired is not None and self.store.folders[name] <= retired:
            # Deleted and made again within a second: UIDVALIDITY must still change.
            self.store.folders[name] = retired + 1
            await self.store.execute(
                "UPDATE folders SET uidvalidity = ? WHERE name = ?", (retired + 1, name))

    def _children(self, name: str) -> list[str]:
        rows = self.store.query(
            "SELECT name FROM folders WHERE substr(name, 1, ?) = ?",
            (len(name) + 1, name + DELIMITER))
        return [n for (n,) in rows]

    async def delete(self, name: str) -> None:
        """DELETE of a folder of the user's own: its messages leave it, the files keep them."""
        if name in PROTECTED or name == AGENTS or name.startswith(AGENTS + DELIMITER):
            raise NoPermission(f"{name!r} cannot be deleted")
        if self._row(name) is None:
            raise MailboxNotFound(f"no mailbox {name!r}")
        if self._children(name):
            raise Cannot(f"{name!r} has subfolders; delete them first")
        await self.store.execute("DELETE FROM folder_messages WHERE folder = ?", (name,))
        await self.store.execute("DELETE FROM folders WHERE name = ?", (name,))
        self._retire(name)

    def _retire(self, name: str) -> None:
        validity = self.store.folders.pop(name, None)
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
            await self.store.execute(
                "UPDATE folder_messages SET folder = ? WHERE folder = 'INBOX'", (new,))
            await self.store.execute(
                "UPDATE folders SET uidnext = (SELECT uidnext FROM folders WHERE name = 'INBOX') "
                "WHERE name = ?", (new,))
            return ["INBOX"]
        moved = [old, *self._children(old)]
        parent = new.rpartition(DELIMITER)[0]
        if parent and self._row(parent) is None:
            await self.create(parent)
        for name in moved:
            target = new + name[len(old):]
            # Messages first: a crash in between leaves them findable under the new name.
            await self.store.execute(
                "UPDATE folder_messages SET folder = ? WHERE folder = ?", (target, name))
            await self.store.execute("UPDATE folders SET name = ? WHERE name = ?", (target, name))
            validity = self.store.folders.pop(name, None)
            if validity is not None:
                self.store.folders[target] = validity
                self._retired[name] = max(validity, self._retired.get(name, 0))
        return moved

    async def subscribe(self, name: str, on: bool) -> None:
        party = self._party(name)
        if party is not None:
            self.store.ensure_folder(name)
        elif self._row(name) is None:
            raise MailboxNotFound(f"no mailbox {name!r}")
        await self.store.execute(
            "UPDATE folders SET subscribed = ? WHERE name = ?", (1 if on else 0, name))
