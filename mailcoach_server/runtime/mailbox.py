"""What a party sees of its mail: the seam between a party's logic and where its mail lives.

An agent or robot is a step over a ``Mailbox``: take the next pending
message, read the memory up to it, make a reply, send it (which also marks
the message done). Two homes implement it: the local store inside
``mailcoach serve`` (``runtime/local_mailbox.py``) and, for ``mailcoach
worker``, a party's mailbox on an IMAP + SMTP server. Tests of agent
behaviour use an in-memory one (``tests/runtime/memory_mailbox.py``).

Control headers (``X-Rollback``, ``X-Pop-Shell``, ``X-Drop``, ``X-Expect``)
in what a party sends rewrite its memory: the home applies them when the
mail is sent (``runtime/headers.apply_control_headers`` is the one rule),
so the step never edits memory itself.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Protocol

__all__ = ["BudgetGate", "Incoming", "Mailbox", "Turn"]

#: (sender, text as the model sees it); text None for a message with no text
Turn = tuple[str, "str | None"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One pending message of a party, as its home hands it over."""

    #: the home's handle (local: the delivery id; IMAP: UIDVALIDITY and UID)
    ref: Hashable
    raw: bytes
    sender: str
    subject: str
    message_id: str | None
    #: the model this message asks for (``X-Hint-Model``), None = the party's own
    model: str | None = None
    #: a short name for logs ("message 12", "UID 7")
    label: str = ""


class Mailbox(Protocol):
    """A party's mail: what is pending, its memory, and sending a reply.

    Errors: ``SubmitError`` when the home refuses a message for good
    (nothing was sent); ``StoreError`` or ``OSError`` when it cannot take it
    now (disk full, server away): the caller tries again later with the
    same bytes, so nothing is made twice.
    """

    address: str

    async def pending(self) -> list[Incoming]:
        """Messages waiting for an answer, in the order they must be acted on."""
        ...

    async def wait_for_mail(self) -> None:
        """Return when new mail may be pending (``pending`` tells for sure)."""
        ...

    async def memory(self, upto: Incoming) -> list[Turn]:
        """The party's memory as a model reads it, oldest first, ending with ``upto``."""
        ...

    async def send(self, reply: bytes, *, answering: Incoming, cost: float = 0.0,
                   origin: str = "agent") -> None:
        """Send ``reply`` from the party and mark ``answering`` done, as one step where the
        home allows it (locally one transaction; on IMAP, see the worker's protocol)."""
        ...

    async def trim_memory(self, upto: Incoming, drop: Sequence[int], note: tuple[str, str]) -> None:
        """Remove positions ``drop`` of ``memory(upto)`` from the memory and add a note from
        the runtime, ``(subject, body)``, at its end, as a robot's reply would be (the
        trace keeps every message)."""
        ...

    async def done(self, incoming: Incoming) -> None:
        """Mark ``incoming`` done without a reply (a robot that has nothing to say)."""
        ...

    def human_for(self, sender: str) -> str:
        """Who hears of a failure to answer ``sender``: the sender if a human, else the user."""
        ...

    def answers(self, reply: Message, incoming: Incoming) -> str | None:
        """The Message-ID a reply to ``incoming`` threads under, if not ``incoming``'s."""
        ...


class BudgetGate(Protocol):
    """Whether an agent may call its model now, and a way to wait until it may."""

    def problem(self, agent: str) -> str | None:
        """Why ``agent`` may not start a model call now, or None."""
        ...

    async def note(self, agent: str, problem: str) -> None:
        """Tell a human, once, that ``agent`` waits."""
        ...

    async def changed(self) -> None:
        """Return when the budget may have changed."""
        ...
