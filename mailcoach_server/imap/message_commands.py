"""IMAP commands on messages: FETCH, STORE, SEARCH, COPY/MOVE, EXPUNGE, CLOSE, APPEND.

Same contract as :mod:`.commands`: write untagged responses to the session,
return the tagged one or raise a domain error. What makes them cost the
work and not the folder: a sequence set becomes ranges of positions in the
session's UID snapshot (no list of a million numbers), and FETCH and SEARCH
walk them a batch at a time: one range query for the batch's rows (flags
and where the bytes are), the bytes read in one go (through the shared
:class:`~.messages.MessageCache`, which keeps only what small fetches
read), one chunk written and drained before the next batch is read, and the
event loop given to other clients in between. Flag and expunge writes are
one SQL statement per command (per batch for a FETCH that sets \\Seen);
SEARCH reads messages only when a key looks inside them, and SEARCH ALL is
written straight from the snapshot.

Sent mail is kept once: APPEND or COPY to the ``\\Sent`` folder of a message
whose Message-ID is already there (it went out over SMTP, and the router
filed it) answers with the existing UID instead of storing a second copy.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from ..records import header_fields, new_meta, resolve_thread
from ..store.store import MessageMeta, WritePlan
from .command import (
    AppendCommand,
    Command,
    CopyCommand,
    ExpungeCommand,
    FetchAttr,
    FetchCommand,
    SearchCommand,
    SearchKey,
    StoreCommand,
    StoreMode,
)
from .fetch import FetchPlan, MessageView, ensure_uid, sets_seen
from .folders import Folder, Row, flags_text
from .responses import (
    BadCharset,
    Cannot,
    ImapError,
    MailboxNotFound,
    ResponseCode,
    Tagged,
    TryCreate,
    Untagged,
)
from .search import SearchMessage, matches
from .selected import SelectedMailbox, flag_items
from .sequence import SequenceSet
from .session import BadArguments, ReadOnly, Session

__all__ = [
    "do_append", "do_close", "do_copy", "do_expunge", "do_fetch", "do_search", "do_store",
    "ordered_set",
]

_BATCH = 256  # messages per write: big enough for few syscalls, small enough to interleave
_SEARCH_CHUNK = 16384  # numbers per piece of a SEARCH response
_STREAM_AT = 1024 * 1024  # a message this big is written in slices of this size
#: the first batch of a FETCH, each next one twice as big up to _BATCH: the first lines
#: go out at once and the client always has lines to parse while the next are made (a
#: full batch first is half a millisecond before the first byte, and after a short
#: first one the client would wait for the full one)
_FIRST_BATCH = 32
_SEND_AT = 64 * 1024  # bytes of a batch's lines handed to the socket as soon as they are made
_EMPTY = MessageView(b"")
_NO_CONTENT = frozenset({"UID", "FLAGS", "INTERNALDATE"})
_CONTENT_KEYS = frozenset({
    "FROM", "TO", "CC", "BCC", "SUBJECT", "HEADER", "BODY", "TEXT", "SENTBEFORE", "SENTON",
    "SENTSINCE", "LARGER", "SMALLER",
})


def ordered_set(numbers: Sequence[int]) -> SequenceSet:
    """A set that lists ``numbers`` in the given order (COPYUID pairs source and
    destination UIDs by position, RFC 4315 §3), runs folded into ranges."""
    ranges: list[tuple[int | None, int | None]] = []
    for n in numbers:
        if ranges and ranges[-1][1] == n - 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return SequenceSet(tuple(ranges))


def _spans(mailbox: SelectedMailbox, numbers: SequenceSet, uid: bool) -> list[tuple[int, int]]:
    try:
        return mailbox.spans(numbers, uid=uid)
    except ValueError as exc:
        raise BadArguments(str(exc)) from None


def _targets(mailbox: SelectedMailbox, numbers: SequenceSet, uid: bool) -> list[tuple[int, Row]]:
    return mailbox.targets(_spans(mailbox, numbers, uid))


def _internaldate(row: Row) -> datetime:
    return _local_time(row.received_at)


@lru_cache(maxsize=4096)
def _local_time(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp).astimezone()


def _clean(flags: Iterable[str]) -> tuple[str, ...]:
    """Flags a client may set: no \\Recent (RFC 3501 §2.3.2), no duplicates."""
    out: dict[str, str] = {}
    for f in flags:
        if f != "\\Recent":
            out.setdefault(f.lower(), f)
    return tuple(out.values())


_STORE_MODES = {StoreMode.ADD: "add", StoreMode.REMOVE: "remove", StoreMode.REPLACE: "replace"}


async def _store_flags(session: Session, mailbox: SelectedMailbox, rows: Sequence[Row],
                       mode: StoreMode, flags: tuple[str, ...]) -> dict[int, tuple[str, ...]]:
    """Apply a flag delta to ``rows``; returns every row's stored flags afterwards.

    The delta is one store operation (read and write in one writer
    transaction), so concurrent STOREs from several sessions compose.
    Tells the other sessions what changed.
    """
    backend = session.backend
    after, changed = await backend.catalogue.change_flags(
        mailbox.folder, [row.uid for row in rows], _STORE_MODES[mode], flags)
    # Expunged by another session meanwhile: the client keeps its last flags.
    result = {row.uid: after.get(row.uid, row.flags) for row in rows}
    if mailbox.set_flags(result, own=True):
        session.send(bytes(mailbox.flags_response()), bytes(mailbox.permanent_flags()))
    backend.hub.flags_changed(mailbox.name, changed, origin=mailbox)
    return result


# -- FETCH ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Fetch:
    """One FETCH command, as its batches are answered."""

    plan: FetchPlan
    #: the plan of a message this FETCH marks \\Seen (FLAGS added: RFC 3501 §6.4.5)
    marked_plan: FetchPlan
    sets_seen: bool
    #: does it need the messages (or their header cache entries), not only their rows?
    content: bool
    #: keep what is read in the message cache (not for a sweep over the folder)
    keep: bool

    @property
    def from_entries(self) -> bool:
        """Can a batch be answered from the header cache alone?"""
        return self.content and self.plan.from_entries and not self.sets_seen


async def do_fetch(session: Session, command: FetchCommand) -> Tagged:
    mailbox = session.require_selected()
    spans = _spans(mailbox, command.sequence_set, command.uid)
    attributes = ensure_uid(command.attributes) if command.uid else command.attributes
    sets_seen_here = sets_seen(attributes) and not mailbox.read_only
    with_flags = attributes
    if sets_seen_here and not any(a.name == "FLAGS" for a in attributes):
        with_flags = (*attributes, FetchAttr("FLAGS"))  # RFC 3501 §6.4.5: say \Seen was set
    # What a client fetches a few at a time it fetches again (BODYSTRUCTURE, then a part);
    # a sweep over the folder would only push that out of the cache.
    fetch = _Fetch(FetchPlan(attributes), FetchPlan(with_flags), sets_seen_here,
                   content=any(a.name not in _NO_CONTENT for a in attributes),
                   keep=sum(stop - start for start, stop in spans) <= _BATCH)
    quick = fetch.from_entries
    for start, stop in mailbox.ranges(spans, _BATCH, _FIRST_BATCH):
        # The usual header FETCH, once the header cache has the folder: lines straight
        # from the brief rows and their entries; what that cannot answer, as any other.
        if not (quick and _send_from_entries(session, mailbox, fetch.plan, start, stop)):
            await _send_rows(session, mailbox, fetch, mailbox.rows(start, stop))
        await session.out.drain()
        await asyncio.sleep(0)  # a long FETCH lets the other clients in between batches
    return Tagged.ok(command.tag, "FETCH completed")


async def _send_rows(session: Session, mailbox: SelectedMailbox, fetch: _Fetch,
                     batch: list[tuple[int, Row]]) -> None:
    """Answer ``batch`` from its messages (or their header cache entries)."""
    marked: set[int] = set()
    if fetch.sets_seen:
        unseen = [row for _, row in batch if "\\Seen" not in row.flags]
        if unseen:
            stored = await _store_flags(session, mailbox, unseen, StoreMode.ADD, ("\\Seen",))
            for row in unseen:
                row.flags = stored[row.uid]
            marked = {row.uid for row in unseen}
    if mailbox.note_keywords(f for _, row in batch for f in row.flags):
        session.send(bytes(mailbox.flags_response()))  # before a FETCH shows a new keyword
    cache, rows = session.backend.cache, [row for _, row in batch]
    views = cache.views(rows, keep=fetch.keep, plan=fetch.plan) if fetch.content \
        else [_EMPTY] * len(batch)
    await _send_lines(session, batch, views, fetch.plan, fetch.marked_plan, marked)
    if fetch.content:  # while the client reads: keep what the header cache lacked
        cache.remember(rows, views, fetch.plan)


def _send_from_entries(session: Session, mailbox: SelectedMailbox, plan: FetchPlan,
                       start: int, stop: int) -> bool:
    """Answer positions ``start..stop-1`` from the header cache alone, if it has them
    all and the store's rows are the snapshot's; False (nothing sent): it could not."""
    rows = mailbox.brief_rows(start, stop)
    if not rows:
        return rows is not None
    entries = session.backend.cache.entries([(message, at) for _, message, _, at in rows])
    lines = plan.entry_lines(start + 1, rows, entries, mailbox.recent)
    missing = [at for at, line in enumerate(lines) if line is None]
    if missing and not _fill_missing(session, mailbox, plan, start, lines, missing,
                                     [rows[at][0] for at in missing]):
        return False
    if mailbox.note_keywords(f for text in {text for _, _, text, _ in rows} for f in text.split()):
        session.send(bytes(mailbox.flags_response()))  # before a FETCH shows a new keyword
    session.send_all(lines)  # type: ignore[arg-type]
    return True


def _fill_missing(session: Session, mailbox: SelectedMailbox, plan: FetchPlan, start: int,
                  lines: list[bytes | None], missing: list[int], uids: list[int]) -> bool:
    """The lines :meth:`FetchPlan.entry_lines` left out (positions ``missing`` of
    ``lines``, UIDs ``uids``: new mail the header cache has not seen yet), from their
    messages, and kept in the cache; False when that is not worth it (most are
    missing) or not safe (a message so big its line is streamed)."""
    if len(uids) * 4 > len(lines):
        return False
    rows = session.backend.catalogue.rows_of(mailbox.folder, uids)
    if [row.uid for row in rows] != uids:  # expunged meanwhile: the usual way
        return False
    cache = session.backend.cache
    views = cache.views(rows, keep=False, plan=plan)
    if any(view.size_bound >= _STREAM_AT for view in views):
        return False
    for at, row, view in zip(missing, rows, views, strict=True):
        lines[at] = plan.line(start + 1 + at, view, uid=row.uid, flags=mailbox.flags_of(row),
                              internaldate=row.received_at)
    cache.remember(rows, views, plan)
    return True


async def _send_lines(session: Session, batch: Sequence[tuple[int, Row]],
                      views: Sequence[MessageView], plan: FetchPlan, marked_plan: FetchPlan,
                      marked: set[int]) -> None:
    """The FETCH lines of ``batch`` from its views; a big message's is streamed."""
    flags_of = session.require_selected().flags_of
    lines: list[bytes] = []
    pending = 0
    # bodies in a row: each line in pieces around the message, from two %-formats
    whole = plan.message_pieces if plan.from_message and not marked else None
    for (seq, row), view in zip(batch, views, strict=True):
        if whole is not None:
            pieces = list(whole(seq, view.raw, row.uid, flags_of(row), row.received_at))
            size = len(pieces[1])
        else:
            chosen = marked_plan if row.uid in marked else plan
            if view.size_bound >= _STREAM_AT:  # streamed below, whatever its exact size
                pieces, size = chosen.pieces(seq, view, uid=row.uid, flags=flags_of(row),
                                             internaldate=row.received_at), _STREAM_AT
            else:
                line = chosen.line(seq, view, uid=row.uid, flags=flags_of(row),
                                   internaldate=row.received_at)
                pieces, size = [line], len(line)
        if size >= _STREAM_AT:
            session.send_all(lines)
            lines.clear()
            pending = 0
            await _stream(session, pieces)
            continue
        lines += pieces
        pending += size
        if pending >= _SEND_AT:  # the client reads these while the rest is made
            session.send_all(lines)
            session.out.flush()
            lines.clear()
            pending = 0
    session.send_all(lines)


