"""Reading IMAP responses as aioimaplib hands them over: pure functions, no I/O.

aioimaplib returns a response as lines (``bytes``) with each literal as the
``bytearray`` after the line that announced it; these functions turn that
into values: one :class:`Fetched` per message, response codes, SEARCH hits.
They read what RFC 3501 and RFC 7162 (CONDSTORE) say a server sends, and
ignore what they do not know.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Fetched", "parse_fetch", "response_code", "search_uids"]

_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_MODSEQ = re.compile(rb"\bMODSEQ \((\d+)\)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]*)"')
_LITERAL_NAME = re.compile(rb"(BODY\[[^\]]*\]|RFC822(?:\.HEADER)?)(?:<\d+>)? \{\d+\}$")


@dataclass(slots=True)
class Fetched:
    """One message of a FETCH response."""

    uid: int
    flags: frozenset[str] = frozenset()
    modseq: int = 0
    internaldate: str = ""
    #: section name (``BODY[]``, ``BODY[HEADER.FIELDS (...)]``) -> bytes
    sections: dict[str, bytes] = field(default_factory=dict)


def parse_fetch(lines: Sequence[bytes | bytearray]) -> list[Fetched]:
    """The messages of a UID FETCH (or STORE) response, in the order sent."""
    found: list[Fetched] = []
    current: Fetched | None = None
    pending_section: str | None = None
    for line in lines:
        if isinstance(line, bytearray):  # a literal: the section the line before named
            if current is not None and pending_section is not None:
                current.sections[pending_section] = bytes(line)
            pending_section = None
            continue
        if _FETCH_START.match(line):
            uid = _UID.search(line)
            if uid is None:  # an unsolicited FETCH (flags changed elsewhere) without UID
                current = None
                continue
            current = Fetched(uid=int(uid.group(1)))
            found.append(current)
        if current is None:
            continue
        if (flags := _FLAGS.search(line)) is not None:
            current.flags = frozenset(flags.group(1).decode("ascii", "replace").split())
        if (modseq := _MODSEQ.search(line)) is not None:
            current.modseq = int(modseq.group(1))
        if (date := _INTERNALDATE.search(line)) is not None:
            current.internaldate = date.group(1).decode("ascii", "replace")
        literal = _LITERAL_NAME.search(line)
        pending_section = literal.group(1).decode("ascii") if literal else None
    return found


def response_code(lines: Sequence[bytes | bytearray], name: str) -> list[str] | None:
    """The arguments of a response code (``[APPENDUID 7 42]`` -> ["7", "42"]), if present."""
    pattern = re.compile(rb"\[" + re.escape(name.encode()) + rb"(?: ([^\]]*))?\]", re.I)
    for line in lines:
        if isinstance(line, bytearray):
            continue
        match = pattern.search(line)
        if match:
            return (match.group(1) or b"").decode("ascii", "replace").split()
    return None


def search_uids(lines: Sequence[bytes | bytearray]) -> list[int]:
    """The UIDs of a UID SEARCH response (its first, untagged line), ascending."""
    for line in lines:
        if isinstance(line, bytearray):
            continue
        words = line.split()
        if words and all(word.isdigit() for word in words):
            return sorted(int(word) for word in words)
        if line.startswith(b"SEARCH"):
            return sorted(int(word) for word in words[1:] if word.isdigit())
    return []
