"""FETCH data items computed from a raw message and its metadata (RFC 3501 §6.4.5, §7.4.2).

Pure functions: the command layer loads a message's bytes and metadata
from the store and gets back the ``(name, value)`` pairs of one FETCH
response. Section data is always the exact octets of the CRLF-normalised
message, sent as a literal whose ``{size}`` counts them; nothing is
re-serialised. Setting ``\\Seen`` for non-PEEK fetches is the command
layer's job (:func:`sets_seen` tells it when).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar, cast

from .bodystructure import body_structure, envelope
from .command import FetchAttr, Section
from .mime import FIELD_REST, MimePart, normalize_crlf, parse_message, split_fields
from .responses import FetchResponse
from .wire import format_datetime, format_list, format_timestamp

__all__ = [
    "FetchPlan",
    "Literal",
    "MessageView",
    "ensure_uid",
    "fetch_items",
    "fetch_response",
    "header_fields",
    "section_bytes",
    "sets_seen",
]


_T = TypeVar("_T")


class MessageView:
    """A stored message as FETCH sees it: CRLF bytes, MIME tree parsed on first need.

    The store keeps LF line ends; the CRLF copy is made only when the whole
    message is sent or parsed. A header FETCH of a big folder needs the size
    (counted, not copied) and the header (the only part converted).
    """

    __slots__ = ("_lf", "_raw", "_tree", "_memo", "_size")

    def __init__(self, raw: bytes) -> None:
        # Only LF-only bytes can be converted in pieces; anything else (a bare CR) at once.
        self._lf: bytes | None = raw if b"\r" not in raw else None
        self._raw: bytes | None = None if self._lf is not None else normalize_crlf(raw)
        self._tree: MimePart | None = None
        self._memo: dict[object, Any] | None = None
        self._size = -1

    @property
    def raw(self) -> bytes:
        """The whole message, CRLF line ends."""
        if self._raw is None:
            assert self._lf is not None
            self._raw = self._lf.replace(b"\n", b"\r\n")
            self._lf = None
        return self._raw

    def memo(self, key: object, make: Callable[[], _T]) -> _T:
        """``make()``, computed once per view: a message never changes, and clients
        fetch the same ENVELOPE or header fields again and again (Dovecot caches them too)."""
        memo = self._memo
        if memo is None:
            memo = self._memo = {}
        if key in memo:
            return cast(_T, memo[key])
        value = memo[key] = make()
        return value

    @property
    def size(self) -> int:
        """RFC822.SIZE: octets on the wire (after CRLF normalisation)."""
        if self._size < 0:
            lf = self._lf
            self._size = len(lf) + lf.count(b"\n") if lf is not None else len(self.raw)
        return self._size

    @property
    def tree(self) -> MimePart:
        if self._tree is None:
            self._tree = parse_message(self.raw)
        return self._tree

    @property
    def header_block(self) -> bytes:
        """The message's header, blank line included: ``tree.header_block`` without
        parsing the MIME tree (a header-only FETCH of a big folder needs no more)."""
        if self._tree is not None:
            return self._tree.header_block
        lf = self._lf
        if lf is not None:  # convert the header alone
            if not lf or lf.startswith(b"\n"):
                return lf[:1].replace(b"\n", b"\r\n")
            blank = lf.find(b"\n\n")
            head = lf if blank < 0 else lf[: blank + 2]
            return head.replace(b"\n", b"\r\n")
        raw = self.raw
        if not raw or raw.startswith(b"\r\n"):
            return raw[:2]
        blank = raw.find(b"\r\n\r\n")
        return raw if blank < 0 else raw[: blank + 4]


def sets_seen(attributes: Iterable[FetchAttr]) -> bool:
    """Does this FETCH set ``\\Seen`` (BODY[...] without PEEK, RFC822, RFC822.TEXT)?"""
    return any(a.sets_seen for a in attributes)


def ensure_uid(attributes: Sequence[FetchAttr]) -> tuple[FetchAttr, ...]:
    """UID FETCH always answers with UID (RFC 3501 §6.4.8): add it when missing."""
    if any(a.name == "UID" for a in attributes):
        return tuple(attributes)
    return (FetchAttr("UID"), *attributes)


def header_fields(block: bytes, names: Iterable[str], *, exclude: bool = False) -> bytes:
    """HEADER.FIELDS[.NOT]: the matching fields of ``block`` in their original order and
    bytes (names compared case-insensitively), then the blank line."""
    if exclude:
        wanted = _wanted(tuple(names))
        kept = [raw for name, raw in split_fields(block) if name not in wanted]
    else:  # one scan for just these names: the fields a client lists are a handful
        kept = _fields_named(tuple(names)).findall(block)
    out = b"".join(kept)
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b"\r\n"


@lru_cache(maxsize=256)
def _wanted(names: tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(n.lower().encode("ascii") for n in names)


@lru_cache(maxsize=256)
def _fields_named(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """``split_fields``'s field pattern, for fields with one of ``names`` only."""
    alternatives = b"|".join(re.escape(name.encode("ascii")) for name in names) or b"(?!)"
    return re.compile(rb"^(?:" + alternatives + rb")[ \t]*:" + FIELD_REST,
                      re.MULTILINE | re.IGNORECASE)


