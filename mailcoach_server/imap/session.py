"""What the IMAP commands work on: the server-wide backend and one client's session.

:class:`Backend` holds what every connection shares (store, credentials,
folder catalogue, change hub, message cache, per-folder write locks).
:class:`Session` is one client: its protocol :class:`Connection`, its
selected mailbox, and an :class:`Output` to write responses to (the asyncio
adapter's stream, or a list in tests). IDLE's push task lives here too,
since it only needs the selected mailbox and the output.

Not here: the commands themselves (``commands``, ``message_commands``) or
sockets (``server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import itertools
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from ..config import ImapConfig
from ..credentials import Credentials
from ..login_throttle import LoginThrottle
from ..runtime.memory_edits import MemoryEditor
from ..store.store import Store, WritePlan
from .connection import CAPABILITIES, Connection, State
from .folders import Catalogue, Folder
from .heap import give_back_memory
from .hub import Hub
from .messages import MessageCache
from .responses import Cannot, ImapError, Untagged
from .selected import SelectedMailbox

__all__ = ["IDLE_KEEPALIVE", "Backend", "BadArguments", "Output", "ReadOnly", "Session",
           "is_loopback"]

log = logging.getLogger("mailcoach.imap")

_ids = itertools.count(1)
_SENT = "Sent"  # where the router files what the user sent (runtime.router.FOLDERS)
_RELEASE_AFTER = 1.0  # seconds without a client before the rest of the memory goes
_EARLY_SENT_KEPT = 1000  # newest Sent messages read at start, APPENDs kept (a send comes soon)
#: seconds of silence in IDLE before an ``* OK`` keep-alive (Dovecot's
#: imap_idle_notify_interval is 2 minutes too); well under NAT timeouts and
#: RFC 2177's 29-minute re-IDLE
IDLE_KEEPALIVE: Final = 120.0


class Output(Protocol):
    """Where a session's responses go."""

    def write(self, data: bytes) -> None: ...
    def flush(self) -> None:
        """Hand what was written to the socket now, without waiting for the client."""
    async def drain(self) -> None: ...


class ReadOnly(ImapError):
    """STORE, EXPUNGE or MOVE in a mailbox selected read-only."""

    code_name = "READ-ONLY"
    default_text = "the mailbox is read-only"


