"""LIST and LSUB over the folder catalogue (RFC 3501 §6.3.8-9, RFC 5258, RFC 6154).

Answers what clients ask when they first connect: every folder with its
hierarchy attributes (``\\HasChildren``/``\\HasNoChildren``, ``\\Noselect``
for ``Agents`` and for superiors that only exist as part of a longer name)
and its SPECIAL-USE attribute (``\\Sent``, ``\\Drafts``, ``\\Trash``, ...),
which Thunderbird reads to find the Sent folder. Patterns: ``*`` matches
anything, ``%`` anything but the delimiter; INBOX matches case-insensitively.
Of the LIST-EXTENDED options, the selection options ``SUBSCRIBED`` and
``SPECIAL-USE`` and the return options ``SUBSCRIBED`` and ``SPECIAL-USE``
are honoured; others are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..store.store import Store
from .folders import AGENTS, DELIMITER
from .responses import ListItem

__all__ = ["list_folders"]


@dataclass(slots=True)
class _Entry:
    name: str
    attributes: list[str] = field(default_factory=list)
    subscribed: bool = True
    special: str = ""


def _pattern(text: str) -> re.Pattern[str]:
    out = []
    for ch in text:
        out.append(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _entries(store: Store) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    virtual_subscribed = {}
    for name, special, subscribed in store.query(
            "SELECT name, special, subscribed FROM folders"):
        if name == AGENTS or name.startswith(AGENTS + DELIMITER):
            virtual_subscribed[name] = bool(subscribed)  # the row only keeps UIDVALIDITY
            continue
        entries[name] = _Entry(name, [], bool(subscribed), special)
    for name in list(entries):  # superiors that are only implied
        parts = name.split(DELIMITER)
        for depth in range(1, len(parts)):
            path = DELIMITER.join(parts[:depth])
            if path not in entries:
                entries[path] = _Entry(path, ["\\Noselect"], False)
    parties = sorted(p for p in store.parties if DELIMITER not in p)
    if parties:
        entries[AGENTS] = _Entry(AGENTS, ["\\Noselect"], True)
    for party in parties:
        name = f"{AGENTS}{DELIMITER}{party}"
        entries[name] = _Entry(name, [], virtual_subscribed.get(name, True))
    for name, entry in entries.items():
        has = any(other.startswith(name + DELIMITER) for other in entries)
        entry.attributes.append("\\HasChildren" if has else "\\HasNoChildren")
    return entries


def list_folders(store: Store, reference: str, patterns: Sequence[str], *, lsub: bool = False,
                 selection: Sequence[str] = (),
                 return_options: Sequence[str] = ()) -> list[ListItem]:
    """The ``* LIST`` (or ``* LSUB``) responses, INBOX first, then by name."""
    command = "LSUB" if lsub else "LIST"
    if list(patterns) == [""]:  # RFC 3501 §6.3.8: the delimiter and root
        return [ListItem("", DELIMITER, ("\\Noselect",), command)]
    only_subscribed = lsub or "SUBSCRIBED" in selection
    only_special = "SPECIAL-USE" in selection
    show_subscribed = not lsub and ("SUBSCRIBED" in selection or "SUBSCRIBED" in return_options)
    matchers = [_pattern(reference + p) for p in patterns]
    inbox_matchers = [re.compile(m.pattern, re.DOTALL | re.IGNORECASE) for m in matchers]
    entries = _entries(store)
    items = []
    for name in sorted(entries, key=lambda n: (n != "INBOX", n)):
        entry = entries[name]
        # RFC 3501 §5.1: INBOX is case-insensitive, so patterns match it that way.
        inbox = name == "INBOX" or name.startswith("INBOX" + DELIMITER)
        if not any(m.fullmatch(name) for m in (inbox_matchers if inbox else matchers)):
            continue
        if (only_subscribed and not entry.subscribed) or (only_special and not entry.special):
            continue
        attributes = list(entry.attributes)
        if show_subscribed and entry.subscribed:
            attributes.append("\\Subscribed")
        if entry.special and not lsub:
            attributes.append(entry.special)
        items.append(ListItem(name, DELIMITER, tuple(attributes), command))
    return items
