"""The IMAP listener: asyncio streams around the sans-I/O core, and nothing else.

``start_imap(server)`` binds ``config.imap.host:port`` and runs, per client,
the loop of :mod:`.connection`'s docstring: bytes in, events out, commands
to :func:`.commands.dispatch`, responses buffered and written in one chunk
per batch. Limits come from the config: line and literal sizes and the
bad-command budget (the core enforces them; this loop says BYE and
closes), and ``idle_timeout`` (RFC 3501 §5.4 autologout, IDLE included).

No client input can end the server: a command that fails unexpectedly is
logged with its traceback and answered ``NO [SERVERBUG]``; the client
never sees a traceback. Closing the listener says BYE to every client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from typing import TYPE_CHECKING

from ..config import ImapConfig
from ..runtime.memory_edits import MemoryEditor
from .command import BadCommand
from .commands import dispatch, greeting
from .connection import NEED_DATA, NeedContinuation, NeedData, State, TooManyBad
from .responses import Untagged
from .session import Backend, Session

if TYPE_CHECKING:
    from ..app import Server

__all__ = ["start_imap"]

log = logging.getLogger("mailcoach.imap")

_READ_SIZE = 256 * 1024
_FLUSH_AT = 1024 * 1024
_SECRET = re.compile(rb"^(\S+ (?:UID )?(?:LOGIN|AUTHENTICATE) )[^\r\n]*", re.IGNORECASE)


class _StreamOutput:
    """Responses collected and written to the stream in one piece per batch."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._chunks: list[bytes] = []
        self.pending = 0
        self.label = "imap"

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self.pending += len(data)

    def flush(self) -> None:
        if self._chunks and not self._writer.is_closing():
            data = b"".join(self._chunks)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s <--| %r", self.label, data[:300])
            self._writer.write(data)
        self._chunks.clear()
        self.pending = 0

    async def drain(self) -> None:
        self.flush()
        await self._writer.drain()


def _redacted(data: bytes, in_sasl: bool) -> bytes:
    if in_sasl:
        return b"<SASL response>"
    return _SECRET.sub(rb"\1<redacted>", data[:300])


async def _start_tls(session: Session, writer: asyncio.StreamWriter) -> None:
    assert session.backend.tls is not None
    await writer.start_tls(session.backend.tls, ssl_handshake_timeout=30)
    session.tls_started()
    log.debug("%s: TLS started", session.id)


def _tls_context(config: ImapConfig) -> ssl.SSLContext | None:
    """A server context from ``imap.tls_cert`` / ``imap.tls_key`` (PEM files), if set."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key or config.tls_cert)
    return context


async def _serve_client(backend: Backend, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    peername = writer.get_extra_info("peername")
    peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
    out = _StreamOutput(writer)
    session = Session(backend, out, peer=peer)
    out.label = session.id
    conn = session.conn
    log.debug("%s: connection from %s", session.id, peer)
    try:
        out.write(greeting(session))
        await out.drain()
        while conn.state is not State.LOGOUT:
            try:
                async with asyncio.timeout(backend.config.idle_timeout):
                    data = await reader.read(_READ_SIZE)
            except TimeoutError:
                out.write(bytes(Untagged.bye("autologout: idle for too long")))
                break
            if not data:
                break
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s -->| %r", session.id, _redacted(data, conn.in_sasl))
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, NeedContinuation):
                    out.write(conn.send(event.continuation))
                elif isinstance(event, BadCommand):
                    out.write(conn.send(event.to_response()))
                    if event.fatal or event.code == "TOOBIG":  # the issue: oversize ends it
                        out.write(bytes(Untagged.bye(f"closing: {event.reason}")))
                        conn.logout()
                elif isinstance(event, TooManyBad):
                    out.write(conn.send(event.to_response()))
                elif not isinstance(event, NeedData):  # (never: the loop stops on it)
                    await dispatch(session, event)
                    if session.starttls_pending:
                        await out.drain()
                        await _start_tls(session, writer)
                        conn = session.conn  # a fresh one: what came before TLS is gone
                        break
                if out.pending >= _FLUSH_AT:
                    await out.drain()
            await out.drain()
        await out.drain()
    except (ConnectionError, OSError) as exc:
        log.debug("%s: connection lost: %s", session.id, exc)
    except Exception:
        log.exception("%s: session failed", session.id)
        with contextlib.suppress(Exception):
            out.write(bytes(Untagged.bye("internal server error")))
            out.flush()
    finally:
        await session.close()
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2)
        log.debug("%s: closed", session.id)


async def start_imap(server: Server) -> asyncio.Server:
    """Listen for IMAP clients on ``server.config.imap`` until the listener is closed."""
    config = server.config.imap
    backend = Backend(server.store, config, server.credentials, tls=_tls_context(config),
                      throttle=server.login_throttle,
                      # a front end without agents (tests of the protocol alone) has no editor
                      editor=MemoryEditor(server.engine.router) if server.engine else None)
    writers: set[asyncio.StreamWriter] = set()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await _serve_client(backend, reader, writer)
        finally:
            writers.discard(writer)

    listener = await asyncio.start_server(client, config.host, config.port,
                                          limit=config.max_line + 1024)
    stop_listening = listener.close

    def close() -> None:
        """Stop listening, then say BYE to every client (Python < 3.13 has no close_clients)."""
        stop_listening()
        backend.close()
        for writer in list(writers):
            with contextlib.suppress(Exception):
                writer.write(bytes(Untagged.bye("mailcoach is shutting down")))
                writer.close()

    listener.close = close  # type: ignore[method-assign]
    if backend.plaintext_refused:
        log.warning("IMAP on %s is not loopback: password logins need STARTTLS first%s",
                    config.host, "" if backend.tls else " (no certificate: LOGINDISABLED)")
    return listener