class BadArguments(ImapError):
    """Arguments that parse but make no sense here (a sequence number past the end)."""

    status = "BAD"
    default_text = "invalid arguments"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class Backend:
    """Everything IMAP sessions share, over one store."""

    store: Store
    config: ImapConfig
    credentials: Credentials
    #: the failed-login throttle shared with SMTP (``app.running`` makes one)
    throttle: LoginThrottle | None = None
    #: without a shared throttle: seconds before the first NO to a wrong password
    login_delay: float = 1.0
    #: plans edits of agents' memories (their Agents/ folders); None: those are read-only
    editor: MemoryEditor | None = None
    #: for STARTTLS; None when no certificate is configured
    tls: ssl.SSLContext | None = None
    login_throttle: LoginThrottle = field(init=False)
    catalogue: Catalogue = field(init=False)
    hub: Hub = field(init=False)
    cache: MessageCache = field(init=False)
    sessions: set[Session] = field(default_factory=set)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _appended_to_sent: dict[str, None] = field(init=False)
    _release_timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self.login_throttle = self.throttle or LoginThrottle(delay=self.login_delay)
        self.catalogue = Catalogue(self.store, self.editor)
        self.hub = Hub(self.store)
        self.cache = MessageCache(self.store.data_dir)
        # Message-IDs a client APPENDed to Sent: the early copies a send may repeat (the
        # newest from before a restart too); looked up in the index only when one repeats
        # (a dict: oldest first, so a client that APPENDs after sending keeps it bounded)
        self._appended_to_sent = dict.fromkeys(reversed(
            self.store.folders.newest_appended_message_ids(_SENT, _EARLY_SENT_KEPT)))
        self.store.listeners.append(self._after_commit)

    # -- Sent mail, once ----------------------------------------------------------------------

    def _after_commit(self, plans: list[WritePlan]) -> None:
        """A client that saves to Sent *before* sending (APPEND, then SMTP) left a copy
        the router is now filing again: drop the early one, keep the one that was sent."""
        sent = []
        for plan in plans:
            message_id = plan.meta.message_id
            if _SENT not in plan.folders or not message_id:
                continue
            if plan.file == "imap":
                self.filed_in_sent([message_id])
            elif message_id in self._appended_to_sent:  # else there is no copy to look for
                del self._appended_to_sent[message_id]
                sent.append(message_id)
        if sent:
            task = asyncio.get_running_loop().create_task(
                self._drop_early_sent_copies(sent), name="imap-sent-once")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def filed_in_sent(self, message_ids: Iterable[str]) -> None:
        """A client put these in Sent (APPEND, COPY): a later send drops that copy."""
        known = self._appended_to_sent
        for message_id in message_ids:
            known[message_id] = None
        while len(known) > _EARLY_SENT_KEPT:
            del known[next(iter(known))]

    async def _drop_early_sent_copies(self, message_ids: list[str]) -> None:
        try:
            async with self.lock(_SENT):
                folder = Folder(_SENT, 0, 0)
                uids = self.store.folders.appended_uids(_SENT, message_ids)
                if uids and self.hub.watched(_SENT):
                    self.hub.expunging(_SENT, self.catalogue.rows_of(folder, uids))
                await self.catalogue.expunge(folder, uids)
            self.hub.expunged(_SENT, uids)
        except Exception:  # never worth more than a log line: the copy just stays
            log.exception("could not drop an early Sent copy of %s", message_ids)

    @property
    def plaintext_refused(self) -> bool:
        """RFC 3501 §6.2.3: no passwords in the clear off loopback (until STARTTLS).

        ``imap.allow_plaintext_auth`` lifts it for a container whose published
        port is on the host's loopback.
        """
        if self.config.allow_plaintext_auth:
            return False
        return not is_loopback(self.config.host)

    def lock(self, folder: str) -> asyncio.Lock:
        """Serialises flag and expunge writes to one folder (read, change, write)."""
        lock = self._locks.get(folder)
        if lock is None:
            lock = self._locks[folder] = asyncio.Lock()
        return lock

    # -- memory, once the clients have gone ---------------------------------------------

    def last_client_gone(self) -> None:
        """Nobody left to fetch again soon: the messages' bytes go, and the heap is
        trimmed; if nobody came back a while later, the rest (see ``_release``)."""
        self.cache.forget_views()
        give_back_memory()
        if self._release_timer is not None:
            self._release_timer.cancel()
        self._release_timer = asyncio.get_running_loop().call_later(
            _RELEASE_AFTER, self._release)

    def _release(self) -> None:
        """What a client reconnecting at once would need again: unreachable cycles, the
        header cache (closed) and SQLite's page caches (tens of ms to collect, reopen,
        re-read), then the heap trimmed."""
        self._release_timer = None
        if self.sessions:
            return
        gc.collect()
        self.cache.clear()
        self.store.release_memory(then=give_back_memory)

    def close(self) -> None:
        if self._after_commit in self.store.listeners:
            self.store.listeners.remove(self._after_commit)
        if self._release_timer is not None:
            self._release_timer.cancel()
        for task in self._tasks:
            task.cancel()
        self.hub.close()
        self.cache.clear()


