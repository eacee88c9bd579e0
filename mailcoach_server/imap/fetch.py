"""FETCH data items computed from a raw message and its metadata (RFC 3501 §6.4.5, §7.4.2).

Pure functions: the command layer loads a message's bytes and metadata
from the store and gets back the ``(name, value)`` pairs of one FETCH
response. Section data is always the exact octets of the CRLF-normalised
message, sent as a literal whose ``{size}`` counts them; nothing is
re-serialised. Setting ``\\Seen`` for non-PEEK fetches is the command
layer's job (:func:`sets_seen` tells it when).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar, cast

from .bodystructure import body_structure, envelope
from .command import FetchAttr, Section
from .mime import MimePart, normalize_crlf, parse_message, split_fields
from .responses import FetchResponse
from .wire import format_datetime, format_list, format_literal

__all__ = [
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
    """A stored message as FETCH sees it: CRLF bytes, MIME tree parsed on first need."""

    __slots__ = ("raw", "_tree", "_memo")

    def __init__(self, raw: bytes) -> None:
        self.raw = normalize_crlf(raw)
        self._tree: MimePart | None = None
        self._memo: dict[object, Any] | None = None

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
        return len(self.raw)

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
    wanted = _wanted(tuple(names))
    kept = [raw for name, raw in split_fields(block) if (name in wanted) != exclude]
    out = b"".join(kept)
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b"\r\n"


@lru_cache(maxsize=256)
def _wanted(names: tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(n.lower().encode("ascii") for n in names)


_format_datetime = lru_cache(maxsize=1 << 16)(format_datetime)  # one per message date


@lru_cache(maxsize=256)
def _response_name(attr: FetchAttr) -> bytes:
    return attr.response_name  # the same for every message of a FETCH: made once


def section_bytes(message: MessageView, section: Section) -> bytes | None:
    """The octets of ``BODY[section]``; None (``NIL``) when the part does not exist."""
    text = section.text
    if not section.part and text is not None and text.startswith("HEADER"):
        if text == "HEADER":
            return message.header_block  # the top-level header: no MIME parse needed
        exclude = text.endswith(".NOT")
        return message.memo(section, lambda: header_fields(
            message.header_block, section.fields, exclude=exclude))
    part = message.tree.find(section.part) if section.part else message.tree
    if part is None:
        return None
    text = section.text
    if text is None:
        return message.raw if not section.part else part.body
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


def _flags(flags: Iterable[str]) -> bytes:
    return format_list(f.encode("ascii") for f in flags)


def fetch_items(
    message: MessageView,
    attributes: Iterable[FetchAttr],
    *,
    uid: int,
    flags: Iterable[str],
    internaldate: datetime,
) -> list[tuple[bytes, bytes]]:
    """``(response name, wire value)`` for each attribute, in the order asked."""
    items: list[tuple[bytes, bytes]] = []
    flags = tuple(flags)
    for attr in attributes:
        name = attr.name
        if name == "UID":
            value = b"%d" % uid
        elif name == "FLAGS":
            value = _flags(flags)
        elif name == "INTERNALDATE":
            value = _format_datetime(internaldate)
        elif name == "RFC822.SIZE":
            value = b"%d" % message.size
        elif name == "ENVELOPE":
            value = message.memo(name, lambda: envelope(message.tree))
        elif name == "BODYSTRUCTURE":
            value = message.memo(name, lambda: body_structure(message.tree))
        elif name == "BODY" and attr.section is None:
            value = message.memo(name, lambda: body_structure(message.tree, extensible=False))
        elif name == "RFC822":
            value = format_literal(message.raw)
        elif name == "RFC822.HEADER":
            value = format_literal(message.header_block)
        elif name == "RFC822.TEXT":
            value = format_literal(message.tree.body)
        elif attr.section is not None:
            data = section_bytes(message, attr.section)
            value = b"NIL" if data is None else format_literal(_partial(data, attr.partial))
        else:  # the parser only makes the names above
            raise ValueError(f"unknown FETCH attribute {name}")
        items.append((_response_name(attr), value))
    return items


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
