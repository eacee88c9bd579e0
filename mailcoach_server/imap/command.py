"""What the IMAP parser produces: commands, their parts, and the other outcomes.

All frozen, slotted dataclasses with no behaviour beyond describing
themselves. :func:`mailcoach_server.imap.parser.parse_command` returns
``(Command, consumed)``, :class:`NeedLiteral`, :class:`Incomplete` or
:class:`BadCommand`; the command layer dispatches on the command class
and ``name``.

``name`` is the upper-case command name; UID commands keep the base name
(``UID FETCH`` is a :class:`FetchCommand` with ``name="FETCH"`` and
``uid=True``), so one state table covers both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime

from .responses import ResponseCode, Tagged
from .sequence import SequenceSet
from .wire import format_astring

__all__ = [
    "AppendCommand",
    "AuthenticateCommand",
    "BadCommand",
    "Command",
    "CopyCommand",
    "EnableCommand",
    "ExpungeCommand",
    "FetchAttr",
    "FetchCommand",
    "IdCommand",
    "Incomplete",
    "INCOMPLETE",
    "ListCommand",
    "LoginCommand",
    "MailboxCommand",
    "NeedLiteral",
    "RenameCommand",
    "RestoreCommand",
    "SearchCommand",
    "SearchKey",
    "Section",
    "StatusCommand",
    "StoreCommand",
    "StoreMode",
]


# -- outcomes other than a command --------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedLiteral:
    """The buffer ends inside a ``{size}`` literal.

    Attributes:
        size: bytes the literal holds.
        synchronizing: ``{N}`` (send ``+ Ready`` first) rather than LITERAL+ ``{N+}``.
        offset: where the literal's data starts in the buffer; parsing can
            resume once the buffer holds ``offset + size`` bytes.
        tag, command: what was parsed so far, so the connection can refuse a
            command before asking the client for its literal.
    """

    size: int
    synchronizing: bool
    offset: int
    tag: str
    command: str


@dataclass(frozen=True, slots=True)
class Incomplete:
    """No complete command line in the buffer yet."""


INCOMPLETE = Incomplete()


@dataclass(frozen=True, slots=True)
class BadCommand:
    """Input that is not a valid command: answer ``tag BAD reason``.

    Attributes:
        consumed: bytes of the buffer the bad command took (drop them).
        fatal: the stream cannot be resynchronised (over-long line, a LITERAL+
            literal over the limit): answer BAD, then BYE and close.
        code: an optional response code name, e.g. ``TOOBIG``.
    """

    tag: str
    reason: str
    consumed: int = 0
    fatal: bool = False
    code: str | None = None

    def to_response(self) -> Tagged:
        return Tagged.bad(self.tag, self.reason, ResponseCode(self.code) if self.code else None)


# -- pieces of commands --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A ``BODY[...]`` section (RFC 3501 §6.4.5).

    Attributes:
        part: numeric path, ``(1, 2)`` for ``1.2``; ``()`` is the whole message.
        text: ``None``, ``"HEADER"``, ``"HEADER.FIELDS"``, ``"HEADER.FIELDS.NOT"``,
            ``"TEXT"`` or ``"MIME"``.
        fields: the header names of ``HEADER.FIELDS[.NOT]``, as the client sent them.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __bytes__(self) -> bytes:
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        out = spec.encode("ascii")
        if self.text and self.text.startswith("HEADER.FIELDS"):
            out += b" (" + b" ".join(format_astring(f) for f in self.fields) + b")"
        return out


@dataclass(frozen=True, slots=True)
class FetchAttr:
    """One FETCH data item (macros ALL/FAST/FULL are expanded by the parser).

    ``name`` is ``FLAGS``, ``UID``, ``INTERNALDATE``, ``RFC822``, ``RFC822.SIZE``,
    ``RFC822.HEADER``, ``RFC822.TEXT``, ``ENVELOPE``, ``BODYSTRUCTURE`` or
    ``BODY``. ``BODY`` with ``section=None`` is the body structure without
    extensions; with a section it is ``BODY[section]<partial>`` (``peek`` for
    ``BODY.PEEK``). ``partial`` is ``(start, length)``.
    """

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def response_name(self) -> bytes:
        """The name the FETCH response uses: ``BODY[1.MIME]<0>`` (never ``.PEEK``)."""
        if self.section is None:
            return self.name.encode("ascii")
        out = b"BODY[" + bytes(self.section) + b"]"
        if self.partial is not None:
            out += b"<%d>" % self.partial[0]
        return out

    @property
    def sets_seen(self) -> bool:
        """Fetching this implicitly sets ``\\Seen`` (RFC 3501 §6.4.5)."""
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.section is not None and not self.peek


SearchArg = str | int | date | SequenceSet | tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class SearchKey:
    """A node of a SEARCH key tree (RFC 3501 §6.4.4).

    ``name`` is the RFC key (``SUBJECT``, ``BEFORE``, ``UID``, ...), or
    ``AND`` for a parenthesised list or several top-level keys, ``OR``,
    ``NOT`` (with ``children``) and ``SEQUENCE`` for a bare sequence set.
    ``arg`` is the key's argument: ``str`` for strings and flags, ``int``
    for LARGER/SMALLER, ``date``, :class:`SequenceSet`, or ``(field, value)``
    for HEADER.
    """

    name: str
    arg: SearchArg = None
    children: tuple[SearchKey, ...] = ()


class StoreMode(enum.Enum):
    REPLACE = "FLAGS"
    ADD = "+FLAGS"
    REMOVE = "-FLAGS"


# -- commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A command without arguments: CAPABILITY NOOP LOGOUT STARTTLS CHECK CLOSE
    IDLE NAMESPACE UNSELECT."""

    tag: str
    name: str