async def _stream(session: Session, pieces: list[bytes]) -> None:
    """A big message's response, its data written a slice at a time as the client takes
    it: never one copy of the whole in a response, nor all of it queued on the socket."""
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, len(view), _STREAM_AT):
            session.send(view[start : start + _STREAM_AT])  # type: ignore[arg-type]
            await session.out.drain()


# -- STORE ----------------------------------------------------------------------------------


async def do_store(session: Session, command: StoreCommand) -> Tagged:
    mailbox = session.require_selected()
    if mailbox.read_only:
        raise ReadOnly("the mailbox is read-only: flags cannot be changed")
    targets = _targets(mailbox, command.sequence_set, command.uid)
    wanted = _clean(command.flags)
    result = await _store_flags(session, mailbox, [row for _, row in targets],
                                command.mode, wanted)
    if not command.silent:
        out = []
        for seq, row in targets:
            shown = (*result[row.uid], "\\Recent") if row.uid in mailbox.recent else result[row.uid]
            items = b"FLAGS " + flag_items(shown)
            if command.uid:
                items = b"UID %d " % row.uid + items
            out.append(b"* %d FETCH (%s)\r\n" % (seq, items))
        session.send(b"".join(out))
    return Tagged.ok(command.tag, "STORE completed")


# -- SEARCH ---------------------------------------------------------------------------------


