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


class _Pattern:
    """A LIST pattern (RFC 3501 §6.3.8): ``*`` matches anything, ``%`` anything but ``/``.

    Matching is linear in the name whatever the pattern: a pattern with one
    wildcard is a regular expression (no backtracking to speak of), one with
    several ``*`` a left-to-right search for its pieces, others a bit-parallel
    automaton (shift-and), so ``*a*a*a*b`` cannot make LIST crawl the way
    backtracking would.
    """

    def __init__(self, text: str, *, ignore_case: bool = False) -> None:
        self._fold = ignore_case
        text = text.lower() if ignore_case else text
        tokens: list[str] = []
        for ch in text:  # runs of wildcards are one ("*%" is "*", "%%" is "%")
            if ch in "*%" and tokens and tokens[-1] in "*%":
                tokens[-1] = "*" if "*" in (ch, tokens[-1]) else "%"
            else:
                tokens.append(ch)
        self._regex: re.Pattern[str] | None = None
        #: a pattern with ``*`` only: its literal pieces, found in order with str.find
        self._pieces: list[str] | None = None
        if "%" not in tokens and tokens.count("*") > 1:
            self._pieces = "".join(tokens).split("*")
        elif sum(t in "*%" for t in tokens) <= 1:
            self._regex = re.compile("".join(
                ".*" if t == "*" else "[^/]*" if t == "%" else re.escape(t) for t in tokens),
                re.DOTALL)
        self._size = len(tokens)
        self._literal: dict[str, int] = {}
        self._star = self._percent = 0
        for i, t in enumerate(tokens):
            if t == "*":
                self._star |= 1 << i
            elif t == "%":
                self._percent |= 1 << i
            else:
                self._literal[t] = self._literal.get(t, 0) | 1 << i

    def fullmatch(self, name: str) -> bool:
        if self._fold:
            name = name.lower()
        if self._regex is not None:
            return self._regex.fullmatch(name) is not None
        if self._pieces is not None:
            return _pieces_match(self._pieces, name)
        wild = self._star | self._percent
        states = 1 | (1 & wild) << 1  # bit i: the first i tokens matched
        literal, star = self._literal, self._star
        for ch in name:
            stay = star if ch == DELIMITER else wild
            states = ((states & literal.get(ch, 0)) << 1) | (states & stay)
            if not states:
                return False
            states |= (states & wild) << 1  # a wildcard may also match nothing
        return bool(states >> self._size & 1)


def _pieces_match(pieces: list[str], name: str) -> bool:
    """``a*b*c``: ``a`` starts it, ``c`` ends it, ``b`` is found between, leftmost first
    (greedy is exact when every wildcard is ``*``)."""
    first, last = pieces[0], pieces[-1]
    if len(name) < len(first) + len(last) or not name.startswith(first) \
            or not name.endswith(last):
        return False
    pos, end = len(first), len(name) - len(last)
    for piece in pieces[1:-1]:
        at = name.find(piece, pos, end)
        if at < 0:
            return False
        pos = at + len(piece)
    return True


def _superiors(name: str) -> list[str]:
    """``a/b/c`` → ``["a", "a/b"]``: one slice per level, no joins (linear in the name)."""
    out = []
    at = name.find(DELIMITER)
    while at >= 0:
        out.append(name[:at])
        at = name.find(DELIMITER, at + 1)
    return out


def _entries(store: Store) -> dict[str, _Entry]:
    """Every listable name; linear in the number of folders times their depth."""
    entries: dict[str, _Entry] = {}
    virtual_subscribed = {}
    for record in store.folders.list_folders():
        name, special, subscribed = record.name, record.special, record.subscribed
        if name == AGENTS or name.startswith(AGENTS + DELIMITER):
            virtual_subscribed[name] = bool(subscribed)  # the row only keeps UIDVALIDITY
            continue
        entries[name] = _Entry(name, [], bool(subscribed), special)
    for name in list(entries):  # superiors that are only implied
        path = name.rpartition(DELIMITER)[0]
        while path and path not in entries:  # the first one there has its superiors
            entries[path] = _Entry(path, ["\\Noselect"], False)
            path = path.rpartition(DELIMITER)[0]
    parties = sorted(p for p in store.parties if DELIMITER not in p)
    if parties:
        entries[AGENTS] = _Entry(AGENTS, ["\\Noselect"], True)
    for party in parties:
        name = f"{AGENTS}{DELIMITER}{party}"
        entries[name] = _Entry(name, [], virtual_subscribed.get(name, True))
    parents = {name.rpartition(DELIMITER)[0] for name in entries}
    for name, entry in entries.items():
        entry.attributes.append("\\HasChildren" if name in parents else "\\HasNoChildren")
    return entries


def _lsub_parents(entries: dict[str, _Entry], matchers: Sequence[_Pattern]) -> set[str]:
    """RFC 3501 §6.3.9: an unsubscribed name stands (\\Noselect) for a subscribed
    descendant the pattern does not reach (``%`` and ``foo/bar`` give ``foo``)."""
    out: set[str] = set()
    for name, entry in entries.items():
        if entry.subscribed and not any(m.fullmatch(name) for m in matchers):
            out.update(p for p in _superiors(name) if not entries[p].subscribed)
    return out


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
    matchers = [_Pattern(reference + p) for p in patterns]
    inbox_matchers = [_Pattern(reference + p, ignore_case=True) for p in patterns]
    entries = _entries(store)
    stand_ins = _lsub_parents(entries, matchers) if lsub else set()
    items = []
    for name in sorted(entries, key=lambda n: (n != "INBOX", n)):
        entry = entries[name]
        # RFC 3501 §5.1: INBOX is case-insensitive, so patterns match it that way.
        inbox = name == "INBOX" or name.startswith("INBOX" + DELIMITER)
        if not any(m.fullmatch(name) for m in (inbox_matchers if inbox else matchers)):
            continue
        if lsub:  # RFC 3501 LSUB: \\Noselect at most, no child attributes (as Dovecot)
            if entry.subscribed:
                attributes = [a for a in entry.attributes if a == "\\Noselect"]
            elif name in stand_ins:
                attributes = ["\\Noselect"]
            else:
                continue
            items.append(ListItem(name, DELIMITER, tuple(attributes), command))
            continue
        if (only_subscribed and not entry.subscribed) or (only_special and not entry.special):
            continue
        attributes = list(entry.attributes)
        if show_subscribed and entry.subscribed:
            attributes.append("\\Subscribed")
        if entry.special:
            attributes.append(entry.special)
        items.append(ListItem(name, DELIMITER, tuple(attributes), command))
    return items