@dataclass(frozen=True, slots=True)
class LoginCommand(Command):
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthenticateCommand(Command):
    """``AUTHENTICATE mech [initial-response]`` (RFC 4959 SASL-IR; ``=`` is empty)."""

    mechanism: str
    initial_response: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class MailboxCommand(Command):
    """SELECT EXAMINE CREATE DELETE SUBSCRIBE UNSUBSCRIBE: one decoded mailbox name.

    ``undecodable``: the name is not valid modified UTF-7 and is kept as sent; it
    names no mailbox (SELECT: NO), and CREATE refuses it.
    """

    mailbox: str
    undecodable: bool = False


@dataclass(frozen=True, slots=True)
class RestoreCommand(Command):
    """``XRESTORE mailbox version``: mailcoach's own (an agent's memory back to a version)."""

    mailbox: str
    version: int


@dataclass(frozen=True, slots=True)
class RenameCommand(Command):
    mailbox: str
    new_name: str
    #: ``new_name`` is not valid modified UTF-7 (kept as sent; RENAME refuses it)
    undecodable: bool = False


@dataclass(frozen=True, slots=True)
class ListCommand(Command):
    """LIST and LSUB; ``selection``/``return_options`` are RFC 5258 extras (upper-case)."""

    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusCommand(Command):
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppendCommand(Command):
    mailbox: str
    flags: tuple[str, ...]
    date_time: datetime | None
    message: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ExpungeCommand(Command):
    """EXPUNGE, or UID EXPUNGE with its UID set (RFC 4315)."""

    sequence_set: SequenceSet | None = None
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchCommand(Command):
    """``charset`` is as sent (None when absent); strings are already decoded with it
    when Python knows it, else as UTF-8 with replacement (answer BADCHARSET)."""

    key: SearchKey
    charset: str | None = None
    uid: bool = False


@dataclass(frozen=True, slots=True)
class FetchCommand(Command):
    sequence_set: SequenceSet
    attributes: tuple[FetchAttr, ...]
    uid: bool = False


@dataclass(frozen=True, slots=True)
class StoreCommand(Command):
    sequence_set: SequenceSet
    mode: StoreMode
    silent: bool
    flags: tuple[str, ...]
    uid: bool = False


@dataclass(frozen=True, slots=True)
class CopyCommand(Command):
    """COPY and MOVE (RFC 6851); ``name`` tells which."""

    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class IdCommand(Command):
    """RFC 2971: the client's parameters, or None for ``ID NIL``."""

    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class EnableCommand(Command):
    capabilities: tuple[str, ...]
