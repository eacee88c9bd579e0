"""Formatting values for the IMAP wire (RFC 3501 §4): strings, atoms, lists, dates.

One rule for strings: ``NIL`` for None, a quoted string when that is safe
(7-bit, no CR/LF/NUL, not long), otherwise a literal ``{n}\r\n`` followed
by the bytes. ``str`` values are sent as UTF-8. The response types in
:mod:`mailcoach_server.imap.responses` and the FETCH builders use these;
nothing here knows about commands or responses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from .utf7 import encode_mailbox_name

__all__ = [
    "format_astring",
    "format_datetime",
    "format_list",
    "format_literal",
    "format_mailbox",
    "format_string",
    "format_timestamp",
]

_QUOTED_SAFE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_ATOM_SAFE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')  # ASTRING-CHAR
_MAX_QUOTED = 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS_ASCII = tuple(month.encode("ascii") for month in _MONTHS)


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def format_literal(value: str | bytes) -> bytes:
    """``{n}\\r\\n`` + the bytes: how message data is always sent."""
    data = _b(value)
    return b"{%d}\r\n" % len(data) + data


def format_string(value: str | bytes | None) -> bytes:
    """``NIL``, a quoted string, or a literal when quoting is not safe."""
    if value is None:
        return b"NIL"
    data = _b(value)
    if len(data) <= _MAX_QUOTED and _QUOTED_SAFE.fullmatch(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return format_literal(data)


def format_astring(value: str | bytes) -> bytes:
    """An atom when the value is one (and is not ``NIL``), else :func:`format_string`."""
    data = _b(value)
    if _ATOM_SAFE.fullmatch(data) and data.upper() != b"NIL":
        return data
    return format_string(data)


def format_mailbox(name: str) -> bytes:
    """A mailbox name, modified-UTF-7 encoded and always quoted (clients cope best)."""
    return format_string(encode_mailbox_name(name))


def format_list(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def format_timestamp(seconds: float) -> bytes:
    """:func:`format_datetime` of a POSIX time in the local zone, as
    ``datetime.fromtimestamp(seconds).astimezone()`` would be, without making one."""
    t = time.localtime(round(seconds, 6))  # fromtimestamp rounds to the microsecond
    minutes = t.tm_gmtoff // 60
    hh, mm = divmod(abs(minutes), 60)
    return b'"%2d-%s-%04d %02d:%02d:%02d %s%02d%02d"' % (
        t.tm_mday, _MONTHS_ASCII[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec,
        b"-" if minutes < 0 else b"+", hh, mm)


def format_datetime(moment: datetime) -> bytes:
    """INTERNALDATE form: ``"17-Jul-1996 02:44:25 -0700"`` (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    text = (
        f"{moment.day:2d}-{_MONTHS[moment.month - 1]}-{moment.year:04d} "
        f"{moment:%H:%M:%S} {sign}{hh:02d}{mm:02d}"
    )
    return b'"' + text.encode("ascii") + b'"'
