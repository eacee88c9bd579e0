"""Mail addresses: parsing header values, and the agent family rules.

Header parsing is the stdlib's ``email.utils.getaddresses``; this module
only adds normalisation (lower-case domain, no display name) and the
original tool's ancestor rule: ``a.swe1@d`` descends from ``swe1@d``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from email.utils import getaddresses, parseaddr

__all__ = [
    "ancestors",
    "normalize_address",
    "parse_address_list",
    "rewrite_address",
]

# Deliberately narrower than RFC 5322: what a local mailbox name may be.
_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")


def normalize_address(raw: str) -> str | None:
    """``"Swe One <SWE1@LocalDomain>"`` → ``"swe1@localdomain"``; None if not an address.

    The local part is lower-cased too: mailboxes here are case-insensitive,
    as on nearly every real server, so ``Swe1@`` and ``swe1@`` are one party.
    """
    _, address = parseaddr(raw.strip())
    return _checked(address)


def _checked(address: str) -> str | None:
    address = address.strip().lower()
    if not _ADDRESS.match(address) or address.startswith("@") or ".." in address:
        return None
    return address


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
