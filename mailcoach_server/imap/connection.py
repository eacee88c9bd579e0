"""The IMAP connection state machine, without I/O (h11 style).

Rules - everything that moves the state lives in this module:

* States (RFC 3501 §3): NOT_AUTHENTICATED → AUTHENTICATED ⇄ SELECTED → LOGOUT.
  The command layer moves them by calling :meth:`Connection.authenticated`,
  :meth:`~Connection.selected`, :meth:`~Connection.unselected` and
  :meth:`~Connection.logout` after it has done the work; the connection
  never checks credentials or mailboxes itself.
* :data:`COMMAND_STATES` says which command is legal where; it is derived
  from each command's one declaration in :data:`.parser.COMMAND_TABLE`.
  A command outside its states becomes a :class:`BadCommand`.
* Sub-modes: *awaiting a literal* (a ``{N}`` was announced: the event is
  :class:`NeedContinuation`, then ``NEED_DATA`` until the bytes are in),
  *IDLE* (entered when an IDLE command is handed out; the next line ends
  it as :class:`IdleDone`), and *SASL* (AUTHENTICATE PLAIN or LOGIN: the
  connection sends the challenges and reads the base64 lines, then hands
  out :class:`SaslResponse`; ``*`` cancels with a BAD). With ``login_disabled``
  (RFC 3501 §6.2.3, plaintext off loopback without TLS) AUTHENTICATE is handed
  out as a command instead, for the command layer to refuse.
* Every response goes through :meth:`Connection.send`, which counts
  consecutive tagged BADs; at ``bad_command_limit`` the next event is
  :class:`TooManyBad` (send its BYE and close) and the state is LOGOUT.

The adapter loop::

    conn.receive_data(await reader.read(65536))
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, NeedContinuation): write(conn.send(event.continuation))
        elif isinstance(event, (BadCommand, IdleDone)): write(conn.send(event.to_response()))
        elif isinstance(event, TooManyBad): write(conn.send(event.to_response())); close()
        else: await commands.dispatch(conn, event)     # Command or SaslResponse
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace

from .command import AuthenticateCommand, BadCommand, Command, Incomplete, NeedLiteral
from .parser import (
    COMMAND_TABLE,
    DEFAULT_MAX_LINE,
    parse_command,
    parse_idle_done,
    parse_sasl_response,
)
from .registry import AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, State
from .responses import Continuation, Response, Tagged, Untagged

__all__ = [
    "CAPABILITIES",
    "COMMAND_STATES",
    "NEED_DATA",
    "SASL_MECHANISMS",
    "Connection",
    "Event",
    "IdleDone",
    "NeedContinuation",
    "NeedData",
    "SaslResponse",
    "State",
    "TooManyBad",
]


class NeedData:
    """Nothing to do until :meth:`Connection.receive_data` is called again."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """Send ``continuation`` (``+ Ready`` or a SASL challenge); the client then goes on."""

    continuation: Continuation


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The line that ended IDLE: ``ok`` when it was ``DONE`` (RFC 2177)."""

    tag: str
    ok: bool

    def to_response(self) -> Tagged:
        if self.ok:
            return Tagged.ok(self.tag, "IDLE terminated")
        return Tagged.bad(self.tag, "expected DONE")


@dataclass(frozen=True, slots=True)
class SaslResponse:
    """Credentials from AUTHENTICATE PLAIN (RFC 4616) or LOGIN, for the command layer
    to check: then ``authenticated(user)`` + OK, or NO [AUTHENTICATIONFAILED]."""

    tag: str
    mechanism: str
    authzid: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class TooManyBad:
    """The client sent ``limit`` bad commands in a row: say BYE and close."""

    limit: int

    def to_response(self) -> Untagged:
        return Untagged.bye("too many bad commands")


Event = Command | BadCommand | NeedContinuation | IdleDone | SaslResponse | TooManyBad | NeedData

