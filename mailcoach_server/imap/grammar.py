"""Argument grammars shared by several IMAP commands (RFC 3501 §9).

Flags and flag lists, dates, date-times, sequence sets, FETCH attributes
(with ``BODY[section]<partial>``) and SEARCH keys, each read from a
:class:`~mailcoach_server.imap.lexer.Cursor`. Whole commands are put
together in :mod:`mailcoach_server.imap.parser`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from .command import FetchAttr, SearchKey, Section
from .lexer import Cursor, Fault
from .sequence import SequenceSet

__all__ = [
    "date_time",
    "decode_charset",
    "fetch_attributes",
    "flag",
    "flag_list",
    "search_date",
    "search_program",
    "sequence_set",
]

_SP, _LPAREN, _RPAREN, _DQUOTE = 0x20, 0x28, 0x29, 0x22

SYSTEM_FLAGS = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}
_FLAG = re.compile(rb'\\?[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_SEQUENCE = re.compile(rb"[0-9*:,]+")
_MONTHS = {m: i for i, m in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV",
     b"DEC"), 1)}
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_PART = re.compile(rb"[0-9]{1,9}(?:\.[0-9]{1,9})*")
_SECTION_TEXT = re.compile(rb"[A-Za-z.]+")
_MAX_DEPTH = 40

# -- flags, sets, dates ----------------------------------------------------------------


def flag(cur: Cursor) -> str:
    """A flag; system flags come back in their canonical spelling (``\\SEEN`` → ``\\Seen``)."""
    text = cur.match(_FLAG, "flag").decode("ascii")
    return SYSTEM_FLAGS.get(text.upper(), text) if text.startswith("\\") else text


def flag_list(cur: Cursor) -> tuple[str, ...]:
    """``(\\Seen $Junk)``."""
    cur.expect(b"(")
    flags: list[str] = []
    while not cur.accept(b")"):
        if flags and not cur.accept(b" "):
            raise Fault("expected ) after flags")
        flags.append(flag(cur))
    return tuple(flags)


def sequence_set(cur: Cursor) -> SequenceSet:
    text = cur.match(_SEQUENCE, "sequence set")
    try:
        return SequenceSet.parse(text)
    except ValueError as exc:
        raise Fault(str(exc)) from None


def search_date(cur: Cursor) -> date:
    """``1-Feb-1994``, optionally quoted."""
    quoted = cur.accept(b'"')
    m = _DATE.match(cur.buf, cur.pos, cur.eol)
    if m is None or m.group(2).upper() not in _MONTHS:
        raise Fault("expected date like 1-Feb-1994")
    cur.pos = m.end()
    if quoted:
        cur.expect(b'"')
    try:
        return date(int(m.group(3)), _MONTHS[m.group(2).upper()], int(m.group(1)))
    except ValueError:
        raise Fault("invalid date") from None


def date_time(cur: Cursor) -> datetime:
    """APPEND's ``"17-Jul-1996 02:44:25 -0700"``."""
    m = _DATE_TIME.match(cur.buf, cur.pos, cur.eol)
    if m is None or m.group(2).upper() not in _MONTHS:
        raise Fault("expected date-time like \"17-Jul-1996 02:44:25 -0700\"")
    cur.pos = m.end()
    day, _, year, hh, mm, ss, sign, zh, zm = m.groups()
    offset = timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == b"-" else 1)
    try:
        return datetime(int(year), _MONTHS[m.group(2).upper()], int(day), int(hh), int(mm),
                        int(ss), tzinfo=timezone(offset))
    except ValueError:
        raise Fault("invalid date-time") from None


# -- FETCH -------------------------------------------------------------------------------

_SIMPLE_ATTRS = frozenset({
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
    "RFC822.TEXT", "BODYSTRUCTURE", "UID",
})
_FAST = (FetchAttr("FLAGS"), FetchAttr("INTERNALDATE"), FetchAttr("RFC822.SIZE"))
_ALL = (*_FAST, FetchAttr("ENVELOPE"))
_MACROS = {"FAST": _FAST, "ALL": _ALL, "FULL": (*_ALL, FetchAttr("BODY"))}


def fetch_attributes(cur: Cursor) -> tuple[FetchAttr, ...]:
    """A macro, one attribute, or a parenthesised list of attributes."""
    if cur.accept(b"("):
        attrs = [_fetch_attr(cur)]
        while cur.accept(b" "):
            attrs.append(_fetch_attr(cur))
        cur.expect(b")")
        return tuple(attrs)
    m = _FETCH_NAME.match(cur.buf, cur.pos, cur.eol)
    if m is not None and m.group(0).upper().decode("ascii") in _MACROS:
        cur.pos = m.end()
        return _MACROS[m.group(0).upper().decode("ascii")]
    return (_fetch_attr(cur),)


