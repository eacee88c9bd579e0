"""``ImapMailbox``: a party's ``Mailbox`` (``runtime/mailbox.py``) on an IMAP + SMTP server.

pending   INBOX messages without ``$MCDone``, in UID order, one at a time: the
          control headers of each (``runtime/headers.apply_control_headers``)
          are applied to the memory by server operations (keywords) before
          the next is looked at, exactly as ``serve`` applies them on arrival.
memory    INBOX + Sent merged in the order the party lived them
          (``worker/entries.memory_order``), without ``$MCForgotten``, as
          turns (``runtime/context.turn_text``).
send      the protocol that makes a reply happen once (the lease held):

          1. the reply's Message-ID is ``reply_message_id(party, UIDVALIDITY, UID)``;
             if Sent already has it (or a reply naming the message in
             ``X-Mailcoach-Answers``, which survives a UIDVALIDITY change),
             nothing is made again: the steps below are finished;
          2. APPEND to Sent with ``$MCUnsent``;
          3. SMTP submission with AUTH;
          4. ``$MCUnsent`` removed; the reply's own control headers applied;
          5. ``\\Answered $MCDone`` on the INBOX message.

          Killed after 2 or 3, a restarted worker finds the reply in Sent and
          submits it again: the same bytes and Message-ID (the one window where
          a recipient may get a copy twice; a receiving worker drops a second
          copy of a Message-ID, and Sieve's ``duplicate`` test does it for
          people). Killed before 2, the reply is made again: a model may be
          paid twice, nothing is sent twice.

The party's state (``X-Hint-Model``, ``X-Expect``) is a JSON message in the
state folder (``Mailcoach``), replaced on change; what was spent is the sum of
``M-Cost`` and ``M-Tokens-*`` over the worker's replies in Sent. Both live on
the server, so a worker on another machine knows them.

The connection is re-made with backoff whenever it drops (server restart,
network); reads and keyword writes are retried, ``send`` raises ``OSError``
so the runtime's worker sends the same bytes again later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage, Message
from email.utils import formatdate, make_msgid
from typing import TypeVar

from ..addresses import parse_address_list
from ..config import Config
from ..errors import SubmitError
from ..mailtext import read_message
from ..runtime.context import ERROR_HEADER
from ..runtime.headers import AgentState, apply_control_headers
from ..runtime.mailbox import Incoming, Turn
from .connection import ImapConnection, LoginRefused, ServerAway
from .entries import (
    ANSWERS_HEADER,
    DONE,
    FORGOTTEN,
    ROUND_HEADER,
    UNSENT,
    Entry,
    make_entry,
    memory_order,
    reply_message_id,
)
from .lease import Lease, LeaseLost
from .settings import PartyLogin, WorkerSettings
from .submit import SmtpSubmitter

__all__ = ["CRASH_ENV", "ImapMailbox", "Spent"]

log = logging.getLogger("mailcoach.worker")

#: fault injection for tests: ``MAILCOACH_WORKER_CRASH_AT=after-save`` makes the worker
#: kill itself (SIGKILL) at that step of ``send``, once
CRASH_ENV = "MAILCOACH_WORKER_CRASH_AT"
STATE_HEADER = "X-Mailcoach-State"
_BACKOFF_FIRST, _BACKOFF_MAX = 0.2, 30.0
T = TypeVar("T")


class Spent:
    """USD and tokens a party's replies in Sent say they cost."""

    def __init__(self) -> None:
        self.usd = 0.0
        self.tokens = 0


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        log.warning("fault injection: killed at %s", step)
        os.kill(os.getpid(), signal.SIGKILL)