#: Which commands are legal in which state (UID commands under their base name),
#: from the one declaration of each command in :data:`.parser.COMMAND_TABLE`.
COMMAND_STATES: dict[str, frozenset[State]] = {spec.name: spec.states for spec in COMMAND_TABLE}

SASL_MECHANISMS = ("PLAIN", "LOGIN")

#: What this core can parse; the server may add or drop (e.g. LOGINDISABLED).
CAPABILITIES = (
    "IMAP4rev1", "LITERAL+", "SASL-IR", "IDLE", "UIDPLUS", "NAMESPACE", "ID", "SPECIAL-USE",
    "MOVE", "UNSELECT", "ENABLE", "AUTH=PLAIN", "AUTH=LOGIN",
)

_NOT_ALLOWED = "command not allowed in this state"


@dataclass(slots=True)
class _Sasl:
    tag: str
    mechanism: str
    username: str | None = None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("ascii")).decode("ascii")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class Connection:
    """One client's protocol state. Feed bytes in, take events out, send responses."""

    def __init__(
        self,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_literal: int = 32 * 1024 * 1024,
        bad_command_limit: int = 5,
        login_disabled: bool = False,
    ) -> None:
        self.state = State.NOT_AUTHENTICATED
        #: RFC 3501 §6.2.3 LOGINDISABLED: AUTHENTICATE goes to the command layer (which
        #: refuses it) instead of starting a SASL exchange that would carry a password.
        self.login_disabled = login_disabled
        self.user: str | None = None
        self.mailbox: str | None = None
        self.read_only = False
        self._max_line = max_line
        self._max_literal = max_literal
        self._bad_limit = bad_command_limit
        self._bad_count = 0
        self._buf = bytearray()
        self._wait_for = 0  # don't re-parse before the buffer holds this many bytes
        self._announced: set[int] = set()  # literal offsets already answered with "+"
        self._idle_tag: str | None = None
        self._sasl: _Sasl | None = None

    # -- input --------------------------------------------------------------------

    @property
    def idling(self) -> bool:
        return self._idle_tag is not None

    @property
    def in_sasl(self) -> bool:
        return self._sasl is not None

    @property
    def awaiting_literal(self) -> bool:
        return len(self._buf) < self._wait_for

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client (ignored once the state is LOGOUT)."""
        if self.state is not State.LOGOUT:
            self._buf += data

    def _consume(self, count: int) -> None:
        del self._buf[:count]
        self._wait_for = 0
        self._announced.clear()

    def next_event(self) -> Event:
        """The next thing the server must act on, or ``NEED_DATA``."""
        if self.state is State.LOGOUT:
            return NEED_DATA
        if self._bad_limit and self._bad_count >= self._bad_limit:
            self.state = State.LOGOUT
            return TooManyBad(self._bad_limit)
        if self._idle_tag is not None:
            return self._idle_event(self._idle_tag)
        if self._sasl is not None:
            return self._sasl_event(self._sasl)
        if len(self._buf) < self._wait_for:
            return NEED_DATA
        result = parse_command(
            bytes(self._buf), max_literal=self._max_literal, max_line=self._max_line
        )
        if isinstance(result, Incomplete):
            return NEED_DATA
        if isinstance(result, NeedLiteral):
            return self._literal_event(result)
        if isinstance(result, BadCommand):
            return self._bad(result)
        command, consumed = result
        self._consume(consumed)
        if self.state not in COMMAND_STATES[command.name]:
            return BadCommand(command.tag, _NOT_ALLOWED, consumed)
        if command.name == "IDLE":
            self._idle_tag = command.tag
        if (isinstance(command, AuthenticateCommand) and command.mechanism in SASL_MECHANISMS
                and not self.login_disabled):
            return self._sasl_start(command)
        return command

    def _bad(self, bad: BadCommand) -> BadCommand:
        self._consume(bad.consumed)
        if bad.fatal:
            self.state = State.LOGOUT
        return bad

    def _literal_event(self, need: NeedLiteral) -> Event:
        self._wait_for = need.offset + need.size
        if need.offset in self._announced:
            return NEED_DATA
        self._announced.add(need.offset)
        if not need.synchronizing:  # LITERAL+: the bytes are already on their way
            return NEED_DATA
        states = COMMAND_STATES.get(need.command)
        if states is not None and self.state not in states:
            # Refuse before the client uploads: it waits for "+" and gets the BAD.
            return self._bad(BadCommand(need.tag, _NOT_ALLOWED, need.offset))
        return NeedContinuation(Continuation("Ready"))

    def _idle_event(self, tag: str) -> Event:
        result = parse_idle_done(bytes(self._buf), max_line=self._max_line)
        if isinstance(result, Incomplete):
            return NEED_DATA
        self._idle_tag = None
        if isinstance(result, BadCommand):
            return self._bad(replace(result, tag=tag))
        done, consumed = result
        self._consume(consumed)
        return IdleDone(tag, done)

    # -- SASL (RFC 3501 §6.2.2, RFC 4616, draft-murchison-sasl-login) -----------------------

    def _sasl_start(self, command: AuthenticateCommand) -> Event:
        sasl = _Sasl(command.tag, command.mechanism)
        if command.initial_response is not None:
            return self._sasl_step(sasl, command.initial_response)
        self._sasl = sasl
        challenge = "" if sasl.mechanism == "PLAIN" else _b64("Username:")
        return NeedContinuation(Continuation(challenge))

    def _sasl_event(self, sasl: _Sasl) -> Event:
        result = parse_sasl_response(bytes(self._buf), max_line=self._max_line)
        if isinstance(result, Incomplete):
            return NEED_DATA
        self._sasl = None
        if isinstance(result, BadCommand):
            return self._bad(replace(result, tag=sasl.tag))
        data, consumed = result
        self._consume(consumed)
        if data is None:
            return BadCommand(sasl.tag, "AUTHENTICATE cancelled", consumed)
        return self._sasl_step(sasl, data)

    def _sasl_step(self, sasl: _Sasl, data: bytes) -> Event:
        if sasl.mechanism == "PLAIN":
            parts = data.split(b"\0")
            if len(parts) != 3:
                return BadCommand(sasl.tag, "malformed PLAIN response")
            authzid, username, password = (_text(p) for p in parts)
            return SaslResponse(sasl.tag, "PLAIN", authzid, username, password)
        if sasl.username is None:
            sasl.username = _text(data)
            self._sasl = sasl
            return NeedContinuation(Continuation(_b64("Password:")))
        return SaslResponse(sasl.tag, "LOGIN", "", sasl.username, _text(data))

    # -- output and transitions --------------------------------------------------------

    def send(self, response: Response) -> bytes:
        """The wire bytes of ``response``; counts consecutive BADs for :class:`TooManyBad`."""
        if isinstance(response, Tagged):
            self._bad_count = self._bad_count + 1 if response.status == "BAD" else 0
        return bytes(response)

    def authenticated(self, user: str) -> None:
        """LOGIN or AUTHENTICATE succeeded."""
        self._require(NOT_AUTHENTICATED, "authenticated")
        self.state, self.user = State.AUTHENTICATED, user

    def selected(self, mailbox: str, *, read_only: bool = False) -> None:
        """SELECT (``read_only=False``) or EXAMINE succeeded."""
        self._require(AUTHENTICATED, "selected")
        self.state, self.mailbox, self.read_only = State.SELECTED, mailbox, read_only

    def unselected(self) -> None:
        """CLOSE, UNSELECT, or a failed SELECT/EXAMINE while a mailbox was selected."""
        self._require(SELECTED, "unselected")
        self.state, self.mailbox, self.read_only = State.AUTHENTICATED, None, False

    def logout(self) -> None:
        """LOGOUT (send BYE and the tagged OK first), or the server is closing."""
        self.state = State.LOGOUT
        self._idle_tag = self._sasl = None

    def _require(self, states: frozenset[State], transition: str) -> None:
        if self.state not in states:
            # A bug in the command layer, not in the client.
            raise RuntimeError(f"{transition}() called in state {self.state.value}")
