"""Evaluate a SEARCH key tree against one message (RFC 3501 §6.4.4).

:func:`matches` is pure: a :class:`SearchMessage` wraps the raw bytes and
metadata and parses lazily, so a key that only looks at flags or UIDs
never parses the message. Semantics:

* strings match as case-insensitive substrings; header values are decoded
  (RFC 2047 encoded words) first, bodies are decoded from their transfer
  encoding and charset (text parts only);
* BEFORE/ON/SINCE compare the internal date, SENT* the Date header, by
  date only (each in its own timezone); a message without a usable Date
  header falls back to its internal date;
* LARGER/SMALLER use the size after CRLF normalisation (RFC822.SIZE);
* ``*`` in UID and sequence sets is the mailbox's largest UID / sequence
  number, passed in by the caller.

CHARSET checking is the command layer's (see ``BadCharset``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from email.utils import parsedate_to_datetime
from functools import cached_property

from .addresslist import Mailbox, parse_address_items
from .command import SearchKey
from .mime import normalize_crlf, split_fields
from .sequence import SequenceSet

__all__ = ["SearchMessage", "matches"]

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
    "RECENT": ("\\Recent", True), "OLD": ("\\Recent", False),
}
_ADDRESS_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}


def _decode_words(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _payload_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


class SearchMessage:
    """One message and its metadata, as SEARCH sees it."""

    def __init__(
        self,
        raw: bytes,
        *,
        seq: int,
        uid: int,
        flags: Iterable[str],
        internaldate: datetime,
    ) -> None:
        self.raw = raw
        self.seq = seq
        self.uid = uid
        self.flags = frozenset(f.lower() for f in flags)
        self.internaldate = internaldate

    @cached_property
    def size(self) -> int:
        return len(self._crlf)

    @cached_property
    def _crlf(self) -> bytes:
        return normalize_crlf(self.raw)

    @cached_property
    def headers(self) -> list[tuple[str, str]]:
        """``(lower-case name, decoded unfolded value)`` for every header field."""
        raw = self._crlf
        blank = raw.find(b"\r\n\r\n")
        block = raw if blank < 0 else raw[: blank + 2]
        out = []
        for name, field in split_fields(block):
            value = field.split(b":", 1)[1].decode("utf-8", "replace")
            value = " ".join(value.split())
            out.append((name.decode("ascii", "replace"), _decode_words(value)))
        return out

    def header_values(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self.headers if n == key]

    def addresses(self, name: str) -> list[str]:
        """``mailbox@host`` and display names of an address header, comments left out."""
        out = []
        for value in self.header_values(name):
            for item in parse_address_items(value):
                if isinstance(item, Mailbox):
                    out.append(item.address)
                    if item.name:
                        out.append(item.name)
        return out

    @cached_property
    def body_text(self) -> str:
        """The decoded text parts (or the raw body when the message has none)."""
        message = message_from_bytes(self.raw, policy=compat32)
        texts = [
            _payload_text(part)
            for part in message.walk()
            if not part.is_multipart() and part.get_content_maintype() == "text"
        ]
        if not texts and not message.is_multipart():
            payload = message.get_payload(decode=True)
            if isinstance(payload, bytes):
                texts.append(payload.decode("utf-8", "replace"))
        return "\n".join(texts).casefold()

    @cached_property
    def sent_date(self) -> date:
        for value in self.header_values("date"):
            try:
                return parsedate_to_datetime(value).date()
            except (TypeError, ValueError, IndexError):
                break
        return self.internaldate.date()


def _contains(haystack: str, needle: str) -> bool:
    return needle.casefold() in haystack.casefold()


# Each matcher answers one family of keys: (key, message, max_seq, max_uid) -> bool.
_Matcher = Callable[[SearchKey, SearchMessage, int, int], bool]


def _match_and(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    return all(matches(k, message, max_seq=max_seq, max_uid=max_uid) for k in key.children)


def _match_or(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    return any(matches(k, message, max_seq=max_seq, max_uid=max_uid) for k in key.children)


def _match_not(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    return not matches(key.children[0], message, max_seq=max_seq, max_uid=max_uid)


def _match_all(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    return True


def _match_flag(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    flag, wanted = _FLAG_KEYS[key.name]
    return (flag.lower() in message.flags) == wanted


def _match_new(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    return "\\recent" in message.flags and "\\seen" not in message.flags


def _match_keyword(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    return (str(key.arg).lower() in message.flags) == (key.name == "KEYWORD")


def _match_sequence(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    assert isinstance(key.arg, SequenceSet)
    return key.arg.contains(message.seq, max_seq)


def _match_uid(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    assert isinstance(key.arg, SequenceSet)
    return key.arg.contains(message.uid, max_uid)


def _match_size(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    assert isinstance(key.arg, int)
    if key.name == "LARGER":
        return message.size > key.arg
    return message.size < key.arg


def _match_date(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    name, arg = key.name, key.arg
    assert isinstance(arg, date)
    day = message.sent_date if name.startswith("SENT") else message.internaldate.date()
    if name.endswith("BEFORE"):
        return day < arg
    return day == arg if name.endswith("ON") else day >= arg


def _match_address(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    arg = key.arg
    assert isinstance(arg, str)
    field = _ADDRESS_KEYS[key.name]
    if any(_contains(v, arg) for v in message.header_values(field)):
        return True
    # The addresses as they are meant: <a (comment)@ (comment) b> is a@b.
    return field != "subject" and any(_contains(v, arg) for v in message.addresses(field))


def _match_header(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    assert isinstance(key.arg, tuple)
    field, needle = key.arg
    return any(_contains(v, needle) for v in message.header_values(field))


def _match_body(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    assert isinstance(key.arg, str)
    return key.arg.casefold() in message.body_text


def _match_text(key: SearchKey, message: SearchMessage, max_seq: int, max_uid: int) -> bool:
    assert isinstance(key.arg, str)
    needle = key.arg.casefold()
    return any(needle in f"{n}: {v}".casefold() for n, v in message.headers) or (
        needle in message.body_text
    )


_MATCHERS: dict[str, _Matcher] = {
    "AND": _match_and,
    "OR": _match_or,
    "NOT": _match_not,
    "ALL": _match_all,
    **dict.fromkeys(_FLAG_KEYS, _match_flag),
    "NEW": _match_new,
    "KEYWORD": _match_keyword,
    "UNKEYWORD": _match_keyword,
    "SEQUENCE": _match_sequence,
    "UID": _match_uid,
    "LARGER": _match_size,
    "SMALLER": _match_size,
    **dict.fromkeys(("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"), _match_date),
    **dict.fromkeys(_ADDRESS_KEYS, _match_address),
    "HEADER": _match_header,
    "BODY": _match_body,
    "TEXT": _match_text,
}


def matches(key: SearchKey, message: SearchMessage, *, max_seq: int, max_uid: int) -> bool:
    """Does ``message`` satisfy ``key``? ``max_seq``/``max_uid`` give ``*`` its value."""
    matcher = _MATCHERS.get(key.name)
    if matcher is None:
        raise ValueError(f"unknown search key {key.name}")
    return matcher(key, message, max_seq, max_uid)