def _needs_content(key: SearchKey) -> bool:
    return key.name in _CONTENT_KEYS or any(_needs_content(k) for k in key.children)


def _is_all(key: SearchKey) -> bool:
    return key.name == "ALL" or (key.name == "AND" and all(_is_all(k) for k in key.children))


async def _send_search(session: Session, numbers: Iterable[int]) -> None:
    """``* SEARCH n n ...`` written in pieces: a million UIDs are never one string."""
    session.send(b"* SEARCH")
    chunk: list[int] = []
    for number in numbers:
        chunk.append(number)
        if len(chunk) == _SEARCH_CHUNK:
            session.send(b" " + " ".join(map(str, chunk)).encode("ascii"))
            chunk.clear()
            await session.out.drain()
    if chunk:
        session.send(b" " + " ".join(map(str, chunk)).encode("ascii"))
    session.send(b"\r\n")


async def do_search(session: Session, command: SearchCommand) -> Tagged:
    mailbox = session.require_selected()
    if command.charset:
        try:
            codecs.lookup(command.charset)
        except LookupError:
            raise BadCharset() from None
    if _is_all(command.key):  # what syncing clients ask most: no per-message work
        await _send_search(session, mailbox.uids if command.uid
                           else range(1, mailbox.exists + 1))
        return Tagged.ok(command.tag, "SEARCH completed")
    content = _needs_content(command.key)
    cache = session.backend.cache
    top_uid = mailbox.uids[-1] if mailbox.uids else 0
    hits: list[int] = []
    for batch in mailbox.batches(mailbox.every(), _BATCH):
        views = (cache.views([row for _, row in batch], keep=False) if content
                 else [_EMPTY] * len(batch))
        for (seq, row), view in zip(batch, views, strict=True):
            if matches(command.key, SearchMessage(
                    view.raw, seq=seq, uid=row.uid, flags=mailbox.flags_of(row),
                    internaldate=_internaldate(row)), max_seq=mailbox.exists, max_uid=top_uid):
                hits.append(row.uid if command.uid else seq)
        await asyncio.sleep(0)  # a long search lets the other clients in between batches
    await _send_search(session, hits)
    return Tagged.ok(command.tag, "SEARCH completed")


