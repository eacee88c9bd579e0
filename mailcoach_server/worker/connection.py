"""One IMAP connection as a party, through aioimaplib: the commands the worker uses.

aioimaplib (GPL-3.0-only, hence the optional ``mailcoach[worker]`` extra) does
the protocol; this adapter adds what the worker needs around it: TLS or
STARTTLS, a clear error for a refused login or an unreachable server, one
command at a time (an ``asyncio.Lock``), CONDSTORE enabled, and responses read
into values (``worker/fetch.py``). Every failure of the connection itself is a
:class:`ServerAway` (an ``OSError``): the caller reconnects with backoff.

TLS (contexts from ``worker/tls.py``, always verified unless ``verify: false``):

* ``security: tls`` gives aioimaplib's ``IMAP4`` the context, so the TCP
  connection is TLS from its first byte (``IMAP4_SSL`` does the same but takes
  no ``conn_lost_cb``, which wakes an IDLE when the server goes).
* ``security: starttls``: aioimaplib 2.0 knows the STARTTLS command but not the
  upgrade, and asyncio's ``loop.start_tls`` is the stdlib's way to do it on a
  live transport. RFC 3501 §6.2.1 and RFC 2595 §3.1 say what must hold, and each
  is checked: the server must list STARTTLS (else :class:`TlsUnavailable`, never
  a plaintext login); an answer other than OK is the same error; nothing may
  follow the OK before the handshake (a part line left over then could only be
  an injection, CVE-2011-0411's kind: refused); after the handshake what was
  learnt in plaintext (the capabilities) is discarded and asked again over TLS,
  before LOGIN.
* A certificate that fails verification is :class:`TlsUnavailable` too: the
  worker stops with the error (retrying will not change the certificate); a
  connection that drops during a handshake is :class:`ServerAway` as any other.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import MailcoachError
from .fetch import Fetched, parse_fetch, response_code, search_uids
from .settings import MailServer
from .tls import TlsUnavailable, certificate_problem, client_context

try:
    import aioimaplib
except ImportError:  # pragma: no cover - the extra is not installed
    aioimaplib = None

__all__ = ["ImapConnection", "LoginRefused", "SelectedFolder", "ServerAway", "TlsUnavailable",
           "imap_library"]

log = logging.getLogger("mailcoach.worker.imap")

#: seconds one command may take before the connection counts as gone
_COMMAND_TIMEOUT = 60.0


class ServerAway(ConnectionError):
    """The IMAP server cannot be reached now, or the connection dropped."""


class LoginRefused(MailcoachError):
    """The server refused the login: a wrong password or user; retrying will not help."""


@dataclass(frozen=True, slots=True)
class SelectedFolder:
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    exists: int


def imap_library() -> object:
    """aioimaplib, or a clear error when the worker extra is not installed."""
    if aioimaplib is None:
        raise MailcoachError("mailcoach worker needs aioimaplib: "
                             "pip install 'mailcoach[worker]'")
    return aioimaplib


class ImapConnection:
    """Logged in as one party; ``await ImapConnection.open(server, login, password)``."""

    def __init__(self, client: object, server: MailServer, login: str) -> None:
        self._client = client
        self.server = server
        self.login = login
        self.lock = asyncio.Lock()
        self.selected: SelectedFolder | None = None
        self.capabilities: frozenset[str] = frozenset()

    @classmethod
    async def open(cls, server: MailServer, login: str, password: str) -> ImapConnection:
        """Connect, secure the connection as configured, log in, enable CONDSTORE.

        Raises:
            ServerAway: the server is not reachable or dropped the connection.
            LoginRefused: the server said NO to the login.
            TlsUnavailable: TLS as configured cannot be had (see the module docstring).
        """
        where = f"{server.host}:{server.port}"
        context = client_context(server) if server.security != "none" else None
        client = await _greeted_client(server, context)
        self = cls(client, server, login)
        try:
            if server.security == "starttls":
                assert context is not None
                await self._starttls(context)
            response = await client.login(login, password)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            await self.close()
            raise certificate_problem(exc, server, "IMAP") or ServerAway(
                f"the IMAP server {where} dropped the connection: {_reason(exc)}") from None
        except TlsUnavailable:
            await self.close()
            raise
        except Exception as exc:  # aioimaplib's Abort/Error: this connection is unusable
            await self.close()
            if not _library_error(exc):
                raise
            raise ServerAway(f"the IMAP server {where}: {exc}") from None
        if response.result != "OK":
            await self.close()
            said = _text(response.lines[-1:]) if response.lines else response.result
            raise LoginRefused(f"the IMAP server {where} refused the login {login!r}: {said}")
        await self._capabilities()
        if "CONDSTORE" in self.capabilities:
            await self.command("enable", "CONDSTORE")
        return self

    async def _starttls(self, context: ssl.SSLContext) -> None:
        """RFC 3501 §6.2.1 on aioimaplib's protocol (see the module docstring)."""
        library = imap_library()
        protocol = self._client.protocol
        where = f"{self.server.host}:{self.server.port}"
        await asyncio.wait_for(protocol.capability(), _COMMAND_TIMEOUT)
        if "STARTTLS" not in {c.upper() for c in protocol.capabilities}:
            raise TlsUnavailable(f"the IMAP server {where} offers no STARTTLS, and imap.security "
                                 "is starttls: this worker will not log in in plaintext (use "
                                 "security: tls on the server's IMAPS port, usually 993)")
        # aioimaplib's protocol method is named like a DB call; it sends one IMAP command
        send_command = protocol.execute
        response = await asyncio.wait_for(send_command(
            library.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)),
            _COMMAND_TIMEOUT)
        if response.result != "OK":
            raise TlsUnavailable(f"the IMAP server {where} refused STARTTLS: "
                                 f"{_text(response.lines) or response.result}")
        if protocol.incomplete_line:  # bytes after the OK, before TLS: not the server's
            raise TlsUnavailable(f"the IMAP server {where} sent data after its STARTTLS "
                                 "answer, before TLS began: refused (RFC 2595 §3.1)")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, context, server_hostname=self.server.host,
            ssl_handshake_timeout=_COMMAND_TIMEOUT)
        if protocol.transport is None or protocol.transport.get_extra_info("ssl_object") is None:
            raise ServerAway(f"the IMAP server {where}: the TLS handshake did not complete")
        # RFC 3501 §6.2.1: what was learnt before TLS is discarded and asked again
        protocol.capabilities = set()
        await asyncio.wait_for(protocol.capability(), _COMMAND_TIMEOUT)

    async def _capabilities(self) -> None:
        try:  # after LOGIN the server may offer more (RFC 3501 §6.2.3)
            await asyncio.wait_for(self._client.protocol.capability(), _COMMAND_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ServerAway(f"IMAP CAPABILITY failed: {_reason(exc)}") from None
        self.capabilities = frozenset(c.upper() for c in self._client.protocol.capabilities)

    async def close(self) -> None:
        try:
            if self._client.protocol is not None and self._client.protocol.transport is not None:
                await asyncio.wait_for(self._client.logout(), 5)
        except Exception:  # closing a connection that is already gone
            pass
        finally:
            transport = getattr(self._client.protocol, "transport", None)
            if transport is not None:
                transport.close()

    # -- commands ------------------------------------------------------------------------

    async def command(self, name: str, *args: str) -> object:
        """Run one aioimaplib command; a dropped connection or timeout is ServerAway."""
        method = getattr(self._client, name)
        try:
            return await asyncio.wait_for(method(*args), _COMMAND_TIMEOUT)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise ServerAway(f"IMAP {name.upper()} failed: {_reason(exc)}") from None
        except Exception as exc:  # aioimaplib's Abort/Error: the connection is unusable
            if _library_error(exc):
                raise ServerAway(f"IMAP {name.upper()} failed: {exc}") from None
            raise

    async def select(self, folder: str, *, create: bool = False) -> SelectedFolder:
        """SELECT ``folder`` (creating it first if asked); returns its UIDVALIDITY and more."""
        response = await self.command("select", _quote(folder))
        if response.result != "OK" and create:
            await self.command("create", _quote(folder))
            await self.command("subscribe", _quote(folder))
            response = await self.command("select", _quote(folder))
        if response.result != "OK":
            self.selected = None
            raise ServerAway(f"cannot select {folder}: {_text(response.lines)}")

        def code(name: str) -> int:
            value = response_code(response.lines, name)
            return int(value[0]) if value and value[0].isdigit() else 0
        exists = next((int(line.split()[0]) for line in response.lines
                       if isinstance(line, bytes) and line.endswith(b" EXISTS")), 0)
        self.selected = SelectedFolder(folder, code("UIDVALIDITY"), code("UIDNEXT"),
                                       code("HIGHESTMODSEQ"), exists)
        return self.selected

    async def uid_search(self, *criteria: str) -> list[int]:
        response = await self.command("uid_search", *criteria)
        _check(response, "UID SEARCH")
        return search_uids(response.lines)

    async def uid_fetch(self, uids: str, items: str) -> list[Fetched]:
        response = await self.command("uid", "fetch", uids, items)
        _check(response, "UID FETCH")
        return parse_fetch(response.lines)

    async def uid_store(self, uids: str, *args: str) -> tuple[bool, list[Fetched]]:
        """UID STORE; False when an UNCHANGEDSINCE condition failed (RFC 7162 MODIFIED)."""
        response = await self.command("uid", "store", uids, *args)
        _check(response, "UID STORE")
        return response_code(response.lines, "MODIFIED") is None, parse_fetch(response.lines)

    async def append(self, raw: bytes, folder: str, flags: Sequence[str] = (),
                     date: object = None) -> int | None:
        """APPEND; the new message's UID when the server says (UIDPLUS), else None."""
        response = await self.command("append", raw, _quote(folder),
                                      "(" + " ".join(flags) + ")" if flags else None, date)
        if response.result != "OK":
            full = b"OVERQUOTA" in b" ".join(bytes(x) for x in response.lines).upper()
            raise ServerAway(f"APPEND to {folder} refused{' (mailbox full)' if full else ''}: "
                             f"{_text(response.lines)}")
        uid = response_code(response.lines, "APPENDUID")
        return int(uid[1]) if uid and len(uid) > 1 and uid[1].isdigit() else None

    async def expunge_uids(self, uids: Sequence[int]) -> None:
        """Remove messages already flagged \\Deleted (UID EXPUNGE, RFC 4315)."""
        if uids and "UIDPLUS" in self.capabilities:
            await self.command("uid", "expunge", ",".join(map(str, uids)))

    async def idle(self, seconds: float) -> bool:
        """IDLE for at most ``seconds``; True when the server said something happened."""
        if "IDLE" not in self.capabilities:
            await asyncio.sleep(seconds)
            return True
        try:
            waiting = await self._client.idle_start(timeout=seconds)
            try:
                pushed = await self._client.wait_server_push(timeout=seconds + 5)
            finally:
                self._client.idle_done()
                await asyncio.wait_for(waiting, 10)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise ServerAway(f"IDLE ended: {_reason(exc)}") from None
        except Exception as exc:
            if _library_error(exc):
                raise ServerAway(f"IDLE ended: {exc}") from None
            raise
        if not self.alive:
            raise ServerAway("the server closed the connection during IDLE")
        return any(isinstance(line, bytes) and (line.endswith(b"EXISTS") or b"FETCH" in line)
                   for line in (pushed if isinstance(pushed, list) else []))

    @property
    def alive(self) -> bool:
        protocol = self._client.protocol
        return (protocol is not None and protocol.transport is not None
                and not protocol.transport.is_closing() and protocol.state != "LOGOUT")


async def _greeted_client(server: MailServer, context: ssl.SSLContext | None) -> object:
    """An aioimaplib client that has the server's greeting, TLS from the first byte for
    ``security: tls``; else :class:`ServerAway` (or the certificate's problem)."""
    library = imap_library()
    where = f"{server.host}:{server.port}"
    gone = asyncio.get_running_loop().create_future()

    def connection_lost(_exc: object) -> None:  # ends a wait for the greeting, wakes an IDLE
        if not gone.done():
            gone.set_result(None)
        client.protocol.idle_queue.put_nowait([b"* BYE connection lost"])
    # the connection is made in a task: connection_lost runs only once ``client`` is set
    client = library.IMAP4(server.host, server.port, timeout=_COMMAND_TIMEOUT,
                           conn_lost_cb=connection_lost,
                           ssl_context=context if server.security == "tls" else None)
    _watch_greeting(client.protocol, gone)
    try:
        await _greeting(client, gone)
    except (TimeoutError, OSError, ssl.SSLError) as exc:
        _drop(client)
        raise certificate_problem(exc, server, "IMAP") or ServerAway(
            f"cannot reach the IMAP server {where}: {_reason(exc)}") from None
    except BaseException as exc:  # aioimaplib's own (a greeting it could not read), a cancel
        _drop(client)
        if not _library_error(exc):
            raise
        raise ServerAway(f"the IMAP server {where}: {exc}") from None
    return client


def _watch_greeting(protocol: object, gone: asyncio.Future) -> None:
    """A greeting other than OK or PREAUTH (``* BYE Too many connections``) ends the
    wait for one with the server's words: aioimaplib's ``welcome`` raises it in a task
    nobody awaits, and the state it waits for never comes."""
    welcome = protocol.welcome

    async def welcome_or_report(line: bytes) -> None:
        try:
            await welcome(line)
        except Exception as exc:
            if not _library_error(exc):
                raise
            if not gone.done():
                gone.set_result(bytes(line).decode("utf-8", "replace")[:300])
    protocol.welcome = welcome_or_report  # an instance attribute: this connection only


async def _greeting(client: object, gone: asyncio.Future) -> None:
    """The server's greeting, or an error as soon as the connection is lost or refused.

    aioimaplib waits for the greeting until its timeout even when the server has
    closed the connection or refused it (a server shutting down says ``* BYE`` and
    closes): the worker would wait a minute to retry; here either ends the wait.
    """
    hello = asyncio.ensure_future(client.wait_hello_from_server())
    try:
        await asyncio.wait((hello, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the caller gives up: nothing is left waiting for a minute
        greeted = hello.done()
        if not greeted:
            hello.cancel()
    if greeted:
        hello.result()  # raises what the connection or the handshake raised
        return
    said = gone.result()
    raise ConnectionRefusedError(f"the server greeted with {said!r}" if said else
                                 "the server closed the connection before its greeting")


def _drop(client: object) -> None:
    """Close the socket of a client that never got a greeting (there is no LOGOUT to send).

    A connection still being made was cancelled with the wait for the greeting.
    """
    transport = getattr(client.protocol, "transport", None)
    if transport is not None:
        transport.close()


def _library_error(exc: BaseException) -> bool:
    """aioimaplib's own exceptions (Abort, Error, CommandTimeout...)."""
    return type(exc).__module__.startswith("aioimaplib")


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(lines: Sequence[bytes | bytearray]) -> str:
    return " ".join(bytes(line).decode("utf-8", "replace") for line in lines
                    if not isinstance(line, bytearray))[:300]


def _check(response: object, what: str) -> None:
    if response.result != "OK":
        raise ServerAway(f"{what} answered {response.result}: {_text(response.lines)}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