_format_datetime = lru_cache(maxsize=1024)(format_datetime)  # a client's few dates


def section_bytes(message: MessageView, section: Section) -> bytes | None:
    """The octets of ``BODY[section]``; None (``NIL``) when the part does not exist."""
    text = section.text
    if not section.part and text is not None and text.startswith("HEADER"):
        if text == "HEADER":
            return message.header_block  # the top-level header: no MIME parse needed
        exclude = text.endswith(".NOT")
        return message.memo(section, lambda: header_fields(
            message.header_block, section.fields, exclude=exclude))
    if not section.part and text is None:  # BODY[]: the message, no MIME parse needed
        return message.raw
    part = message.tree.find(section.part) if section.part else message.tree
    if part is None:
        return None
    if text is None:
        return part.body
    if text == "MIME":
        return part.header_block
    if section.part:  # HEADER/TEXT of a part: only a message/rfc822 part has them
        if part.message is None:
            return None
        part = part.message
    if text == "HEADER":
        return part.header_block
    if text == "TEXT":
        return part.body
    return header_fields(part.header_block, section.fields, exclude=text.endswith(".NOT"))


def _partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    start, length = partial
    return data[start : start + length]


@lru_cache(maxsize=1024)
def _flags(flags: tuple[str, ...]) -> bytes:
    return format_list(f.encode("ascii") for f in flags)  # a folder has few flag sets


