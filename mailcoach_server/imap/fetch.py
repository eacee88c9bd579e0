"""FETCH data items computed from a raw message and its metadata (RFC 3501 §6.4.5, §7.4.2).

Pure functions: the command layer loads a message's bytes and metadata
from the store and gets back the ``(name, value)`` pairs of one FETCH
response. Section data is always the exact octets of the CRLF-normalised
message, sent as a literal whose ``{size}`` counts them; nothing is
re-serialised. Setting ``\\Seen`` for non-PEEK fetches is the command
layer's job (:func:`sets_seen` tells it when).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar, cast

from .bodystructure import body_structure, envelope
from .command import FetchAttr, Section
from .mime import FIELD_REST, MimePart, normalize_crlf, parse_message, split_fields
from .responses import FetchResponse
from .wire import format_datetime, format_list, format_timestamp

__all__ = [
    "ITEMS_VERSION",
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

#: Bump when what ENVELOPE, BODYSTRUCTURE, BODY or HEADER.FIELDS answer for a message
#: changes: the header cache keeps them under this version, and old ones go unused.
ITEMS_VERSION = 1


class MessageView:
    """A stored message as FETCH sees it: CRLF bytes, MIME tree parsed on first need.

    The store keeps LF line ends; the CRLF copy is made only when the whole
    message is sent or parsed. A header FETCH of a big folder needs the size
    (counted, not copied) and the header (the only part converted).
    """

    __slots__ = ("_lf", "_raw", "_tree", "_memo", "_size", "_block", "cached")

    def __init__(self, raw: bytes) -> None:
        # Only LF-only bytes can be converted in pieces; anything else (a bare CR) at once.
        self._lf: bytes | None = raw if b"\r" not in raw else None
        self._raw: bytes | None = None if self._lf is not None else normalize_crlf(raw)
        self._tree: MimePart | None = None
        self._memo: dict[object, Any] | None = None
        self._size = -1
        self._block: bytes | None = None
        #: the memo keys that came from the header cache (None: not a cached view)
        self.cached: frozenset[str] | None = None

    @classmethod
    def from_cache(cls, size: int, block: bytes | None, items: dict[str, bytes]) -> MessageView:
        """A view of what the header cache holds: size, header block (if kept), items. It
        has no body: only a plan whose :attr:`FetchPlan.from_header` is true may use it.
        ``items`` becomes the view's memo (not copied: an entry is read for one batch)."""
        view = cls.__new__(cls)
        view._lf = view._raw = view._tree = None
        view._memo = cast(dict[object, Any], items)
        view._size = size
        view._block = block
        view.cached = frozenset(items)
        return view

    @property
    def raw(self) -> bytes:
        """The whole message, CRLF line ends."""
        if self._raw is None:
            if self._lf is None:  # a programmer's error: the plan said it needs no body
                raise RuntimeError("a view from the header cache has no body")
            self._raw = self._lf.replace(b"\n", b"\r\n")
            self._lf = None
        return self._raw

    @property
    def cached_block(self) -> bytes | None:
        """The header block the header cache gave this view, if it did."""
        return self._block if self.cached is not None else None

    def items(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The memo values of ``keys`` that are there."""
        memo = self._memo or {}
        return {key: memo[key] for key in keys if key in memo}

    def computed(self, keys: Iterable[str]) -> list[tuple[str, bytes]]:
        """The memo values of ``keys`` made here, not loaded from the header cache."""
        memo, loaded = self._memo, self.cached or frozenset()
        if not memo:
            return []
        return [(key, memo[key]) for key in keys if key in memo and key not in loaded]

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
    def size_bound(self) -> int:
        """At least :attr:`size`, without counting lines: each LF may become two bytes.
        Enough to choose how to send a message whose size the FETCH does not ask for."""
        if self._size >= 0:
            return self._size
        return 2 * len(self._lf) if self._lf is not None else len(self.raw)

    @property
    def tree(self) -> MimePart:
        if self._tree is None:
            self._tree = parse_message(self.raw)
        return self._tree

    @property
    def header_tree(self) -> MimePart:
        """The top-level part with its fields only (ENVELOPE): the body is not parsed."""
        if self._tree is not None:
            return self._tree
        return parse_message(self.header_block)

    @property
    def header_block(self) -> bytes:
        """The message's header, blank line included: ``tree.header_block`` without
        parsing the MIME tree (a header-only FETCH of a big folder needs no more)."""
        if self._block is not None:
            return self._block
        if self._tree is not None:
            return self._tree.header_block
        lf = self._lf
        if lf is not None:  # convert the header alone, once
            if not lf or lf.startswith(b"\n"):
                block = lf[:1].replace(b"\n", b"\r\n")
            else:
                blank = lf.find(b"\n\n")
                block = (lf if blank < 0 else lf[: blank + 2]).replace(b"\n", b"\r\n")
            self._block = block
            return block
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


@lru_cache(maxsize=1024)
def _text_flags(text: str) -> bytes:
    """FLAGS of a stored flags text."""
    return _flags(tuple(text.split()))


@lru_cache(maxsize=1024)
def _recent_text_flags(text: str) -> bytes:
    """FLAGS of a stored flags text, and \\Recent."""
    return _flags((*text.split(), "\\Recent"))


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
    if type(when) is float:  # the usual case, checked first
        return _timestamp(when)
    return _format_datetime(when) if isinstance(when, datetime) else _timestamp(when)


_MINUTES: dict[int, tuple[bytes, bytes] | None] = {}  # minute -> date up to it, zone after it
_MAX_MINUTES = 4096


def _timestamp(seconds: float) -> bytes:
    """``format_timestamp(seconds)``: the date and zone made once a minute (a sweep over
    a folder meets many messages a minute; the zone cannot change within one), the
    seconds put in between."""
    whole = int(seconds) if seconds >= 0 else math.floor(seconds)
    if seconds - whole >= 0.999999:  # may round up to the next second, as format_timestamp
        whole = math.floor(round(seconds, 6))  # does (round() with digits is slow: rarely)
    minute = whole // 60
    parts = _MINUTES.get(minute)
    if parts is None:
        if minute in _MINUTES:  # a zone change or leap seconds inside this minute
            return format_timestamp(seconds)
        if len(_MINUTES) >= _MAX_MINUTES:
            _MINUTES.clear()
        parts = _MINUTES[minute] = _minute_parts(minute)
        if parts is None:
            return format_timestamp(seconds)
    return parts[0] + _SECONDS[whole - minute * 60] + parts[1]


_SECONDS = tuple(b"%02d" % second for second in range(60))


def _minute_parts(minute: int) -> tuple[bytes, bytes] | None:
    """What comes before and after the seconds in every INTERNALDATE of ``minute``."""
    first, last = format_timestamp(minute * 60), format_timestamp(minute * 60 + 59)
    # '"17-Jul-1996 02:44:00 -0700"': seconds at 19:21, the same minute and zone at both ends
    if (first[:19], first[21:]) == (last[:19], last[21:]) and first[19:21] == b"00" \
            and last[19:21] == b"59":
        return first[:19], first[21:]
    return None


def _size_item(message: MessageView, uid: int, flags: tuple[str, ...], when: datetime) -> bytes:
    return b"%d" % message.size


_SIMPLE: dict[str, Step] = {
    "UID": _uid,
    "FLAGS": _flags_item,
    "INTERNALDATE": _date_item,
    "RFC822.SIZE": _size_item,
    "ENVELOPE": lambda m, u, f, d: m.memo("ENVELOPE", lambda: envelope(m.header_tree)),
    "BODYSTRUCTURE": lambda m, u, f, d: m.memo("BODYSTRUCTURE", lambda: body_structure(m.tree)),
    "RFC822": lambda m, u, f, d: Literal(m.raw),
    "RFC822.HEADER": lambda m, u, f, d: Literal(m.header_block),
    "RFC822.TEXT": lambda m, u, f, d: Literal(m.tree.body),
}


#: What a step needs beyond the folder row: nothing, the header cache's entry (its size;
#: a named item, or the header block to make it from), the header block itself, or the
#: whole message.
_ROW, _HEADER, _BLOCK, _MESSAGE = 0, 1, 2, 3
_NEEDS = {"UID": _ROW, "FLAGS": _ROW, "INTERNALDATE": _ROW, "RFC822.SIZE": _HEADER,
          "RFC822.HEADER": _BLOCK, "ENVELOPE": _HEADER}
#: Items kept in the header cache that need the whole message when they are missing.
_TREE_ITEMS = {"BODYSTRUCTURE", "BODY"}


def _fields_key(section: Section) -> str:
    # The fields come out in the message's order whatever the list's: one key per set.
    assert section.text is not None
    return f"{section.text} {' '.join(sorted({name.upper() for name in section.fields}))}"


def _section_step(attr: FetchAttr, *, wire: bool = False) -> Step:
    """The step of ``BODY[section]``; ``wire``: one that answers the literal's wire form
    as bytes (for :meth:`FetchPlan.line`; the usual header FETCH, done per message)."""
    section, partial = attr.section, attr.partial
    assert section is not None
    text = section.text
    if not section.part and text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        # The top-level header fields, the usual header FETCH: memo key made once, a
        # str (its hash is kept), not the Section (a dataclass hashes itself each time).
        key = _fields_key(section)
        fields, exclude = section.fields, text.endswith(".NOT")

        def fields_of(m: MessageView) -> bytes:
            memo = m._memo  # the memo, looked up inline: this runs for every message
            data = memo.get(key) if memo is not None else None
            if data is None:
                data = m.memo(key, lambda: header_fields(m.header_block, fields, exclude=exclude))
            return data if partial is None else _partial(data, partial)

        if wire and partial is None:
            def fields_wire(m: MessageView, u: int, f: tuple[str, ...], d: datetime) -> bytes:
                memo = m._memo  # fields_of inlined: one call less per message
                data = memo.get(key) if memo is not None else None
                if data is None:
                    data = fields_of(m)
                return b"{%d}\r\n%s" % (len(data), data)
            return fields_wire
        if wire:
            def part_wire(m: MessageView, u: int, f: tuple[str, ...], d: datetime) -> bytes:
                data = fields_of(m)
                return b"{%d}\r\n%s" % (len(data), data)
            return part_wire

        def fields_step(m: MessageView, u: int, f: tuple[str, ...], d: datetime) -> Literal:
            return Literal(fields_of(m))
        return fields_step

    def step(m: MessageView, u: int, f: tuple[str, ...], d: datetime) -> bytes | Literal:
        data = section_bytes(m, section)
        return b"NIL" if data is None else Literal(_partial(data, partial))
    return step


def _step(attr: FetchAttr, *, wire: bool = False) -> Step:
    name = attr.name
    if name == "BODY" and attr.section is None:
        return lambda m, u, f, d: m.memo("BODY", lambda: body_structure(m.tree, extensible=False))
    simple = _SIMPLE.get(name)
    if simple is not None:
        return simple
    if attr.section is not None:
        return _section_step(attr, wire=wire)
    raise ValueError(f"unknown FETCH attribute {name}")  # the parser only makes the above


def _needs(attr: FetchAttr) -> tuple[int, str | None]:
    """What ``attr`` needs (``_ROW`` ... ``_MESSAGE``) and its header cache key, if any."""
    section = attr.section
    if section is None:
        if attr.name in _TREE_ITEMS or attr.name == "ENVELOPE":
            return (_MESSAGE if attr.name in _TREE_ITEMS else _HEADER), attr.name
        return _NEEDS.get(attr.name, _MESSAGE), None
    if section.part:
        return _MESSAGE, None
    if section.text == "HEADER":
        return _BLOCK, None
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return _HEADER, _fields_key(section)
    return _MESSAGE, None


#: A header cache entry as :meth:`FetchPlan.entry_lines` reads it: (size, block, items).
Entry = tuple[int, "bytes | None", dict[str, bytes]]
#: A folder's row as :meth:`FetchPlan.entry_lines` reads it: (uid, message id, flags as
#: stored, space separated, received_at); ``store.folders.BriefRow``, named again here
#: because a module of pure functions imports no store.
BriefRow = tuple[int, int, str, float]


#: Items a line from an entry makes from the row or the entry's size: their value's
#: format and place in the tuple made per message, (seq, uid, flags, size, date, item
#: length, item).
_ENTRY_PARTS = {"UID": (b"%d", (1,)), "FLAGS": (b"%s", (2,)), "RFC822.SIZE": (b"%d", (3,)),
                "INTERNALDATE": (b"%s", (4,))}
_LITERAL_PART, _ITEM_PART = (b"{%d}\r\n%s", (5, 6)), (b"%s", (6,))


def _entry_line(attributes: Sequence[FetchAttr]) -> tuple[
        bytes, Callable[[tuple[Any, ...]], tuple[Any, ...]], str | None, bool, bool] | None:
    """How :meth:`FetchPlan.entry_lines` makes a line: its %-format, the picker of its
    values, the one cached item it sends, and whether it sends FLAGS and INTERNALDATE;
    None when an entry cannot answer every item (more than one cached item, a part of
    one, a header block or a body)."""
    parts, picks, key = [], [0], None
    for attr in attributes:
        simple = _ENTRY_PARTS.get(attr.name) if attr.section is None else None
        if simple is None:
            _, item_key = _needs(attr)
            if item_key is None or key is not None or attr.partial is not None:
                return None
            key = item_key
            simple = _LITERAL_PART if attr.section is not None else _ITEM_PART
        spec, where = simple
        parts.append(attr.response_name.replace(b"%", b"%%") + b" " + spec)
        picks += where
    line = b"* %d FETCH (" + b" ".join(parts) + b")\r\n"
    return line, operator.itemgetter(*picks), key, 2 in picks, 4 in picks


def _message_line(attributes: Sequence[FetchAttr]) -> tuple[
        bytes, Callable[[tuple[Any, ...]], Any], bytes, Callable[[tuple[Any, ...]], Any],
        bool, bool] | None:
    """How :meth:`FetchPlan.message_pieces` answers: the %-format of the line up to the
    message's literal (its ``{size}`` included) and of the rest, their pickers, and
    whether FLAGS and INTERNALDATE are sent; None unless the plan sends the whole
    message once (``BODY[]``, ``RFC822``) and otherwise only what the row and the
    message's size say."""
    before, after, head_picks, tail_picks = [], [], [0], []
    whole = False
    for attr in attributes:
        name = attr.response_name.replace(b"%", b"%%")
        simple = _ENTRY_PARTS.get(attr.name) if attr.section is None else None
        if simple is not None:
            spec, where = simple
            (after if whole else before).append(name + b" " + spec)
            (tail_picks if whole else head_picks).extend(where)
            continue
        if whole or attr.partial is not None or not (
                attr.name == "RFC822" or attr.section == Section()):
            return None
        whole = True
        before.append(name + b" {%d}\r\n")
        head_picks.append(5)
    if not whole:
        return None
    head = b"* %d FETCH (" + b" ".join(before)
    tail = b"".join(b" " + item for item in after) + b")\r\n"
    # one place: a scalar, which % takes as its one value; none: no values at all
    tail_pick = operator.itemgetter(*tail_picks) if tail_picks else (lambda values: ())
    return (head, operator.itemgetter(*head_picks), tail, tail_pick,
            2 in head_picks + tail_picks, 4 in head_picks + tail_picks)


class FetchPlan:
    """The attributes of one FETCH command, turned once into a step per attribute.

    A FETCH of a whole folder answers the same list for every message: the
    names and the choice of what to compute are made here, not per message.
    It also says what the header cache can answer: :attr:`cache_keys` are
    the items worth keeping there, and with :attr:`from_header` every item
    can come from a cached entry (size, header block, those items) alone;
    :attr:`tree_keys` are the ones that need the whole message when missing,
    and :attr:`needs_block` says whether the header block itself is sent.
    """

    __slots__ = ("_entry_line", "_line", "_message_line", "_only_steps", "_steps",
                 "cache_keys", "from_header", "needs_block", "needs_content", "tree_keys")

    def __init__(self, attributes: Iterable[FetchAttr]) -> None:
        attributes = tuple(attributes)
        self._steps = [(attr.response_name, _step(attr)) for attr in attributes]
        self._only_steps = [_step(attr, wire=True) for attr in attributes]
        names = b" ".join(name.replace(b"%", b"%%") + b" %s" for name, _ in self._steps)
        self._line = b"* %d FETCH (" + names + b")\r\n"
        needs = [_needs(attr) for attr in attributes]
        self.cache_keys = tuple(dict.fromkeys(key for _, key in needs if key is not None))
        self.tree_keys = frozenset(key for key in self.cache_keys if key in _TREE_ITEMS)
        plain = [need for need, key in needs if key is None or key not in _TREE_ITEMS]
        self.from_header = all(need <= _BLOCK for need in plain)
        self.needs_block = any(need == _BLOCK for need, _ in needs)
        self.needs_content = any(need > _ROW for need, _ in needs)
        self._entry_line = _entry_line(attributes)
        self._message_line = _message_line(attributes)

    @property
    def from_entries(self) -> bool:
        """Can :meth:`entry_lines` answer it (every item from the row or one entry)?"""
        return self._entry_line is not None

    def entry_lines(self, first_seq: int, rows: Iterable[BriefRow],
                    entries: Mapping[int, Entry], recent: Container[int]) -> list[bytes | None]:
        """The lines of ``rows`` (sequence numbers from ``first_seq``) from their header
        cache entries, one %-format each: no view, no step per item. None where the
        entry is missing or lacks the item; ``recent``: the UIDs FLAGS says are
        \\Recent.

        What :meth:`line` answers, byte for byte, for a header FETCH of a whole folder
        (a million messages make this loop the cost of it).
        """
        if self._entry_line is None:
            raise ValueError("this FETCH needs more than a header cache entry")
        line, pick, key, with_flags, with_date = self._entry_line
        out: list[bytes | None] = []
        append, date_wire = out.append, _timestamp
        item, flags, date = b"", b"", b""
        for seq, (uid, message, text, received) in enumerate(rows, first_seq):
            entry = entries.get(message)
            if entry is None:
                append(None)
                continue
            size, _, items = entry
            if key is not None:
                item = items.get(key)  # type: ignore[assignment]
                if item is None:
                    append(None)
                    continue
            if with_flags:
                flags = _recent_text_flags(text) if uid in recent else _text_flags(text)
            if with_date:
                date = date_wire(received)
            append(line % pick((seq, uid, flags, size, date, len(item), item)))
        return out

    @property
    def from_message(self) -> bool:
        """Can :meth:`message_pieces` answer it (the whole message and row items)?"""
        return self._message_line is not None

    def message_pieces(self, seq: int, raw: bytes, uid: int, flags: tuple[str, ...],
                       received_at: float) -> tuple[bytes, bytes, bytes]:
        """What :meth:`line` answers for the message ``raw`` (CRLF), byte for byte, in
        three pieces: up to its literal's data, the message itself (not copied), the
        rest. Two %-formats: no view, no step per item (a FETCH of bodies in a row)."""
        if self._message_line is None:
            raise ValueError("this FETCH needs more than the message and its row")
        head, head_pick, tail, tail_pick, with_flags, with_date = self._message_line
        size = len(raw)
        values = (seq, uid, _flags(flags) if with_flags else b"", size,
                  _timestamp(received_at) if with_date else b"", size)
        return head % head_pick(values), raw, tail % tail_pick(values)

    def items(self, message: MessageView, *, uid: int, flags: Iterable[str],
              internaldate: datetime) -> list[tuple[bytes, bytes]]:
        """``(response name, wire value)`` for each attribute, in the order asked."""
        flags = tuple(flags)
        return [(name, bytes(step(message, uid, flags, internaldate)))
                for name, step in self._steps]

    def line(self, seq: int, message: MessageView, *, uid: int, flags: tuple[str, ...],
             internaldate: datetime | float) -> bytes:
        """``* seq FETCH (...)`` and its CRLF, as bytes."""
        # One %-format made for the plan: a literal's __bytes__ gives its wire form.
        return self._line % (seq, *[step(message, uid, flags, internaldate)
                                    for step in self._only_steps])

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
