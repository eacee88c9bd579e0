"""A party's mailbox in the local store: the ``Mailbox`` of ``mailcoach serve``.

Pending messages are the party's undone deliveries; its memory is the
store's memory list for it; a reply goes through ``Engine.submit`` with
``completes=<delivery>``, so the reply and "done" land in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from email.message import Message

from ..errors import StoreError
from ..store.store import Delivery, MessageMeta, Store
from .mailbox import Incoming, Turn
from .memory_turns import MemoryTurns

__all__ = ["StoreMailbox"]

log = logging.getLogger("mailcoach.worker")

#: pending messages read at a time: each is held in memory until answered
_BATCH = 32
#: messages of a memory not yet read above which they are read in a thread (a cold long
#: memory takes seconds to parse; the event loop keeps serving meanwhile)
_READ_IN_THREAD = 256

#: submit(raw, origin=..., completes=..., cost=...)
Submit = Callable[..., Awaitable[object]]
#: rewrite(address, new memory, (subject, body) of the note that ends it)
Rewrite = Callable[[str, list[int], tuple[str, str]], Awaitable[None]]


class StoreMailbox:
    """``Mailbox`` over the store; the engine wakes it with ``notify()``.

    Args:
        turns: the engine's turns of every party's memory, kept between calls.
        human_for: who hears of a failure to answer a sender.
        answers: the Message-ID a reply to a stored message threads under.
    """

    def __init__(self, address: str, store: Store, *, submit: Submit,
                 turns: MemoryTurns, human_for: Callable[[str], str],
                 answers: Callable[[Message, MessageMeta], str | None],
                 rewrite: Rewrite) -> None:
        self.address = address
        self.store = store
        self._submit = submit
        self._turns = turns
        self._human_for = human_for
        self._answers = answers
        self._rewrite = rewrite
        self._wakeup = asyncio.Event()
        self._metas: dict[int, MessageMeta] = {}  # delivery id -> the message's record

    @property
    def closed(self) -> bool:
        return self.store.closed

    def notify(self) -> None:
        self._wakeup.set()

    async def wait_for_mail(self) -> None:
        self._wakeup.clear()
        await self._wakeup.wait()

    async def pending(self) -> list[Incoming]:
        found: list[Incoming] = []
        for delivery in self.store.pending_deliveries(self.address)[:_BATCH]:
            try:
                raw, meta = self.store.read(delivery.message)
            except (StoreError, OSError) as exc:  # indexed but unreadable: nothing to answer
                log.error("%s: cannot read message %d (%s); delivery %d dropped",
                          self.address, delivery.message, exc, delivery.id)
                await self._mark_done(delivery.id)
                continue
            self._metas[delivery.id] = meta
            found.append(Incoming(ref=delivery, raw=raw, sender=meta.sender,
                                  subject=meta.subject, message_id=meta.message_id,
                                  model=delivery.model, label=f"message {delivery.message}"))
        return found

    async def memory(self, upto: Incoming) -> list[Turn]:
        number = _delivery(upto).message
        memory = list(self.store.parties[self.address].memory)
        if number in memory:
            memory = memory[: memory.index(number) + 1]
        # The memory is taken above, before any await: what arrives meanwhile is later mail.
        missing = self._turns.missing(self.address, memory)
        if len(missing) <= _READ_IN_THREAD:
            return self._turns.turns(self.address, memory)
        read = self._turns.read
        ahead = await asyncio.to_thread(lambda: {n: read(n) for n in missing})
        return self._turns.turns(self.address, memory, ahead)

    async def send(self, reply: bytes, *, answering: Incoming, cost: float = 0.0,
                   origin: str = "agent") -> None:
        delivery = _delivery(answering)
        await self._submit(reply, origin=origin, completes=delivery.id, cost=cost)
        self._metas.pop(delivery.id, None)

    async def trim_memory(self, upto: Incoming, drop: Sequence[int],
                          note: tuple[str, str]) -> None:
        # No await before the rewrite is planned: mail arriving meanwhile is not lost.
        number = _delivery(upto).message
        memory = list(self.store.parties[self.address].memory)
        view = memory[: memory.index(number) + 1] if number in memory else memory
        gone = {view[i] for i in drop}
        kept = [n for n in memory if n not in gone]
        await self._rewrite(self.address, kept, note)

    async def done(self, incoming: Incoming) -> None:
        await self._mark_done(_delivery(incoming).id)

    async def _mark_done(self, delivery_id: int) -> None:
        await self.store.mark_delivery_done(delivery_id)
        self._metas.pop(delivery_id, None)

    def human_for(self, sender: str) -> str:
        return self._human_for(sender)

    def answers(self, reply: Message, incoming: Incoming) -> str | None:
        meta = self._metas.get(_delivery(incoming).id)
        return None if meta is None else self._answers(reply, meta)


def _delivery(incoming: Incoming) -> Delivery:
    assert isinstance(incoming.ref, Delivery), "not a message of the local store"
    return incoming.ref