class Session:
    """One client connection's state above the protocol core."""

    def __init__(self, backend: Backend, out: Output, *, peer: str = "?") -> None:
        self.backend = backend
        self.out = out
        self.id = f"imap#{next(_ids)}"
        self.peer = peer
        #: TLS is on (after STARTTLS)
        self.tls_active = False
        #: STARTTLS was answered OK: the adapter must start TLS before reading on
        self.starttls_pending = False
        self.conn = self._new_connection()
        self.selected: SelectedMailbox | None = None
        self.client_id: dict[str, str | None] = {}
        self._idle_task: asyncio.Task[None] | None = None
        backend.sessions.add(self)

    def _new_connection(self) -> Connection:
        config = self.backend.config
        return Connection(
            max_line=config.max_line,
            max_literal=config.max_literal,
            bad_command_limit=config.bad_command_limit,
            login_disabled=self.backend.plaintext_refused and not self.tls_active,
        )

    def tls_started(self) -> None:
        """After the TLS handshake: a fresh protocol state, so nothing the client sent
        in the clear before it can count (RFC 3501 §6.2.1, the STARTTLS injection attack)."""
        self.starttls_pending = False
        self.tls_active = True
        self.conn = self._new_connection()

    # -- output --------------------------------------------------------------------------

    def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.out.write(chunk)

    def send_all(self, chunks: Iterable[bytes]) -> None:
        data = b"".join(chunks)
        if data:
            self.out.write(data)

    def capabilities(self) -> tuple[str, ...]:
        caps = list(CAPABILITIES)
        if self.conn.state is State.NOT_AUTHENTICATED:
            if self.backend.tls is not None and not self.tls_active:
                caps.append("STARTTLS")
            if self.conn.login_disabled:
                caps = [c for c in caps if not c.startswith("AUTH=")] + ["LOGINDISABLED"]
        else:
            caps = [c for c in caps if not c.startswith("AUTH=") and c != "SASL-IR"]
        return tuple(caps)

    # -- the selected mailbox --------------------------------------------------------------

    def require_selected(self) -> SelectedMailbox:
        if self.selected is None:  # the connection's state table makes this a bug
            raise Cannot("no mailbox selected")
        return self.selected

    def select(self, mailbox: SelectedMailbox) -> None:
        self.unselect()
        self.selected = mailbox
        self.backend.hub.watch(mailbox.name, mailbox)
        self.conn.selected(mailbox.name, read_only=mailbox.read_only)

    def unselect(self) -> None:
        if self.selected is not None:
            self.backend.hub.unwatch(self.selected.name, self.selected)
            self.selected = None
            self.conn.unselected()

    def poll(self, *, expunge: bool = True) -> None:
        """Report what changed in the selected mailbox since the client last heard."""
        if self.selected is not None:
            self.send_all(self.selected.poll(expunge=expunge))

    # -- IDLE (RFC 2177) --------------------------------------------------------------------

    def start_idle(self) -> None:
        self._idle_task = asyncio.create_task(self._push(), name=f"{self.id}-idle")

    async def stop_idle(self) -> None:
        task, self._idle_task = self._idle_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _push(self) -> None:
        """While IDLE: new mail, flags and expunges go out as soon as the hub says so.

        With nothing to say for :data:`IDLE_KEEPALIVE` seconds, an ``* OK`` goes out
        (RFC 2177 §3 allows it), so clients and NAT boxes do not drop a quiet IDLE.
        """
        while True:
            selected = self.selected
            # nothing to watch (IDLE without a mailbox): only keep-alives until DONE
            changed = selected.changed if selected is not None else asyncio.Event()
            try:
                async with asyncio.timeout(IDLE_KEEPALIVE):
                    await changed.wait()
            except TimeoutError:
                try:
                    self.send(bytes(Untagged.ok("still here")))
                    await self.out.drain()
                except (ConnectionError, OSError):
                    return
                continue
            try:
                self.poll()
                await self.out.drain()
            except (ConnectionError, OSError):
                return
            except Exception:  # a bug: log it, keep the connection
                log.exception("%s: IDLE update failed", self.id)
                return

    async def close(self) -> None:
        await self.stop_idle()
        if self.selected is not None:
            self.backend.hub.unwatch(self.selected.name, self.selected)
            self.selected = None
        self.backend.sessions.discard(self)
        if not self.backend.sessions:
            self.backend.last_client_gone()
