"""The token level of the IMAP grammar (RFC 3501 §9): a cursor over a byte buffer.

A command is one or more *segments*: lines ended by CRLF, where a line
that ends in a literal ``{N}``/``{N+}`` is followed by N bytes of data and
the next segment. The :class:`Cursor` reads tokens from the current
segment and steps over literals; it never looks past the end of the
buffer, it says so:

* :class:`NeedMore` - the bytes are not there yet (``literal`` says which
  literal is awaited, or None for an unterminated line);
* :class:`Fault` - the input is not valid here (``fatal`` when the stream
  cannot be resynchronised).

This module is internal to the parser; it has no notion of commands.
"""

from __future__ import annotations

import re

from .command import NeedLiteral

__all__ = ["ATOM", "TAG", "Cursor", "Fault", "NeedMore"]

CR, LF, SP = 0x0D, 0x0A, 0x20

ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING = re.compile(rb'[^\x00-\x20\x7f(){%*"\\]+')  # ASTRING-CHAR; 8-bit tolerated
_LIST_CHARS = re.compile(rb'[^\x00-\x20\x7f(){"\\]+')  # list-char: adds % and *
TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
_NUMBER = re.compile(rb"[0-9]{1,10}")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(rb"\\([\"\\])")
_LITERAL = re.compile(rb"\{([0-9]{1,20})(\+?)\}")
_LITERAL_PLUS_AT_END = re.compile(rb"\{([0-9]{1,20})\+\}$")


class Fault(Exception):
    """Syntax error at the cursor (control flow inside the parser, never escapes it)."""

    def __init__(self, reason: str, *, fatal: bool = False, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal
        self.code = code


class NeedMore(Exception):
    """The buffer ends before the command does."""

    def __init__(self, literal: NeedLiteral | None = None) -> None:
        super().__init__()
        self.literal = literal


class Cursor:
    """Reads one command from ``buf`` starting at ``pos``."""

    __slots__ = (
        "buf", "pos", "max_literal", "max_line", "seg_start", "eol", "next_line",
        "tag", "command",
    )

    def __init__(self, buf: bytes, *, max_literal: int, max_line: int, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.max_literal = max_literal
        self.max_line = max_line
        self.seg_start = self.eol = self.next_line = pos
        self.tag: str | None = None
        self.command: str | None = None

    # -- segments -------------------------------------------------------------

    def start(self) -> None:
        """Find the end of the segment at ``pos`` (call once before reading)."""
        self._segment(self.pos)

    def _segment(self, start: int) -> None:
        self.seg_start, self.eol, self.next_line = self._line(start)
        if self.eol - self.seg_start > self.max_line:
            raise Fault("line too long")

    def _line(self, start: int) -> tuple[int, int, int]:
        lf = self.buf.find(b"\n", start)
        if lf < 0:
            if len(self.buf) - start > self.max_line:
                raise Fault("line too long", fatal=True)
            raise NeedMore()
        eol = lf - 1 if lf > start and self.buf[lf - 1] == CR else lf
        return start, eol, lf + 1

    def finish(self) -> int:
        """Expect the end of the command; return the offset just past it."""
        if self.pos != self.eol:
            raise Fault("unexpected characters at end of command")
        self.pos = self.next_line
        return self.pos

    def command_end(self) -> int:
        """After a :class:`Fault`: the offset just past the command it belongs to.

        The rest of the current segment is skipped, and so are the data and
        following segments of LITERAL+ literals at its end (the client sends
        them without waiting). A synchronizing literal ends the command: the
        client waits for ``+`` and gets the BAD instead.
        """
        seg_start, eol, next_line = self.seg_start, self.eol, self.next_line
        while True:
            m = _LITERAL_PLUS_AT_END.search(self.buf, seg_start, eol)
            if m is None:
                return next_line
            size = int(m.group(1))
            if size > self.max_literal:
                raise Fault("literal too big", fatal=True, code="TOOBIG")
            if len(self.buf) < next_line + size:
                raise NeedMore()
            seg_start, eol, next_line = self._line(next_line + size)

    # -- single characters ----------------------------------------------------------

    def peek(self) -> int | None:
        return self.buf[self.pos] if self.pos < self.eol else None

    def at_end(self) -> bool:
        return self.pos >= self.eol

    def accept(self, token: bytes) -> bool:
        """Consume ``token`` (case-insensitive) if it is next."""
        end = self.pos + len(token)
        if end <= self.eol and self.buf[self.pos : end].upper() == token:
            self.pos = end
            return True
        return False

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.accept(token):
            raise Fault(f"expected {what or token.decode('ascii')}")

    def sp(self) -> None:
        self.expect(b" ", "space")

    # -- tokens ----------------------------------------------------------------------

    def match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        m = pattern.match(self.buf, self.pos, self.eol)
        if m is None:
            raise Fault(f"expected {what}")
        self.pos = m.end()
        return m.group(0)

    def tag_token(self) -> str:
        return self.match(TAG, "tag").decode("ascii")

    def atom(self, what: str = "atom") -> str:
        return self.match(ATOM, what).decode("ascii")

    def number(self) -> int:
        return int(self.match(_NUMBER, "number"))

    def quoted(self) -> bytes:
        m = _QUOTED.match(self.buf, self.pos, self.eol)
        if m is None:
            raise Fault("bad quoted string")
        self.pos = m.end()
        return _QUOTED_ESCAPE.sub(rb"\1", m.group(1))

    def literal(self) -> bytes:
        m = _LITERAL.match(self.buf, self.pos, self.eol)
        if m is None:
            raise Fault("bad literal")
        if m.end() != self.eol:
            raise Fault("a literal must end the line")
        size, synchronizing = int(m.group(1)), not m.group(2)
        if size > self.max_literal:
            # The client sends a LITERAL+ literal anyway: no way to skip it safely.
            raise Fault("literal too big", fatal=not synchronizing, code="TOOBIG")
        start = self.next_line
        if len(self.buf) < start + size:
            raise NeedMore(
                NeedLiteral(size, synchronizing, start, self.tag or "*", self.command or "")
            )
        self.pos = start + size
        self._segment(self.pos)
        return self.buf[start : start + size]

    def string(self) -> bytes:
        char = self.peek()
        if char == ord('"'):
            return self.quoted()
        if char == ord("{"):
            return self.literal()
        raise Fault("expected string")

    def astring(self) -> bytes:
        char = self.peek()
        if char in (ord('"'), ord("{")):
            return self.string()
        return self.match(_ASTRING, "string")

    def nstring(self) -> bytes | None:
        if self.nil():
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        """``list-mailbox``: an astring that may hold the wildcards ``%`` and ``*``."""
        if self.peek() in (ord('"'), ord("{")):
            return self.string()
        return self.match(_LIST_CHARS, "mailbox pattern")

    def nil(self) -> bool:
        """Consume ``NIL`` if it is next."""
        end = self.pos + 3
        if self.buf[self.pos : end].upper() != b"NIL" or end > self.eol:
            return False
        if end < self.eol and ATOM.match(self.buf, end, end + 1):
            return False
        self.pos = end
        return True
