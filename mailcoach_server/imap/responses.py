"""IMAP responses that know their wire form, and the errors that become them.

Every response here is a frozen dataclass whose ``bytes(...)`` is exactly
what goes on the wire, CRLF included (RFC 3501 §7). Strings are quoted
or sent as literals by the rules of :mod:`mailcoach_server.imap.wire`,
whose helpers are re-exported here.

Domain errors (:class:`ImapError` and subclasses) are raised by the
command layer or the store and turned into a tagged response with
``error.to_response(tag)``; nothing outside this module formats IMAP text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from ..errors import ProtocolError
from .sequence import SequenceSet
from .utf7 import encode_mailbox_name
from .wire import (
    format_astring,
    format_datetime,
    format_list,
    format_literal,
    format_mailbox,
    format_string,
)

__all__ = [
    # formatting, re-exported from .wire
    "format_astring", "format_datetime", "format_list", "format_literal", "format_mailbox",
    "format_string",
    # responses
    "Capability", "Continuation", "Enabled", "Exists", "Expunge", "FetchResponse", "Flags", "Id",
    "ListItem", "Namespace", "Recent", "Response", "ResponseCode", "Search", "Status", "Tagged",
    "Untagged",
    # errors
    "AuthenticationFailed", "BadCharset", "Cannot", "ImapError", "LimitExceeded",
    "MailboxExists", "MailboxNotFound", "NoPermission", "TooBig", "TryCreate",
]

def _text(text: str) -> bytes:
    # resp-text is one line: a CR or LF in an error message must not end it.
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8")


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """``[NAME data]`` (RFC 3501 §7.1, RFC 4315, RFC 5530).

    Codes without arguments are just ``ResponseCode("READ-ONLY")``,
    ``ResponseCode("ALERT")`` and so on; the class methods build the ones
    that carry data.
    """

    name: str
    data: bytes = b""

    def __bytes__(self) -> bytes:
        head = self.name.encode("ascii")
        return b"[" + head + (b" " + self.data if self.data else b"") + b"]"

    @classmethod
    def number(cls, name: str, value: int) -> ResponseCode:
        """A code with one number: ``[UIDNEXT 5]``."""
        return cls(name, b"%d" % value)

    @classmethod
    def uidvalidity(cls, value: int) -> ResponseCode:
        return cls.number("UIDVALIDITY", value)

    @classmethod
    def uidnext(cls, value: int) -> ResponseCode:
        return cls.number("UIDNEXT", value)

    @classmethod
    def unseen(cls, seq: int) -> ResponseCode:
        return cls.number("UNSEEN", seq)

    @classmethod
    def permanent_flags(cls, flags: Iterable[str]) -> ResponseCode:
        return cls("PERMANENTFLAGS", format_list(f.encode("ascii") for f in flags))

    @classmethod
    def capability(cls, capabilities: Iterable[str]) -> ResponseCode:
        return cls("CAPABILITY", " ".join(capabilities).encode("ascii"))

    @classmethod
    def append_uid(cls, uidvalidity: int, uids: SequenceSet | int) -> ResponseCode:
        """RFC 4315 ``[APPENDUID 38505 3955]``."""
        return cls("APPENDUID", b"%d %s" % (uidvalidity, _set(uids)))

    @classmethod
    def copy_uid(cls, uidvalidity: int, source: SequenceSet, dest: SequenceSet) -> ResponseCode:
        """RFC 4315 ``[COPYUID 38505 304,319:320 3956:3958]``."""
        return cls("COPYUID", b"%d %s %s" % (uidvalidity, bytes(source), bytes(dest)))

    @classmethod
    def bad_charset(cls, charsets: Iterable[str]) -> ResponseCode:
        return cls("BADCHARSET", format_list(format_astring(c) for c in charsets))


def _set(value: SequenceSet | int) -> bytes:
    return b"%d" % value if isinstance(value, int) else bytes(value)


class Response:
    """Anything :meth:`Connection.send` accepts: it has a wire form."""

    __slots__ = ()

    def __bytes__(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Tagged(Response):
    """``a1 OK [READ-WRITE] SELECT completed``."""

    tag: str
    status: str  # "OK" | "NO" | "BAD"
    text: str
    code: ResponseCode | None = None

    def __bytes__(self) -> bytes:
        code = bytes(self.code) + b" " if self.code else b""
        return b"%s %s %s%s\r\n" % (
            self.tag.encode("ascii", "replace"), self.status.encode("ascii"), code,
            _text(self.text),
        )

    @classmethod
    def ok(cls, tag: str, text: str, code: ResponseCode | None = None) -> Tagged:
        return cls(tag, "OK", text, code)

    @classmethod
    def no(cls, tag: str, text: str, code: ResponseCode | None = None) -> Tagged:
        return cls(tag, "NO", text, code)

    @classmethod
    def bad(cls, tag: str, text: str, code: ResponseCode | None = None) -> Tagged:
        return cls(tag, "BAD", text, code)


@dataclass(frozen=True, slots=True)
class Untagged(Response):
    """A status response: ``* OK [UIDVALIDITY 7] ...``, ``* BYE ...``, ``* PREAUTH``."""

    status: str  # "OK" | "NO" | "BAD" | "BYE" | "PREAUTH"
    text: str
    code: ResponseCode | None = None

    def __bytes__(self) -> bytes:
        code = bytes(self.code) + b" " if self.code else b""
        return b"* %s %s%s\r\n" % (self.status.encode("ascii"), code, _text(self.text))

    @classmethod
    def ok(cls, text: str, code: ResponseCode | None = None) -> Untagged:
        return cls("OK", text, code)

    @classmethod
    def bye(cls, text: str, code: ResponseCode | None = None) -> Untagged:
        return cls("BYE", text, code)


@dataclass(frozen=True, slots=True)
class Continuation(Response):
    """``+ Ready`` before a literal, or ``+ <base64>`` for a SASL challenge."""

    text: str = "Ready"

    def __bytes__(self) -> bytes:
        return b"+ " + _text(self.text) + b"\r\n"


@dataclass(frozen=True, slots=True)
class Exists(Response):
    count: int

    def __bytes__(self) -> bytes:
        return b"* %d EXISTS\r\n" % self.count


@dataclass(frozen=True, slots=True)
class Recent(Response):
    count: int

    def __bytes__(self) -> bytes:
        return b"* %d RECENT\r\n" % self.count


@dataclass(frozen=True, slots=True)
class Expunge(Response):
    seq: int

    def __bytes__(self) -> bytes:
        return b"* %d EXPUNGE\r\n" % self.seq


@dataclass(frozen=True, slots=True)
class Flags(Response):
    """``* FLAGS (\\Answered \\Flagged ...)``."""

    flags: tuple[str, ...]

    def __bytes__(self) -> bytes:
        return b"* FLAGS " + format_list(f.encode("ascii") for f in self.flags) + b"\r\n"


@dataclass(frozen=True, slots=True)
class ListItem(Response):
    """``* LIST (\\HasNoChildren \\Sent) "/" "Sent"``; ``command="LSUB"`` for LSUB.

    ``attributes`` holds name attributes and SPECIAL-USE ones (RFC 6154) alike.
    """

    name: str
    delimiter: str | None = "/"
    attributes: tuple[str, ...] = ()
    command: str = "LIST"

    def __bytes__(self) -> bytes:
        attrs = format_list(a.encode("ascii") for a in self.attributes)
        return b"* %s %s %s %s\r\n" % (
            self.command.encode("ascii"), attrs, format_string(self.delimiter),
            format_mailbox(self.name),
        )


@dataclass(frozen=True, slots=True)
class Status(Response):
    """``* STATUS "INBOX" (MESSAGES 2 UIDNEXT 3)``; items in the order asked."""

    mailbox: str
    items: tuple[tuple[str, int], ...]

    def __bytes__(self) -> bytes:
        pairs = (b"%s %d" % (k.encode("ascii"), v) for k, v in self.items)
        return b"* STATUS " + format_mailbox(self.mailbox) + b" " + format_list(pairs) + b"\r\n"


@dataclass(frozen=True, slots=True)
class Search(Response):
    """``* SEARCH 2 3 6`` (sequence numbers or UIDs, as the command asked)."""

    numbers: tuple[int, ...]

    def __bytes__(self) -> bytes:
        return b"".join([b"* SEARCH", *(b" %d" % n for n in self.numbers), b"\r\n"])


@dataclass(frozen=True, slots=True)
class Capability(Response):
    capabilities: tuple[str, ...]

    def __bytes__(self) -> bytes:
        return b"* CAPABILITY " + " ".join(self.capabilities).encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Enabled(Response):
    """RFC 5161 ``* ENABLED ...`` (possibly empty)."""

    capabilities: tuple[str, ...]

    def __bytes__(self) -> bytes:
        return b"".join([b"* ENABLED", *(b" " + c.encode("ascii") for c in self.capabilities),
                         b"\r\n"])


Namespaces = tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Namespace(Response):
    """RFC 2342: ``* NAMESPACE (("" "/")) NIL NIL``; each part is ``((prefix, delim), ...)``."""

    personal: Namespaces = (("", "/"),)
    other: Namespaces = None
    shared: Namespaces = None

    def __bytes__(self) -> bytes:
        parts = [
            b"NIL" if ns is None else format_list(
                format_list([format_string(encode_mailbox_name(p)), format_string(d)])
                for p, d in ns
            )
            for ns in (self.personal, self.other, self.shared)
        ]
        return b"* NAMESPACE " + b" ".join(parts) + b"\r\n"


@dataclass(frozen=True, slots=True)
class Id(Response):
    """RFC 2971 ``* ID ("name" "mailcoach")`` or ``* ID NIL``."""

    parameters: Mapping[str, str | None] | None

    def __bytes__(self) -> bytes:
        if not self.parameters:
            return b"* ID NIL\r\n"
        items = (format_string(k) + b" " + format_string(v) for k, v in self.parameters.items())
        return b"* ID " + format_list(items) + b"\r\n"


@dataclass(frozen=True, slots=True)
class FetchResponse(Response):
    """``* 12 FETCH (UID 4 FLAGS (\\Seen) BODY[] {n}...)``.

    ``items`` are ``(name, value)`` pairs whose value is already in wire
    form (see :mod:`mailcoach_server.imap.fetch`, which builds them).
    """

    seq: int
    items: tuple[tuple[bytes, bytes], ...]

    def __bytes__(self) -> bytes:
        body = b" ".join(name + b" " + value for name, value in self.items)
        return b"* %d FETCH (" % self.seq + body + b")\r\n"


# -- errors ------------------------------------------------------------------


class ImapError(ProtocolError):
    """A command failed for a reason the client should hear: ``tag NO [CODE] text``."""

    status: ClassVar[str] = "NO"
    code_name: ClassVar[str | None] = None
    default_text: ClassVar[str] = "command failed"

    def __init__(self, text: str | None = None, *, code: ResponseCode | None = None) -> None:
        self.text = text or self.default_text
        self.code = code or (ResponseCode(self.code_name) if self.code_name else None)
        super().__init__(self.text)

    def to_response(self, tag: str) -> Tagged:
        return Tagged(tag, self.status, self.text, self.code)


class MailboxNotFound(ImapError):
    code_name = "NONEXISTENT"
    default_text = "no such mailbox"


class TryCreate(ImapError):
    """APPEND/COPY/MOVE to a mailbox that does not exist (RFC 3501 §6.3.11)."""

    code_name = "TRYCREATE"
    default_text = "no such mailbox"


class MailboxExists(ImapError):
    code_name = "ALREADYEXISTS"
    default_text = "mailbox already exists"


class NoPermission(ImapError):
    """A read-only mailbox, or one the user may not change (RFC 5530 NOPERM)."""

    code_name = "NOPERM"
    default_text = "permission denied"


class Cannot(ImapError):
    code_name = "CANNOT"
    default_text = "operation not supported"


class AuthenticationFailed(ImapError):
    code_name = "AUTHENTICATIONFAILED"
    default_text = "invalid credentials"


class LimitExceeded(ImapError):
    code_name = "LIMIT"
    default_text = "limit exceeded"


class TooBig(ImapError):
    code_name = "TOOBIG"
    default_text = "message too big"


class BadCharset(ImapError):
    """SEARCH CHARSET we cannot decode: ``NO [BADCHARSET (UTF-8 US-ASCII)]``."""

    default_text = "unsupported charset"

    def __init__(self, supported: Iterable[str] = ("UTF-8", "US-ASCII")) -> None:
        super().__init__(code=ResponseCode.bad_charset(supported))