# -- EXPUNGE, CLOSE -------------------------------------------------------------------------


async def _expunge(session: Session, mailbox: SelectedMailbox,
                   only: SequenceSet | None = None, uids: Sequence[int] | None = None) -> list[int]:
    """Remove \\Deleted messages (or exactly ``uids``); returns the UIDs removed."""
    backend = session.backend
    async with backend.lock(mailbox.name):
        if uids is None:
            uids = backend.catalogue.deleted_uids(mailbox.folder)
            if only is not None:
                top = max(mailbox.last_uid, uids[-1] if uids else 0)
                uids = [u for u in uids if only.contains(u, top)]
        if uids and backend.hub.watched(mailbox.name, origin=mailbox):
            # the others may still fetch them until they are told (RFC 3501 §2.3.1.2)
            backend.hub.expunging(mailbox.name, backend.catalogue.rows_of(mailbox.folder, uids),
                                  origin=mailbox)
        await backend.catalogue.expunge(mailbox.folder, uids)
    backend.hub.expunged(mailbox.name, uids, origin=mailbox)
    return list(uids)


async def do_expunge(session: Session, command: ExpungeCommand) -> Tagged:
    mailbox = session.require_selected()
    if mailbox.read_only:
        raise ReadOnly("the mailbox is read-only: nothing can be expunged")
    removed = await _expunge(session, mailbox, command.sequence_set)
    session.send_all(mailbox.remove(removed))
    return Tagged.ok(command.tag, "EXPUNGE completed")


async def do_close(session: Session, command: Command) -> Tagged:
    mailbox = session.require_selected()
    if not mailbox.read_only:  # RFC 3501 §6.4.2: silently, and not after EXAMINE
        await _expunge(session, mailbox)
    session.unselect()
    return Tagged.ok(command.tag, "CLOSE completed")


# -- COPY, MOVE -----------------------------------------------------------------------------


