"""Mail addresses: parsing header values, validation, file names, the agent family rules.

Header parsing is the stdlib's ``email.utils.getaddresses``; this module
adds normalisation (lower-case, no display name), the one validation every
way in goes through (RFC 5321 limits, a deliberately narrow syntax), the
reversible file name of an address, and the original tool's ancestor rule:
``a.swe1@d`` descends from ``swe1@d``.

An address is never used as a path: ``address_file_name`` keeps a small safe
set as is (so ``swe1@localdomain.mbox`` stays what users know) and
percent-encodes everything else, ``/`` and ``%`` included.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from email.utils import getaddresses, parseaddr
from urllib.parse import unquote

__all__ = [
    "MAX_ADDRESS",
    "MAX_FILE_NAME",
    "MAX_LOCAL_PART",
    "address_file_name",
    "address_of_file_name",
    "address_problem",
    "ancestors",
    "normalize_address",
    "parse_address_list",
    "rewrite_address",
]

#: RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
MAX_LOCAL_PART = 64
#: RFC 5321 §4.5.3.1.3: a path is at most 256 octets, "<" and ">" included.
MAX_ADDRESS = 254
#: The longest file name most file systems take is 255 bytes; a rewrite adds ".tmp".
MAX_FILE_NAME = 255 - len(".tmp")

# Deliberately narrower than RFC 5322: an unquoted, ASCII dot-atom local part
# and a plain domain. Quoted local parts, comments and non-ASCII are refused.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ADDRESS = re.compile(rf"^{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")
# RFC 5321 §4.1.1.3 / appendix C: a source route "@a,@b:" is to be ignored.
_SOURCE_ROUTE = re.compile(r"^(<?)@[^:<>]*:")

_FILE_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._+-@")
_FILE_PLAIN = re.compile(r"^[a-z0-9_+@-][a-z0-9._+@-]*\Z")
_MBOX = ".mbox"


def normalize_address(raw: str) -> str | None:
    """``"Swe One <SWE1@LocalDomain>"`` → ``"swe1@localdomain"``; None if not an address.

    The local part is lower-cased too: mailboxes here are case-insensitive,
    as on nearly every real server, so ``Swe1@`` and ``swe1@`` are one party.
    """
    # The same few addresses come with every message (RCPT TO, then the headers): the
    # answers of short ones are kept; a long one is worked out each time (memory).
    return _normalized(raw) if len(raw) <= _CACHED_LENGTH else _normalize(raw)


def _normalize(raw: str) -> str | None:
    _, address = parseaddr(_SOURCE_ROUTE.sub(r"\1", raw.strip()))
    return _checked(address)


_CACHED_LENGTH = 128
_normalized = functools.lru_cache(maxsize=512)(_normalize)


def address_problem(raw: str) -> str:
    """Why ``raw`` is not an address we take, for an error reply ("" if it is one)."""
    _, address = parseaddr(_SOURCE_ROUTE.sub(r"\1", raw.strip()))
    address = address.strip() or raw.strip()
    return _problem(address.lower()) or ("" if _checked(address) else "not an address")


def _problem(address: str) -> str:
    if not address.isascii():
        return "non-ASCII addresses are not supported"
    local, at, _ = address.rpartition("@")
    if not at or not local:
        return "not an address (no local part and domain)"
    if len(local.encode()) > MAX_LOCAL_PART:
        return f"the local part is longer than {MAX_LOCAL_PART} characters (RFC 5321)"
    if len(address.encode()) > MAX_ADDRESS:
        return f"the address is longer than {MAX_ADDRESS} characters (RFC 5321)"
    if local.startswith('"'):
        return "quoted local parts are not supported"
    if not _ADDRESS.match(address):
        return "not an address (characters or dots not allowed in a mail address)"
    if len(address_file_name(address).encode()) > MAX_FILE_NAME:
        return "the address is too long for a mailbox file name"
    return ""


def _checked(address: str) -> str | None:
    address = address.strip().lower()
    if _problem(address):
        return None
    return address


def address_file_name(address: str) -> str:
    """The file name of a party's mbox: ``swe1@localdomain`` → ``swe1@localdomain.mbox``.

    Reversible (``address_of_file_name``): ``[a-z0-9._+-]`` and ``@`` stay, a
    leading dot and everything else become ``%XX`` (UTF-8 bytes), so no
    address can name a directory, a hidden file or another party's file.
    """
    if _FILE_PLAIN.match(address):
        return address + _MBOX
    encoded = [
        char if char in _FILE_SAFE and not (index == 0 and char == ".")
        else "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        for index, char in enumerate(address)
    ]
    return "".join(encoded) + _MBOX


def address_of_file_name(name: str) -> str | None:
    """The address a ``<address>.mbox`` file name stands for; None if it is not one."""
    if not name.endswith(_MBOX):
        return None
    try:
        decoded = unquote(name[: -len(_MBOX)], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
    return _checked(decoded)


_PLAIN_LIST = re.compile(r'^[^"()\\;:]*$')  # no quoting, comments, groups: commas split
_NAME_ADDR = re.compile(r"^[^<>@]*<([^<>\s]+)>$")
_BARE_ADDR = re.compile(r"^[^\s<>]+$")


def _simple_pairs(value: str) -> list[tuple[str, str]] | None:
    """getaddresses for the common simple forms, without the RFC 5322 parser; None if unsure."""
    if not _PLAIN_LIST.match(value):
        return None
    pairs = []
    for piece in value.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if match := _NAME_ADDR.match(piece):
            pairs.append(("", match.group(1)))
        elif _BARE_ADDR.match(piece):
            pairs.append(("", piece))
        else:
            return None
    return pairs


def parse_address_list(values: Iterable[str]) -> tuple[list[str], list[str]]:
    """Addresses from header values (To, Cc, ...), in order, without duplicates.

    Returns:
        (addresses, rejected): normalised addresses and the raw pieces that
        were not addresses.
    """
    found: list[str] = []
    rejected: list[str] = []
    pairs: list[tuple[str, str]] = []
    for value in values:
        text = str(value)
        simple = _simple_pairs(text)
        pairs.extend(simple if simple is not None else getaddresses([text]))
    for name, addr in pairs:
        if not addr and not name:
            continue
        address = _checked(addr)  # getaddresses already took the display name off
        if address is None:
            rejected.append(addr or name)
        elif address not in found:
            found.append(address)
    return found, rejected


def ancestors(address: str) -> Iterator[str]:
    """The addresses ``address`` descends from, nearest first.

    ``b.a.swe1@d`` → ``a.swe1@d``, ``swe1@d``.
    """
    local, _, domain = address.partition("@")
    parts = local.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[i:]) + "@" + domain


def rewrite_address(text: str, old: str, new: str) -> str:
    """Replace the address ``old`` by ``new`` where it stands as a whole address.

    Not a substring replace: rewriting ``swe1@d`` must leave ``a.swe1@d`` and
    ``swe10@d`` alone.
    """
    pattern = re.compile(
        r"(?<![A-Za-z0-9!#$%&'*+/=?^_`{|}~.-])" + re.escape(old) + r"(?![A-Za-z0-9.-])",
        re.IGNORECASE,
    )
    return pattern.sub(new, text)
