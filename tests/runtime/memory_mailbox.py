"""An in-memory ``Mailbox``, ``BudgetGate`` and ``ChatModel``: agent behaviour without the store.

The workers in ``mailcoach_server/runtime/workers.py`` only see these
protocols, so their logic (order, replies, errors, retries, budgets) is
tested here with no socket, no SQLite and no mbox file. The local store's
``StoreMailbox`` and the worker's IMAP mailbox are the real homes, tested
end to end elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from email import message_from_bytes, policy
from email.message import Message

from mailcoach_server.errors import ModelError, StoreError, SubmitError
from mailcoach_server.mailtext import read_message
from mailcoach_server.runtime.context import turn_text
from mailcoach_server.runtime.llm import ChatTurn, Completion
from mailcoach_server.runtime.mailbox import Incoming, Turn

USER = "user@localdomain"


class MemoryMailbox:
    """A party's mail as Python lists.

    ``fail_sends`` transient failures (StoreError) come before a send is
    taken; ``refuse`` says which replies the home refuses for good.
    """

    def __init__(self, address: str, *, user: str = USER) -> None:
        self.address = address
        self.user = user
        self.closed = False
        self.remembered: list[Turn] = []
        self.sent: list[tuple[Message, Incoming, float, str]] = []
        self.done_refs: list[int] = []
        self.attempts: list[bytes] = []
        self.trims: list[tuple[list[int], tuple[str, str]]] = []
        self.fail_sends = 0
        self.refuse: Callable[[Message], bool] = lambda reply: False
        self._pending: list[Incoming] = []
        self._positions: dict[int, int] = {}
        self._arrived = asyncio.Event()
        self._next = 0

    def deliver(self, raw: bytes, *, model: str | None = None) -> Incoming:
        """Mail arrives for the party: in its memory and pending."""
        message = read_message(raw)
        self._next += 1
        incoming = Incoming(ref=self._next, raw=raw, sender=str(message["From"]),
                            subject=str(message.get("Subject", "")),
                            message_id=message.get("Message-ID"), model=model,
                            label=f"message {self._next}")
        self.remembered.append((incoming.sender, turn_text(message)))
        self._positions[self._next] = len(self.remembered)
        self._pending.append(incoming)
        self._arrived.set()
        return incoming

    async def pending(self) -> list[Incoming]:
        return list(self._pending)

    async def wait_for_mail(self) -> None:
        self._arrived.clear()
        await self._arrived.wait()

    async def memory(self, upto: Incoming) -> list[Turn]:
        return self.remembered[: self._positions[upto.ref]]

    async def send(self, reply: bytes, *, answering: Incoming, cost: float = 0.0,
                   origin: str = "agent") -> None:
        self.attempts.append(reply)
        if self.fail_sends:
            self.fail_sends -= 1
            raise StoreError("disk full")
        message = message_from_bytes(reply, policy=policy.default)
        if self.refuse(message):
            raise SubmitError(550, "5.1.1", "no such user")
        self.sent.append((message, answering, cost, origin))
        if message["X-Drop"] is None:
            self.remembered.append((self.address, turn_text(message)))
        self._finish(answering)

    async def trim_memory(self, upto: Incoming, drop: Sequence[int],
                          note: tuple[str, str]) -> None:
        subject, body = note
        text = f"From: postmaster@localdomain\nSubject: {subject}\n\n{body}"
        end = self._positions[upto.ref]
        kept = [turn for i, turn in enumerate(self.remembered) if i not in set(drop)]
        kept.append(("postmaster@localdomain", text))
        self.remembered = kept
        shift = len(drop)
        self._positions = {ref: (pos - shift if pos >= end else pos)
                           for ref, pos in self._positions.items()}
        self.trims.append((list(drop), note))

    async def done(self, incoming: Incoming) -> None:
        self._finish(incoming)

    def _finish(self, incoming: Incoming) -> None:
        self._pending.remove(incoming)
        self.done_refs.append(incoming.ref)

    def human_for(self, sender: str) -> str:
        return sender if sender == self.user else self.user

    def answers(self, reply: Message, incoming: Incoming) -> str | None:
        return None


class MemoryBudget:
    """A budget that is spent until ``refill()``."""

    def __init__(self, spent: bool = False) -> None:
        self.spent = spent
        self.notes: list[tuple[str, str]] = []
        self._event = asyncio.Event()

    def problem(self, agent: str) -> str | None:
        return "the budget of $0.0000 is spent" if self.spent else None

    async def note(self, agent: str, problem: str) -> None:
        self.notes.append((agent, problem))

    async def changed(self) -> None:
        await self._event.wait()

    def refill(self) -> None:
        self.spent = False
        self._event.set()
        self._event = asyncio.Event()


class ScriptedModel:
    """A ``ChatModel`` answering from a list (an exception in it is raised)."""

    def __init__(self, *answers: str | Exception, delay: float = 0.0) -> None:
        self.answers = list(answers)
        self.delay = delay
        self.calls: list[tuple[list[ChatTurn], str]] = []

    async def complete(self, turns: Sequence[ChatTurn], *, model: str) -> Completion:
        self.calls.append((list(turns), model))
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.answers.pop(0) if self.answers else "To: user@localdomain\n\nok"
        if isinstance(answer, Exception):
            raise answer
        return Completion(text=answer, model=model, tokens_input=11, tokens_output=4,
                          cost=0.25, seconds=0.0)


def model_error(text: str = "the provider is down") -> ModelError:
    return ModelError(text, retryable=True, hint="try later")
