"""RFC 5322 address lists as ENVELOPE and SEARCH see them: mailboxes and groups.

``email.utils.getaddresses`` reads one mailbox well (comments, quoting,
routes) but flattens groups, and ENVELOPE must show them (RFC 3501 §7.4.2:
``(NIL NIL "group" NIL)`` opens one, ``(NIL NIL NIL NIL)`` closes it). So
this module only finds the group boundaries, at the top level of the value
(outside quotes, comments and angle brackets), and hands each stretch of
mailboxes to the stdlib. Display names stay as sent (encoded words are the
client's to decode). Malformed input never raises: what cannot be read is
left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import getaddresses

__all__ = ["Group", "GroupEnd", "Mailbox", "parse_address_items"]


@dataclass(frozen=True, slots=True)
class Mailbox:
    name: str | None
    mailbox: str
    host: str

    @property
    def address(self) -> str:
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox


@dataclass(frozen=True, slots=True)
class Group:
    """The start of a group: ``name:``."""

    name: str


@dataclass(frozen=True, slots=True)
class GroupEnd:
    """The ``;`` that ends a group."""


Item = Mailbox | Group | GroupEnd


def _top_level(text: str) -> list[tuple[str, str]]:
    """``[(kind, text)]`` with kind ``mailboxes``, ``group`` (its name) or ``end``."""
    out: list[tuple[str, str]] = []
    start = 0
    quoted = escaped = False
    comment = angle = 0
    in_group = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or comment):
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == "(":
            comment += 1
        elif comment:
            comment -= ch == ")"
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle += 1
        elif ch == ">":
            angle = max(0, angle - 1)
        elif angle:
            continue
        elif ch == ":" and not in_group:
            out.append(("group", text[start:i].strip()))
            start, in_group = i + 1, True
        elif ch == ";" and in_group:
            out.append(("mailboxes", text[start:i]))
            out.append(("end", ""))
            start, in_group = i + 1, False
    out.append(("mailboxes", text[start:]))
    if in_group:  # "team: a@b" without the ";": close it anyway
        out.append(("end", ""))
    return out


def _mailboxes(text: str) -> list[Mailbox]:
    if not text.strip(" \t,"):
        return []
    out = []
    for display, address in getaddresses([text]):
        if not address and not display:
            continue
        mailbox, at, host = address.rpartition("@")
        if not at:
            mailbox, host = address, ""
        display = display.strip()
        if display.startswith("(") and display.endswith(")"):
            display = ""  # only comments (inside <...>): not a display name
        out.append(Mailbox(display or None, mailbox, host))
    return out


def parse_address_items(value: str) -> list[Item]:
    """The mailboxes and group markers of an address header value, in order."""
    items: list[Item] = []
    for kind, text in _top_level(value):
        if kind == "group":
            name = " ".join(text.split())
            if len(name) >= 2 and name[0] == name[-1] == '"':
                name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            items.append(Group(name))
        elif kind == "end":
            items.append(GroupEnd())
        else:
            items.extend(_mailboxes(text))
    return items
