"""One way to make each record of a message: its fields, its thread, its ``MessageMeta``.

``header_fields`` reads what a header block says (the same ``HeaderView``
the postmaster reads a submission with); ``resolve_thread`` decides the
thread a message joins and its count of automatic rounds; ``new_meta``
builds the index record from either a ``Submission`` or ``HeaderFields``.
Every path that stores a message (the router, loaded memories, IMAP
APPEND) goes through these three, so they cannot disagree. Nothing here
touches the store: the caller hands ``resolve_thread`` a lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .addresses import parse_address_list
from .postmaster import HeaderView, decoded_header, split_header_block
from .store.store import MessageMeta

__all__ = ["HeaderFields", "MessageFields", "Thread", "header_fields", "new_meta",
           "resolve_thread"]


class MessageFields(Protocol):
    """What a message says about itself (a ``Submission`` is one)."""

    @property
    def message_id(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def recipients(self) -> tuple[str, ...]: ...
    @property
    def subject(self) -> str: ...
    @property
    def in_reply_to(self) -> str: ...
    @property
    def references(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class HeaderFields:
    """``MessageFields`` read from a header block that was not submitted (copies, APPEND)."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    in_reply_to: str
    references: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Thread:
    """The thread a message joins and how many automatic messages in a row led to it."""

    thread: str
    auto_round: int


def header_fields(raw: bytes) -> HeaderFields:
    """The fields of ``raw``'s header block; untrusted input gives empty fields, never an error.

    The sender is the first valid From address; recipients are To and Cc.
    """
    lines, _ = split_header_block(raw.replace(b"\r\n", b"\n"))
    head = HeaderView(lines)
    senders, _ = parse_address_list(head.get_all("From"))
    recipients, _ = parse_address_list(head.get_all("To") + head.get_all("Cc"))
    return HeaderFields(
        message_id=head.get("Message-ID"),
        sender=senders[0] if senders else "",
        recipients=tuple(dict.fromkeys(recipients)),
        subject=decoded_header(head.get("Subject")),
        in_reply_to=head.get("In-Reply-To"),
        references=tuple(head.get("References").split()),
    )


def resolve_thread(fields: MessageFields, find: Callable[[str], MessageMeta | None], *,
                   auto: bool) -> Thread:
    """The thread ``fields`` joins, given ``find`` (Message-ID → stored meta or None).

    The parent is the message In-Reply-To names, else the latest known one of
    References; with none known the thread is named after the first reference
    (or the message itself). ``auto`` (an agent's or robot's message) counts
    one more round; anything else starts the count again.
    """
    parent = find(fields.in_reply_to) if fields.in_reply_to else None
    latest = None
    for reference in reversed(fields.references):
        latest = find(reference)
        if latest is not None:
            break
    parent = parent or latest
    if parent is None:
        thread = fields.references[0] if fields.references else fields.message_id
        return Thread(thread, 1 if auto else 0)
    # A reply to the user answers the user's question (In-Reply-To) but follows
    # the last message of the chain (References): count rounds from the later.
    rounds = max(parent.auto_round, latest.auto_round if latest else 0)
    return Thread(parent.thread, rounds + 1 if auto else 0)


def new_meta(fields: MessageFields, *, id: int, thread: Thread, cost: float = 0.0,
             received_at: float | None = None) -> MessageMeta:
    """The index record of a message about to be stored (``received_at`` defaults to now)."""
    return MessageMeta(
        id=id,
        message_id=fields.message_id,
        sender=fields.sender,
        recipients=tuple(fields.recipients),
        subject=fields.subject,
        in_reply_to=fields.in_reply_to,
        thread=thread.thread,
        auto_round=thread.auto_round,
        cost=cost,
        received_at=time.time() if received_at is None else received_at,
    )
