"""One worker per acting party: serial within a party, parallel across parties.

A worker reads its pending deliveries from the store, acts on each in
order and submits the reply with ``completes=<delivery>``, so the reply
and "done" land in one transaction: after a crash a delivery is either
answered or still pending, never both.

Model and robot mistakes become mail (an error reply); a bug in here is
logged with a traceback and also answered, so no delivery loops forever.
No single message stops a worker: a message that cannot be read or parsed,
or any exception while acting on it, gets an error reply and the worker
goes on. A reply the store cannot take now (disk full) is kept and
submitted again with backoff, never re-made (a shell command is not run
twice, a model not paid twice). A reply the postmaster refuses still
reaches a human, with a note saying why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from email.message import EmailMessage, Message
from typing import TYPE_CHECKING

from ..errors import ModelError, StoreError, SubmitError
from ..mailtext import parse_message, read_message, text_of
from ..postmaster import decoded_header
from ..store.store import Delivery, MessageMeta
from .context import (
    ERROR_HEADER,
    message_from_model,
    primer,
    re_subject,
    reply_headers,
    thread_to_turns,
)

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["AgentWorker", "RobotWorker", "Worker", "refused_reply"]

log = logging.getLogger("mailcoach.worker")

#: Seconds between tries of a write the store refused (disk full), doubling to the cap.
_RETRY_FIRST, _RETRY_MAX = 0.05, 30.0


class Worker:
    """The loop shared by agents and robots; subclasses implement ``act``."""

    def __init__(self, engine: Engine, address: str) -> None:
        self.engine = engine
        self.store = engine.store
        self.address = address
        self.wakeup = asyncio.Event()
        self._busy = True  # until it has looked at its deliveries
        self._blocked = False  # waiting for budget
        self._acting: asyncio.Task[None] | None = None
        self._user_cancelled = False
        self.task = asyncio.create_task(self._run(), name=f"worker {address}")
        self.task.add_done_callback(lambda _: engine.worker_changed())

    @property
    def busy(self) -> bool:
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        self._busy = value
        self.engine.worker_changed()

    @property
    def blocked(self) -> bool:
        return self._blocked

    @blocked.setter
    def blocked(self, value: bool) -> None:
        self._blocked = value
        self.engine.worker_changed()

    async def _run(self) -> None:
        while True:
            deliveries = self.store.pending_deliveries(self.address)
            if not deliveries:
                self.busy = False
                self.wakeup.clear()
                await self.wakeup.wait()
                self.busy = True
                continue
            for delivery in deliveries:
                await self._handle(delivery)

    def cancel_current(self) -> bool:
        """Cancel the message being acted on (Ctrl+C in the console); True if there was one."""
        if self._acting is None or self._acting.done():
            return False
        self._user_cancelled = True
        self._acting.cancel()
        return True

    async def _handle(self, delivery: Delivery) -> None:
        try:
            raw, meta = self.store.read(delivery.message)
        except (StoreError, OSError) as exc:  # indexed but unreadable: nothing to answer
            log.error("%s: cannot read message %d (%s); delivery %d dropped", self.address,
                      delivery.message, exc, delivery.id)
            await self._mark_done(delivery)
            return
        try:
            message = self.parse(raw)
        except Exception as exc:  # what the parser cannot read is answered, not retried
            log.exception("%s cannot parse message %d", self.address, delivery.message)
            message = read_message(raw.partition(b"\n\n")[0] + b"\n\n")
            await self._error_reply(delivery, meta, message,
                                    problem=f"the message cannot be read: {exc}",
                                    hint="send it again as plain text")
            return
        self._acting = asyncio.create_task(self.act(delivery, meta, message))
        try:
            await self._acting
        except asyncio.CancelledError:
            if not self._user_cancelled:
                self._acting.cancel()
                raise
            self._user_cancelled = False
            await self._error_reply(delivery, meta, message, problem="cancelled by the user",
                                    hint="send the message again to retry")
        except Exception as exc:  # a bug: say so in the log and to the user, go on
            log.exception("%s failed on message %d", self.address, delivery.message)
            await self._error_reply(
                delivery, meta, message, problem=f"internal error: {type(exc).__name__}: {exc}",
                hint="this is a bug in mailcoach; the server log has the details",
            )

    async def _error_reply(self, delivery: Delivery, meta: MessageMeta, message: Message, *,
                           problem: str, hint: str, cost: float = 0.0) -> None:
        """Answer with an error; if even that is refused, mark the delivery done and go on."""
        async def send() -> None:
            await self.engine.error_reply(author=self.address, meta=meta, message=message,
                                          completes=delivery.id, cost=cost, problem=problem,
                                          hint=hint)
        try:
            await self._until_stored(send)
        except Exception:
            log.exception("%s: the error reply to message %d failed; delivery %d dropped",
                          self.address, delivery.message, delivery.id)
            await self._mark_done(delivery)

    async def _mark_done(self, delivery: Delivery) -> None:
        async def mark() -> None:
            await self.store.mark_delivery_done(delivery.id)
        await self._until_stored(mark)

    async def _until_stored(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` until the store takes it (disk full passes); other errors raise."""
        delay = _RETRY_FIRST
        while True:
            try:
                await write()
                return
            except (StoreError, OSError) as exc:
                if self.store.closed:
                    raise
                log.warning("%s: the store refused a write (%s); again in %.2f s",
                            self.address, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    def parse(self, raw: bytes) -> Message:
        return read_message(raw)

    async def act(self, delivery: Delivery, meta: MessageMeta, message: Message) -> None:
        raise NotImplementedError

    async def submit_reply(self, reply: EmailMessage, *, delivery: Delivery, meta: MessageMeta,
                           message: Message, origin: str, cost: float = 0.0) -> None:
        raw = reply.as_bytes()  # made once: a retry sends these same bytes

        async def send(data: bytes) -> None:
            await self.engine.submit(data, origin=origin, completes=delivery.id, cost=cost)
        try:
            await self._until_stored(lambda: send(raw))
        except SubmitError as exc:
            # The reply is not lost: a human gets it as written, with why it was refused.
            to = (meta.sender if self.engine.router.kind_of(meta.sender) == "user"
                  else self.engine.config.user)
            log.warning("%s: reply refused (%s); it goes to %s", self.address,
                        exc.smtp_reply(), to)
            redirected = refused_reply(reply, to=to, problem=exc.smtp_reply())
            try:
                await self._until_stored(lambda: send(redirected.as_bytes()))
            except SubmitError:
                await self._error_reply(
                    delivery, meta, message, cost=cost,
                    problem=f"its reply was refused: {exc.smtp_reply()}",
                    hint="mail can only go to addresses in the local domain",
                )


class AgentWorker(Worker):
    async def act(self, delivery: Delivery, meta: MessageMeta, message: Message) -> None:
        await self._wait_for_budget()
        engine = self.engine
        memory = list(self.store.parties[self.address].memory)
        if delivery.message in memory:
            memory = memory[: memory.index(delivery.message) + 1]
        items = [self.engine.turn_of(number) for number in memory]
        config = engine.config
        settings = config.party_settings(self.address)
        system = primer(
            self.address, domain=config.domain, user=config.user,
            robots=[(r.address, r.kind) for r in config.robots],
            system=settings.system,
        )
        turns = thread_to_turns(self.address, items, system)
        model = delivery.model or settings.model
        if engine.before_model_call is not None:
            await engine.before_model_call(self.address, model, turns)
        try:
            completion = await engine.model.complete(turns, model=model)
        except ModelError as exc:
            await engine.error_reply(
                author=self.address, meta=meta, message=message, completes=delivery.id,
                problem=f"the model {model} failed: {exc}",
                hint=exc.hint or "check the model name and the provider's status",
            )
            return
        reply = message_from_model(completion.text, agent=self.address,
                                   default_to=meta.sender, default_subject=meta.subject)
        reply_headers(reply, author=self.address, incoming=message, default_to=meta.sender,
                      answers=engine.reply_answers(reply, meta))
        reply["M-Model"] = completion.model
        reply["M-Tokens-Input"] = str(completion.tokens_input)
        reply["M-Tokens-Output"] = str(completion.tokens_output)
        reply["M-Cost"] = f"{completion.cost:.6f}"
        await self.submit_reply(reply, delivery=delivery, meta=meta, message=message,
                                origin="agent", cost=completion.cost)

    async def _wait_for_budget(self) -> None:
        noted = False
        while (problem := self.engine.budget_problem(self.address)) is not None:
            if not noted:
                noted = True
                log.warning("%s waits: %s", self.address, problem)
                await self.engine.budget_note(self.address, problem)
            self.blocked = True
            try:
                await self.engine.budget_changed()
            finally:
                self.blocked = False


class RobotWorker(Worker):
    def parse(self, raw: bytes) -> Message:
        return parse_message(raw)  # robots get the full EmailMessage API

    async def act(self, delivery: Delivery, meta: MessageMeta, message: Message) -> None:
        assert isinstance(message, EmailMessage)
        robot = self.engine.robots[self.address]
        reply = await robot.handle(message)
        if reply is None:
            await self._mark_done(delivery)
            return
        if reply["Subject"] is None:
            reply["Subject"] = re_subject(meta.subject)
        reply_headers(reply, author=self.address, incoming=message, default_to=meta.sender)
        await self.submit_reply(reply, delivery=delivery, meta=meta, message=message,
                                origin="robot")


def refused_reply(reply: EmailMessage, *, to: str, problem: str) -> EmailMessage:
    """``reply`` as written, readdressed to ``to`` with a note on why it was refused."""
    shown = ", ".join(f"{name}: {reply[name]}" for name in ("To", "Cc", "Bcc") if reply[name])
    body = reply.get_content() if not reply.is_multipart() else text_of(reply)
    note = EmailMessage()
    note["From"] = str(reply["From"])
    note["To"] = to
    note["Subject"] = str(reply["Subject"] or "")
    note[ERROR_HEADER] = f"reply refused: {problem}"[:200]
    for name, value in reply.items():  # what the model call cost stays on record
        if name.lower().startswith("m-"):
            note[name] = value
    note.set_content(
        f"This reply could not be sent as written ({shown}): {problem}\n"
        "Here it is, so nothing is lost.\n\n" + str(body)
    )
    return note


def error_message(*, author: str, to: str, message: Message, problem: str,
                  hint: str) -> EmailMessage:
    """The mail a sender gets when its message could not be answered."""
    subject = decoded_header(str(message.get("Subject", "")))
    reply = EmailMessage()
    reply["To"] = to
    reply["Subject"] = re_subject(subject)
    reply[ERROR_HEADER] = problem.splitlines()[0][:200]
    reply.set_content(
        f"{author} could not answer the message \"{subject}\".\n\n"
        f"What failed: {problem}\n"
        f"How to fix it: {hint}\n\n"
        "Nothing was lost: the message is stored. Reply to this mail to try again.\n"
    )
    reply_headers(reply, author=author, incoming=message, default_to=to)
    return reply