def _fetch_attr(cur: Cursor) -> FetchAttr:
    name = cur.match(_FETCH_NAME, "fetch attribute").decode("ascii").upper()
    if name in _SIMPLE_ATTRS:
        return FetchAttr(name)
    if name not in ("BODY", "BODY.PEEK"):
        raise Fault(f"unknown fetch attribute {name[:40]}")
    if not cur.accept(b"["):
        if name == "BODY":
            return FetchAttr("BODY")
        raise Fault("BODY.PEEK needs a section")
    section = _section(cur)
    cur.expect(b"]")
    partial = None
    if cur.accept(b"<"):
        start = cur.number()
        cur.expect(b".")
        length = cur.number()
        cur.expect(b">")
        if length == 0:
            raise Fault("partial length must not be zero")
        partial = (start, length)
    return FetchAttr("BODY", section, name == "BODY.PEEK", partial)


def _section(cur: Cursor) -> Section:
    part: tuple[int, ...] = ()
    m = _SECTION_PART.match(cur.buf, cur.pos, cur.eol)
    if m is not None:
        part = tuple(int(n) for n in m.group(0).split(b"."))
        if 0 in part:
            raise Fault("section part numbers start at 1")
        cur.pos = m.end()
        if not cur.accept(b"."):
            return Section(part)
    elif cur.peek() == ord("]"):
        return Section()
    text = cur.match(_SECTION_TEXT, "section").decode("ascii").upper()
    if text in ("HEADER", "TEXT") or (text == "MIME" and part):
        return Section(part, text)
    if text not in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        raise Fault(f"bad section {text[:40]}")
    cur.sp()
    cur.expect(b"(")
    fields = [_field_name(cur)]
    while cur.accept(b" "):
        fields.append(_field_name(cur))
    cur.expect(b")")
    return Section(part, text, tuple(fields))


def _field_name(cur: Cursor) -> str:
    raw = cur.astring()
    if not raw or not raw.isascii() or b":" in raw:
        raise Fault("bad header field name")
    return raw.decode("ascii")


# -- SEARCH ------------------------------------------------------------------------------

_NO_ARG = frozenset({
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
})
_STRING_ARG = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_DATE_ARG = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
_WITH_ARG = _STRING_ARG | _DATE_ARG | {
    "LARGER", "SMALLER", "KEYWORD", "UNKEYWORD", "UID", "NOT", "OR", "HEADER",
}


def decode_charset(raw: bytes, charset: str | None) -> str:
    """Search strings in the command's CHARSET (UTF-8 when absent or unknown)."""
    if charset:
        try:
            return raw.decode(charset, "replace")
        except (LookupError, ValueError):  # not a (text) codec, or one that still fails
            pass
    return raw.decode("utf-8", "replace")


def search_program(cur: Cursor, charset: str | None) -> SearchKey:
    """The keys up to the end of the line; several keys are ANDed."""
    keys = [_search_key(cur, charset, 0)]
    while not cur.at_end():
        cur.sp()
        keys.append(_search_key(cur, charset, 0))
    return keys[0] if len(keys) == 1 else SearchKey("AND", children=tuple(keys))


def _search_key(cur: Cursor, charset: str | None, depth: int) -> SearchKey:
    if depth > _MAX_DEPTH:
        raise Fault("search keys nested too deeply")
    char = cur.peek()
    if char == _LPAREN:
        cur.pos += 1
        keys = [_search_key(cur, charset, depth + 1)]
        while cur.accept(b" "):
            keys.append(_search_key(cur, charset, depth + 1))
        cur.expect(b")")
        return keys[0] if len(keys) == 1 else SearchKey("AND", children=tuple(keys))
    if char is not None and (0x30 <= char <= 0x39 or char == ord("*")):
        return SearchKey("SEQUENCE", sequence_set(cur))
    name = cur.atom("search key").upper()
    if name in _NO_ARG:
        return SearchKey(name)
    if name not in _WITH_ARG:
        raise Fault(f"unknown search key {name[:40]}")
    cur.sp()
    if name in _STRING_ARG:
        return SearchKey(name, decode_charset(cur.astring(), charset))
    if name in _DATE_ARG:
        return SearchKey(name, search_date(cur))
    if name in ("LARGER", "SMALLER"):
        return SearchKey(name, cur.number())
    if name in ("KEYWORD", "UNKEYWORD"):
        return SearchKey(name, flag(cur))
    if name == "UID":
        return SearchKey(name, sequence_set(cur))
    if name == "NOT":
        return SearchKey(name, children=(_search_key(cur, charset, depth + 1),))
    if name == "OR":
        first = _search_key(cur, charset, depth + 1)
        cur.sp()
        return SearchKey(name, children=(first, _search_key(cur, charset, depth + 1)))
    field_name = _field_name(cur)  # HEADER
    cur.sp()
    return SearchKey(name, (field_name, decode_charset(cur.astring(), charset)))