async def _destination(session: Session, name: str) -> Folder:
    try:
        folder = await session.backend.catalogue.folder(name)
    except MailboxNotFound:
        raise TryCreate(f"no mailbox {name!r}") from None
    if folder.read_only:
        raise Cannot(f"{name} is read-only: it shows what the server keeps by itself")
    return folder


def _already_sent(session: Session, folder: Folder, message_ids: Iterable[str]) -> dict[str, int]:
    if folder.special != "\\Sent":
        return {}
    return session.backend.catalogue.uids_of_message_ids(folder, message_ids)


async def _copied(session: Session, targets: Sequence[Row], source: Folder,
                  dest: Folder) -> list[int]:
    """File ``targets`` in ``dest`` (new copies in a memory); their UIDs there, in order."""
    catalogue = session.backend.catalogue
    if dest.party is not None:
        return await catalogue.copy_to_memory(dest, [row.message for row in targets], source)
    message_ids = catalogue.message_ids(row.message for row in targets)
    known = _already_sent(session, dest, message_ids.values())
    fresh = [row for row in targets if message_ids.get(row.message) not in known]
    if dest.special == "\\Sent":
        session.backend.filed_in_sent(message_ids[row.message] for row in fresh
                                      if message_ids.get(row.message))
    new_uids = iter(await session.backend.store.add_to_folder(
        dest.name, [(row.message, flags_text(_clean(row.flags))) for row in fresh]
    ) if fresh else [])
    return [known[message_ids[row.message]] if message_ids.get(row.message) in known
            else next(new_uids) for row in targets]


async def do_copy(session: Session, command: CopyCommand) -> Tagged:
    mailbox = session.require_selected()
    move = command.name == "MOVE"
    if move and mailbox.read_only:
        raise ReadOnly("the mailbox is read-only: messages can be copied, not moved")
    dest = await _destination(session, command.mailbox)
    if mailbox.folder.read_only and dest.special == "\\Trash":
        # Clients delete by copying to Trash and then setting \Deleted; in a read-only
        # view the second step fails and the copy would stay (claws-mail). Refuse the first.
        raise Cannot(f"{mailbox.folder.name} is read-only: its messages cannot be deleted "
                     "(copy them to a folder of your own to keep them)")
    targets = [row for _, row in _targets(mailbox, command.sequence_set, command.uid)]
    if not targets:
        return Tagged.ok(command.tag, f"{command.name} completed: nothing to do")
    dest_uids = await _copied(session, targets, mailbox.folder, dest)
    code = ResponseCode.copy_uid(dest.uidvalidity, ordered_set([r.uid for r in targets]),
                                 ordered_set(dest_uids))
    if not move:
        return Tagged.ok(command.tag, "COPY completed", code)
    session.send(bytes(Untagged.ok("moved", code)))  # RFC 6851 §4.3
    removed = await _expunge(session, mailbox, uids=[row.uid for row in targets])
    session.send_all(mailbox.remove(removed))
    return Tagged.ok(command.tag, "MOVE completed")


# -- APPEND ---------------------------------------------------------------------------------


def _meta(session: Session, raw: bytes, when: datetime | None) -> MessageMeta:
    store = session.backend.store
    fields = header_fields(raw)
    thread = resolve_thread(fields, store.find_by_message_id, auto=False)
    return new_meta(fields, id=store.allocate_message_id(), thread=thread,
                    received_at=when.timestamp() if when else None)


async def do_append(session: Session, command: AppendCommand) -> Tagged:
    dest = await _destination(session, command.mailbox)
    if not command.message.strip():
        raise ImapError("an empty message cannot be stored")
    if dest.party is not None:  # an agent's memory: the message joins it at the end
        when = command.date_time.timestamp() if command.date_time else None
        uid = await session.backend.catalogue.add_to_memory(dest, command.message, when)
        return Tagged.ok(command.tag, "APPEND completed",
                         ResponseCode.append_uid(dest.uidvalidity, uid))
    flags = _clean(command.flags)
    meta = _meta(session, command.message, command.date_time)
    known = _already_sent(session, dest, [meta.message_id])
    if meta.message_id in known:  # went out over SMTP: the router filed it already
        uid = known[meta.message_id]
        return Tagged.ok(command.tag, "APPEND completed: already in Sent",
                         ResponseCode.append_uid(dest.uidvalidity, uid))
    stored = await session.backend.store.commit(WritePlan(
        raw=command.message, meta=meta, file="imap", folders=[dest.name],
        folder_flags={dest.name: flags_text(flags)}))
    return Tagged.ok(command.tag, "APPEND completed",
                     ResponseCode.append_uid(dest.uidvalidity, stored.uids[dest.name]))