class Literal:
    """Message data a step answers with: sent as ``{n}CRLF`` and the bytes, which a big
    message keeps apart (written in pieces, never copied into one response)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __bytes__(self) -> bytes:
        return b"{%d}\r\n" % len(self.data) + self.data


Step = Callable[[MessageView, int, tuple[str, ...], Any], "bytes | Literal"]


def _uid(message: MessageView, uid: int, flags: tuple[str, ...], when: datetime) -> bytes:
    return b"%d" % uid


def _flags_item(message: MessageView, uid: int, flags: tuple[str, ...], when: datetime) -> bytes:
    return _flags(flags)


def _date_item(message: MessageView, uid: int, flags: tuple[str, ...],
               when: datetime | float) -> bytes:
    # A folder's rows give the POSIX time: formatted straight, no datetime, no cache
    # that a million different dates would fill.
    return _format_datetime(when) if isinstance(when, datetime) else format_timestamp(when)


def _size_item(message: MessageView, uid: int, flags: tuple[str, ...], when: datetime) -> bytes:
    return b"%d" % message.size


_SIMPLE: dict[str, Step] = {
    "UID": _uid,
    "FLAGS": _flags_item,
    "INTERNALDATE": _date_item,
    "RFC822.SIZE": _size_item,
    "ENVELOPE": lambda m, u, f, d: m.memo("ENVELOPE", lambda: envelope(m.tree)),
    "BODYSTRUCTURE": lambda m, u, f, d: m.memo("BODYSTRUCTURE", lambda: body_structure(m.tree)),
    "RFC822": lambda m, u, f, d: Literal(m.raw),
    "RFC822.HEADER": lambda m, u, f, d: Literal(m.header_block),
    "RFC822.TEXT": lambda m, u, f, d: Literal(m.tree.body),
}


def _section_step(attr: FetchAttr) -> Step:
    section, partial = attr.section, attr.partial
    assert section is not None
    text = section.text
    if not section.part and text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        # The top-level header fields, the usual header FETCH: memo key made once, a
        # str (its hash is kept), not the Section (a dataclass hashes itself each time).
        key = f"{text} {' '.join(section.fields).upper()}"
        fields, exclude = section.fields, text.endswith(".NOT")

        def fields_step(m: MessageView, u: int, f: tuple[str, ...], d: datetime) -> Literal:
            data = m.memo(key, lambda: header_fields(m.header_block, fields, exclude=exclude))
            return Literal(_partial(data, partial))
        return fields_step

    def step(m: MessageView, u: int, f: tuple[str, ...], d: datetime) -> bytes | Literal:
        data = section_bytes(m, section)
        return b"NIL" if data is None else Literal(_partial(data, partial))
    return step


def _step(attr: FetchAttr) -> Step:
    name = attr.name
    if name == "BODY" and attr.section is None:
        return lambda m, u, f, d: m.memo("BODY", lambda: body_structure(m.tree, extensible=False))
    simple = _SIMPLE.get(name)
    if simple is not None:
        return simple
    if attr.section is not None:
        return _section_step(attr)
    raise ValueError(f"unknown FETCH attribute {name}")  # the parser only makes the above


class FetchPlan:
    """The attributes of one FETCH command, turned once into a step per attribute.

    A FETCH of a whole folder answers the same list for every message: the
    names and the choice of what to compute are made here, not per message.
    """

    __slots__ = ("_steps",)

    def __init__(self, attributes: Iterable[FetchAttr]) -> None:
        self._steps = [(attr.response_name, _step(attr)) for attr in attributes]

    def items(self, message: MessageView, *, uid: int, flags: Iterable[str],
              internaldate: datetime) -> list[tuple[bytes, bytes]]:
        """``(response name, wire value)`` for each attribute, in the order asked."""
        flags = tuple(flags)
        return [(name, bytes(step(message, uid, flags, internaldate)))
                for name, step in self._steps]

    def line(self, seq: int, message: MessageView, *, uid: int, flags: tuple[str, ...],
             internaldate: datetime | float) -> bytes:
        """``* seq FETCH (...)`` and its CRLF, as bytes."""
        return b"* %d FETCH (%s)\r\n" % (seq, b" ".join([
            name + b" " + bytes(step(message, uid, flags, internaldate))
            for name, step in self._steps]))

    def pieces(self, seq: int, message: MessageView, *, uid: int, flags: tuple[str, ...],
               internaldate: datetime | float) -> list[bytes]:
        """What :meth:`line` says, in pieces: each literal's data apart, uncopied."""
        out = [b"* %d FETCH (" % seq]
        for index, (name, step) in enumerate(self._steps):
            value = step(message, uid, flags, internaldate)
            lead = b" " + name + b" " if index else name + b" "
            if isinstance(value, Literal):
                out += [lead + b"{%d}\r\n" % len(value.data), value.data]
            else:
                out.append(lead + value)
        out.append(b")\r\n")
        return out


def fetch_items(
    message: MessageView,
    attributes: Iterable[FetchAttr],
    *,
    uid: int,
    flags: Iterable[str],
    internaldate: datetime,
) -> list[tuple[bytes, bytes]]:
    """``(response name, wire value)`` for each attribute, in the order asked."""
    return FetchPlan(attributes).items(message, uid=uid, flags=flags, internaldate=internaldate)


def fetch_response(
    seq: int,
    message: MessageView,
    attributes: Iterable[FetchAttr],
    *,
    uid: int,
    flags: Iterable[str],
    internaldate: datetime,
) -> FetchResponse:
    """``* seq FETCH (...)`` for one message."""
    items = fetch_items(message, attributes, uid=uid, flags=flags, internaldate=internaldate)
    return FetchResponse(seq, tuple(items))