class ImapMailbox:
    """One party's mailbox on the server; the worker holds its lease while acting."""

    def __init__(self, party: PartyLogin, settings: WorkerSettings, *,
                 slots: asyncio.Semaphore | None = None) -> None:
        self.address = party.address
        self.party = party
        self.settings = settings
        self.config: Config = settings.config
        self.lease = Lease(party.address, settings.state_folder, settings.lease_seconds)
        self.smtp = SmtpSubmitter(settings.smtp, party.login, party.password)
        self.spent = Spent()
        self.closed = False
        self._slots = slots
        self._conn: ImapConnection | None = None
        self._uidvalidity = 0
        self._inbox: dict[int, Entry] = {}
        self._sent: dict[int, Entry] = {}
        self._state = AgentState()
        self._state_uid = 0
        self._counted: set[int] = set()  # Sent UIDs already in ``spent``

    # -- connection ----------------------------------------------------------------------

    async def connect(self) -> ImapConnection:
        """The live connection, made again with backoff while the server is away."""
        delay = _BACKOFF_FIRST
        while self._conn is None or not self._conn.alive:
            if self._conn is not None:
                log.warning("%s: the IMAP connection dropped; reconnecting", self.address)
                await self._conn.close()
                self._conn = None
            try:
                self._conn = await ImapConnection.open(self.settings.imap, self.party.login,
                                                       self.party.password)
            except ServerAway as exc:
                log.warning("%s: %s; again in %.1f s", self.address, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            if self.lease.held:  # still ours after the break?
                await self.lease.renew(self._conn)
        return self._conn

    async def _retrying(self, operation: Callable[[ImapConnection], Awaitable[T]]) -> T:
        """Run an idempotent ``operation`` until it gets through (reconnecting)."""
        delay = _BACKOFF_FIRST
        while True:
            conn = await self.connect()
            try:
                async with conn.lock:
                    return await operation(conn)
            except ServerAway as exc:
                log.warning("%s: %s; reconnecting in %.1f s", self.address, exc, delay)
                await conn.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    async def aclose(self) -> None:
        self.closed = True
        if self._conn is not None:
            try:
                async with self._conn.lock:
                    await self.lease.release(self._conn)
            except (ServerAway, LeaseLost):
                pass
            await self._conn.close()
            self._conn = None

    async def hold(self) -> None:
        """Take the lease (waiting while another live worker has it)."""
        await self._retrying(self.lease.acquire)

    async def keep_lease(self) -> None:
        """Renew the lease while acting; raises ``LeaseLost`` when another worker has it."""
        while True:
            await asyncio.sleep(self.lease.renew_every)
            await self._retrying(self._renew)

    async def _renew(self, conn: ImapConnection) -> None:
        await self.lease.renew(conn)

    # -- reading the folders ---------------------------------------------------------------

    async def _refresh(self, conn: ImapConnection) -> None:
        """Bring the local copies of Sent and INBOX up to date (INBOX stays selected)."""
        await self._load_state(conn)
        await self._refresh_folder(conn, self.settings.sent_folder, sent=True)
        await self._refresh_folder(conn, "INBOX", sent=False)

    async def _refresh_folder(self, conn: ImapConnection, folder: str, *, sent: bool) -> None:
        selected = await conn.select(folder, create=sent)
        entries = self._sent if sent else self._inbox
        if not sent and selected.uidvalidity != self._uidvalidity:
            if self._uidvalidity:
                log.warning("%s: INBOX UIDVALIDITY changed (%d -> %d): reading it again",
                            self.address, self._uidvalidity, selected.uidvalidity)
            self._uidvalidity = selected.uidvalidity
            entries.clear()
        if sent and getattr(self, "_sent_validity", None) != selected.uidvalidity:
            self._sent_validity = selected.uidvalidity
            entries.clear()
            self._counted.clear()
            self.spent = Spent()
        present = set(await conn.uid_search("ALL")) if selected.exists else set()
        for uid in set(entries) - present:  # expunged elsewhere (a client)
            del entries[uid]
        new = sorted(present - set(entries))
        if new:
            fetched = await conn.uid_fetch(_uid_set(new),
                                           "(UID FLAGS INTERNALDATE BODY.PEEK[])")
            for item in fetched:
                raw = item.sections.get("BODY[]", b"")
                entries[item.uid] = make_entry(item.uid, raw, item.flags, item.internaldate,
                                               sent=sent)
        known = sorted(set(entries) - set(new))
        if known:
            for item in await conn.uid_fetch(_uid_set(known), "(UID FLAGS)"):
                if item.uid in entries:
                    entries[item.uid].flags = set(item.flags)
        if sent:
            self._count_spent()

    def _count_spent(self) -> None:
        for uid, entry in self._sent.items():
            if uid in self._counted or not entry.answers:
                continue
            self._counted.add(uid)
            self.spent.usd += _number(entry.message.get("M-Cost"), float)
            self.spent.tokens += int(_number(entry.message.get("M-Tokens-Input"), int)
                                     + _number(entry.message.get("M-Tokens-Output"), int))

    # -- the state message -----------------------------------------------------------------

    async def _load_state(self, conn: ImapConnection) -> None:
        await conn.select(self.settings.state_folder, create=True)
        uids = await conn.uid_search("HEADER", STATE_HEADER, self.address)
        if not uids or uids[-1] == self._state_uid:
            return
        fetched = await conn.uid_fetch(str(uids[-1]), "(UID BODY.PEEK[TEXT])")
        text = fetched[0].sections.get("BODY[TEXT]", b"{}") if fetched else b"{}"
        try:
            data = json.loads(text.decode("utf-8", "replace") or "{}")
        except ValueError:
            log.warning("%s: the state message is not JSON; starting from a clean state",
                        self.address)
            data = {}
        self._state = AgentState.from_json(data if isinstance(data, dict) else {})
        self._state_uid = uids[-1]

    async def _save_state(self, conn: ImapConnection, state: AgentState) -> None:
        """A new state message, then the old ones removed (a crash between keeps both;
        the newest wins)."""
        folder = self.settings.state_folder
        body = json.dumps(state.to_json(), indent=1)
        raw = (f"From: {self.address}\r\nTo: {self.address}\r\nSubject: mailcoach state of "
               f"{self.address}\r\n{STATE_HEADER}: {self.address}\r\nDate: {formatdate()}\r\n"
               "MIME-Version: 1.0\r\nContent-Type: application/json\r\n\r\n"
               f"{body}\r\n").encode()
        await conn.select(folder, create=True)
        await conn.append(raw, folder, flags=("\\Seen",))
        uids = await conn.uid_search("HEADER", STATE_HEADER, self.address)
        old = [uid for uid in uids[:-1]]
        if old:
            await conn.uid_store(_uid_set(old), "+FLAGS.SILENT", "(\\Deleted)")
            await conn.expunge_uids(old)
        self._state = state
        self._state_uid = uids[-1] if uids else 0
        await conn.select("INBOX")

    # -- Mailbox: pending --------------------------------------------------------------------

    async def pending(self) -> list[Incoming]:
        """The next message to act on (a list of one), or none."""
        return await self._retrying(self._next_pending)

    async def _next_pending(self, conn: ImapConnection) -> list[Incoming]:
        await self._refresh(conn)
        seen_ids: set[str] = set()
        for uid in sorted(self._inbox):
            entry = self._inbox[uid]
            duplicate = entry.message_id in seen_ids
            seen_ids.add(entry.message_id)
            if DONE in entry.flags:
                continue
            if duplicate:  # a second copy of a message (resubmitted after a crash)
                log.info("%s: UID %d repeats %s; remembered once", self.address, uid,
                         entry.message_id)
                await self._flag(conn, "INBOX", [uid], DONE, FORGOTTEN)
                continue
            reply = self._reply_in_sent(entry)
            if reply is not None:
                await self._finish(conn, entry, reply)
                continue
            state = await self._apply_headers(conn, entry, entry.sender, entry.message)
            if not self._acts(entry, state):
                await self._flag(conn, "INBOX", [uid], DONE)
                continue
            return [Incoming(ref=(self._uidvalidity, uid), raw=entry.raw.replace(b"\r\n", b"\n"),
                             sender=entry.sender,
                             subject=entry.subject,
                             message_id=entry.message_id if entry.message.get("Message-ID")
                             else None,
                             model=state.model, label=f"UID {uid}")]
        return []

    def _acts(self, entry: Entry, state: AgentState) -> bool:
        """Whether this message asks the party to act (serve's rule: To, not its own,
        no X-Expect waiting, not an automatic error note, within the auto-round limit)."""
        if self.address not in entry.to or entry.sender == self.address or state.expect:
            return False
        if entry.message.get(ERROR_HEADER) is not None and entry.automatic:
            return False
        if entry.automatic and entry.round >= self.config.limits.max_auto_rounds:
            log.warning("%s: %s is automatic message %d in a row in its thread; not answered "
                        "(limits.max_auto_rounds)", self.address, entry.message_id, entry.round)
            return False
        return True

    def _reply_in_sent(self, entry: Entry) -> Entry | None:
        wanted = reply_message_id(self.address, self._uidvalidity, entry.uid)
        for reply in self._sent.values():
            if reply.message_id == wanted or reply.answers == entry.message_id:
                return reply
        return None

    # -- control headers -----------------------------------------------------------------------

    def _memory_entries(self, upto: Entry | None = None, *,
                        include_upto: bool = True) -> list[Entry]:
        ordered = memory_order(list(self._inbox.values()), list(self._sent.values()))
        if upto is not None:
            position = next(i for i, e in enumerate(ordered) if e is upto)
            ordered = ordered[: position + 1] if include_upto else ordered[:position]
        return [e for e in ordered if FORGOTTEN not in e.flags]

    async def _apply_headers(self, conn: ImapConnection, entry: Entry, sender: str,
                             headers: Message) -> AgentState:
        """What ``entry`` does to the party's memory and state; idempotent, so a
        message applied twice (a crash in between) changes nothing more."""
        if self.party.kind != "agent":
            return self._state
        before = self._memory_entries(entry, include_upto=False)
        by_key = {e.key: e for e in before}
        robots = {spec.address for spec in self.config.robots}

        def touches_robot(key: int) -> bool:
            e = by_key[key]
            return any(a in robots for a in (e.sender, *e.recipients))
        effect = apply_control_headers(headers, sender, self._state, [e.key for e in before],
                                       touches_robot)
        for warning in effect.warnings:
            log.warning("%s: %s", self.address, warning)
        if effect.memory is not None:
            kept = set(effect.memory)
            await self._forget(conn, [e for e in before if e.key not in kept])
        if not effect.store and FORGOTTEN not in entry.flags:
            await self._forget(conn, [entry])
        if effect.state != self._state:
            await self._save_state(conn, effect.state)
        return effect.state

    async def _forget(self, conn: ImapConnection, entries: Sequence[Entry]) -> None:
        for sent in (False, True):
            uids = [e.uid for e in entries if e.sent is sent]
            if uids:
                await self._flag(conn, self.settings.sent_folder if sent else "INBOX", uids,
                                 FORGOTTEN)

    async def _flag(self, conn: ImapConnection, folder: str, uids: Sequence[int],
                    *flags: str, remove: bool = False) -> None:
        await conn.select(folder)
        await conn.uid_store(_uid_set(uids), ("-" if remove else "+") + "FLAGS.SILENT",
                             "(" + " ".join(flags) + ")")
        entries = self._sent if folder == self.settings.sent_folder else self._inbox
        for uid in uids:
            if uid in entries:
                (entries[uid].flags.difference_update if remove
                 else entries[uid].flags.update)(flags)
        if folder != "INBOX":
            await conn.select("INBOX")

    # -- Mailbox: memory -----------------------------------------------------------------------

    async def memory(self, upto: Incoming) -> list[Turn]:
        entry = await self._retrying(lambda conn: self._entry_for(conn, upto))
        return [(e.sender, e.turn) for e in self._memory_entries(entry)]

    async def _entry_for(self, conn: ImapConnection, incoming: Incoming) -> Entry:
        """The INBOX entry of ``incoming``, found by UID, or by Message-ID after a
        UIDVALIDITY change."""
        validity, uid = incoming.ref  # type: ignore[misc]
        if validity == self._uidvalidity and uid in self._inbox:
            return self._inbox[uid]
        await self._refresh(conn)
        if validity == self._uidvalidity and uid in self._inbox:
            return self._inbox[uid]
        for entry in self._inbox.values():
            if incoming.message_id and entry.message_id == incoming.message_id:
                return entry
        raise ServerAway(f"{incoming.label} is no longer in INBOX")

    # -- Mailbox: send ---------------------------------------------------------------------------

    async def send(self, reply: bytes, *, answering: Incoming, cost: float = 0.0,
                   origin: str = "agent") -> None:
        """Submit ``reply`` and mark ``answering`` done (see the module docstring).

        Raises:
            SubmitError: the SMTP server refused it for good (nothing was sent).
            OSError: the server is away; call again with the same bytes.
        """
        _crash_point("after-model")
        conn = await self.connect()
        async with conn.lock:
            try:
                await self.lease.renew(conn)
                entry = await self._entry_for(conn, answering)
                await self._refresh_folder(conn, self.settings.sent_folder, sent=True)
                existing = self._reply_in_sent(entry)
                if existing is None:
                    existing = await self._save_reply(conn, entry, answering, reply)
                    _crash_point("after-save")
                await self._finish(conn, entry, existing)
            except ServerAway:
                await conn.close()
                raise

    async def _save_reply(self, conn: ImapConnection, entry: Entry, answering: Incoming,
                          reply: bytes) -> Entry:
        validity, uid = answering.ref  # type: ignore[misc]
        message = read_message(reply)
        headers = {
            "Message-ID": reply_message_id(self.address, validity, uid),
            ANSWERS_HEADER: entry.message_id,
            ROUND_HEADER: str(entry.round + 1 if entry.automatic else 1),
            "Auto-Submitted": "auto-replied",
        }
        if message.get("Date") is None:
            headers["Date"] = formatdate(localtime=False)
        raw = _with_headers(reply, headers)
        folder = self.settings.sent_folder
        await conn.select(folder, create=True)
        new_uid = await conn.append(raw, folder, flags=("\\Seen", UNSENT))
        await self._refresh_folder(conn, folder, sent=True)
        saved = self._sent.get(new_uid) if new_uid else None
        if saved is None:
            saved = next(e for e in self._sent.values()
                         if e.message_id == headers["Message-ID"])
        return saved

    async def _finish(self, conn: ImapConnection, entry: Entry, reply: Entry) -> None:
        """Steps 3 to 5 for a reply already in Sent: submit it if unconfirmed, flag both."""
        if UNSENT in reply.flags:
            if not self.lease.held:
                raise LeaseLost(f"{self.address}: the lease is not held")
            recipients = list(reply.recipients)
            try:
                await self.smtp.submit(_without_bcc(reply.raw), sender=self.address,
                                       recipients=recipients)
            except SubmitError:
                # refused for good: the Sent copy goes, so a readdressed reply can be saved
                await self._flag(conn, self.settings.sent_folder, [reply.uid], "\\Deleted")
                await conn.select(self.settings.sent_folder)
                await conn.expunge_uids([reply.uid])
                self._sent.pop(reply.uid, None)
                await conn.select("INBOX")
                raise
            except (OSError, LoginRefused) as exc:
                # a login refused now (it passed at start: a changed password?) defers the
                # reply as a dropped connection does: it stays in Sent, unsent, not lost
                raise ServerAway(str(exc)) from None
            _crash_point("after-send")
            await self._flag(conn, self.settings.sent_folder, [reply.uid], UNSENT, remove=True)
        await self._apply_headers(conn, reply, self.address, reply.message)
        await self._flag(conn, "INBOX", [entry.uid], "\\Answered", DONE)
        log.info("%s: answered UID %d with %s", self.address, entry.uid, reply.message_id)

    async def trim_memory(self, upto: Incoming, drop: Sequence[int],
                          note: tuple[str, str]) -> None:
        """Forget positions ``drop`` of ``memory(upto)`` (``$MCForgotten``) and leave the
        runtime's note in Sent, dated now: it ends the memory, as in ``serve``."""
        async def trim(conn: ImapConnection) -> None:
            entries = self._memory_entries(await self._entry_for(conn, upto))
            gone = [entries[i] for i in sorted(set(drop)) if 0 <= i < len(entries)]
            if not gone:
                return
            subject, body = note
            raw = (f"From: postmaster@{self.config.domain}\r\nTo: {self.address}\r\n"
                   f"Subject: {subject}\r\nDate: {formatdate()}\r\n"
                   f"Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
                   f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()
            await conn.select(self.settings.sent_folder, create=True)
            await conn.append(raw, self.settings.sent_folder, flags=("\\Seen",))
            await self._forget(conn, gone)
            await self._refresh(conn)
        await self._retrying(trim)

    async def done(self, incoming: Incoming) -> None:
        async def mark(conn: ImapConnection) -> None:
            entry = await self._entry_for(conn, incoming)
            await self._flag(conn, "INBOX", [entry.uid], DONE)
        await self._retrying(mark)

    async def wait_for_mail(self) -> None:
        """IDLE on INBOX until something arrives or the lease needs renewing."""
        async def idle(conn: ImapConnection) -> None:
            if self.lease.due:
                await self.lease.renew(conn)
            await conn.select("INBOX")
            await conn.idle(min(self.lease.renew_every, self.settings.poll_seconds))
        await self._retrying(idle)

    def human_for(self, sender: str) -> str:
        """The sender if a human wrote; else (an agent or robot: configured, or its mail
        marked Auto-Submitted) the user."""
        known = {a.address for a in self.config.agents} | {r.address for r in self.config.robots}
        automatic = any(e.sender == sender and e.automatic for e in self._inbox.values())
        return self.config.user if sender in known or automatic or sender == self.address \
            else sender

    def answers(self, reply: Message, incoming: Incoming) -> str | None:
        """A reply to the user threads under the user's last message in the chain."""
        user = self.config.user
        if incoming.sender == user:
            return None
        recipients, _ = parse_address_list(reply.get_all("To", []) + reply.get_all("Cc", []))
        if user not in recipients:
            return None
        by_id = {e.message_id: e for e in (*self._inbox.values(), *self._sent.values())}
        current = by_id.get(incoming.message_id or "")
        for _ in range(200):  # the chain's headers are not ours: bounded
            if current is None:
                return None
            if current.sender == user:
                return current.message_id
            current = by_id.get(current.in_reply_to)
        return None

    async def post(self, message: EmailMessage) -> None:
        """Mail a robot sends unprompted (``RobotContext.post``): From forced, submitted,
        then kept in Sent as a mail client would."""
        del message["From"]
        message["From"] = self.address
        if message["Message-ID"] is None:
            message["Message-ID"] = make_msgid(domain=self.config.domain)
        if message["Date"] is None:
            message["Date"] = formatdate()
        if message["Auto-Submitted"] is None:
            message["Auto-Submitted"] = "auto-generated"
        raw = message.as_bytes()
        recipients, _ = parse_address_list(message.get_all("To", []) + message.get_all("Cc", [])
                                           + message.get_all("Bcc", []))
        await self.smtp.submit(_without_bcc(raw), sender=self.address, recipients=recipients)

        async def keep(conn: ImapConnection) -> None:
            await conn.select(self.settings.sent_folder, create=True)
            await conn.append(raw, self.settings.sent_folder, flags=("\\Seen",))
        await self._retrying(keep)

    async def notify_user(self, subject: str, body: str) -> None:
        """A note from the party to the user (budget spent), by SMTP."""
        raw = (f"From: {self.address}\r\nTo: {self.config.user}\r\nSubject: {subject}\r\n"
               f"{ERROR_HEADER}: budget\r\nAuto-Submitted: auto-generated\r\n"
               f"Date: {formatdate()}\r\nMIME-Version: 1.0\r\n"
               f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()
        try:
            await self.smtp.submit(raw, sender=self.address, recipients=[self.config.user])
        except (SubmitError, OSError, LoginRefused) as exc:
            log.warning("%s: cannot send the note %r: %s", self.address, subject, exc)


def _uid_set(uids: Sequence[int]) -> str:
    return ",".join(str(uid) for uid in sorted(uids))


def _number(value: object, kind: type) -> float:
    try:
        number = kind(str(value).strip())
    except (TypeError, ValueError):
        return 0
    return number if number >= 0 and number == number and number != float("inf") else 0


def _split(raw: bytes) -> tuple[list[bytes], bytes, bytes]:
    newline = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    head, sep, body = raw.partition(newline + newline)
    return head.split(newline), newline, body if sep else b""


def _with_headers(raw: bytes, headers: dict[str, str]) -> bytes:
    """``raw`` with ``headers`` set (any earlier field of those names removed)."""
    return _rewrite_fields(raw, drop=set(headers), add=headers)


def _without_bcc(raw: bytes) -> bytes:
    """What goes over SMTP: the Sent copy without its Bcc field (RFC 5322 §3.6.3)."""
    return _rewrite_fields(raw, drop={"bcc"}, add={})


def _rewrite_fields(raw: bytes, *, drop: set[str], add: dict[str, str]) -> bytes:
    """``raw`` without the fields named in ``drop`` (folded lines too), then ``add`` appended."""
    lines, newline, body = _split(raw)
    names = {name.lower().encode() for name in drop}
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() in names
        if not dropping:
            kept.append(line)
    added = [f"{name}: {value}".encode() for name, value in add.items()]
    return newline.join(kept + added) + newline + newline + body
