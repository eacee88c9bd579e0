"""One worker per acting party: serial within a party, parallel across parties.

A worker takes its party's pending messages from a ``Mailbox``, in order,
makes a reply with the party's pure step (``runtime/party.py``) and sends
it through the same mailbox, which marks the message done with it: after a
crash a message is either answered or still pending, never both. The
mailbox may be the local store (``mailcoach serve``) or a mailbox on an
IMAP server (``mailcoach worker``); nothing here knows which.

Model and robot mistakes become mail (an error reply); a bug in here is
logged with a traceback and also answered, so no message loops forever.
No single message stops a worker: a message that cannot be parsed, or any
exception while acting on it, gets an error reply and the worker goes on. A
reply the mailbox cannot take now (disk full, server away) is kept and sent
again with backoff, never re-made (a shell command is not run twice, a
model not paid twice). A reply the home refuses still reaches a human, with
a note saying why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from email.message import EmailMessage, Message

from mailcoach_robots import Robot

from ..errors import ModelError, StoreError, SubmitError
from ..mailtext import parse_message, read_message
from .llm import ChatModel
from .mailbox import BudgetGate, Incoming, Mailbox, Turn
from .party import (
    AgentProfile,
    BeforeModelCall,
    WrittenReply,
    agent_reply,
    error_message,
    refused_reply,
    robot_reply,
)
from .trimming import fit, shrunk_limit, trim_note

__all__ = ["AgentWorker", "RobotWorker", "Worker"]

log = logging.getLogger("mailcoach.worker")

#: Seconds between tries of a write the mailbox refused for now, doubling to the cap.
_RETRY_FIRST, _RETRY_MAX = 0.05, 30.0
#: model calls for one message when the provider says the context is too long
_FIT_TRIES = 3


class Worker:
    """The loop shared by agents and robots; subclasses implement ``act``.

    ``on_change`` is called whenever ``busy`` or ``blocked`` changes (the
    engine's idle tracking). ``start()`` begins the loop as a task.
    """

    def __init__(self, mailbox: Mailbox, *, on_change: Callable[[], None] = lambda: None) -> None:
        self.mailbox = mailbox
        self.address = mailbox.address
        self._on_change = on_change
        self._busy = True  # until it has looked at its mail
        self._blocked = False  # waiting for budget
        self._acting: asyncio.Task[None] | None = None
        self._user_cancelled = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Worker:
        self.task = asyncio.create_task(self._run(), name=f"worker {self.address}")
        self.task.add_done_callback(lambda _: self._on_change())
        return self

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def busy(self) -> bool:
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        self._busy = value
        self._on_change()

    @property
    def blocked(self) -> bool:
        return self._blocked

    @blocked.setter
    def blocked(self, value: bool) -> None:
        self._blocked = value
        self._on_change()

    async def _run(self) -> None:
        while True:
            pending = await self.mailbox.pending()
            if not pending:
                self.busy = False
                await self.mailbox.wait_for_mail()
                self.busy = True
                continue
            for incoming in pending:
                await self._handle(incoming)

    def cancel_current(self) -> bool:
        """Cancel the message being acted on (Ctrl+C in the console); True if there was one."""
        if self._acting is None or self._acting.done():
            return False
        self._user_cancelled = True
        self._acting.cancel()
        return True

    async def _handle(self, incoming: Incoming) -> None:
        try:
            message = self.parse(incoming.raw)
        except Exception as exc:  # what the parser cannot read is answered, not retried
            log.exception("%s cannot parse %s", self.address, incoming.label)
            message = read_message(incoming.raw.partition(b"\n\n")[0] + b"\n\n")
            await self._error_reply(incoming, message,
                                    problem=f"the message cannot be read: {exc}",
                                    hint="send it again as plain text")
            return
        self._acting = asyncio.create_task(self.act(incoming, message))
        try:
            await self._acting
        except asyncio.CancelledError:
            if not self._user_cancelled:
                self._acting.cancel()
                raise
            self._user_cancelled = False
            await self._error_reply(incoming, message, problem="cancelled by the user",
                                    hint="send the message again to retry")
        except Exception as exc:  # a bug: say so in the log and to the user, go on
            log.exception("%s failed on %s", self.address, incoming.label)
            await self._error_reply(
                incoming, message, problem=f"internal error: {type(exc).__name__}: {exc}",
                hint="this is a bug in mailcoach; the server log has the details",
            )

    async def _error_reply(self, incoming: Incoming, message: Message, *, problem: str,
                           hint: str, cost: float = 0.0) -> None:
        """Tell a human what failed; if even that is refused, mark the message done, go on."""
        to = self.mailbox.human_for(incoming.sender)
        log.warning("%s could not answer %s: %s", self.address, incoming.message_id, problem)
        reply = error_message(author=self.address, to=to, message=message, problem=problem,
                              hint=hint, answers=lambda r: self.mailbox.answers(r, incoming))
        raw = reply.as_bytes()
        try:
            await self._until_sent(lambda: self.mailbox.send(raw, answering=incoming, cost=cost))
        except Exception:
            log.exception("%s: the error reply to %s failed; it is dropped", self.address,
                          incoming.label)
            await self._until_sent(lambda: self.mailbox.done(incoming))

    async def _until_sent(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` until the mailbox takes it (disk full passes); other errors raise."""
        delay = _RETRY_FIRST
        while True:
            try:
                await write()
                return
            except (StoreError, OSError) as exc:
                if getattr(self.mailbox, "closed", False):
                    raise
                log.warning("%s: the mailbox refused a write (%s); again in %.2f s",
                            self.address, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    def parse(self, raw: bytes) -> Message:
        return read_message(raw)

    async def act(self, incoming: Incoming, message: Message) -> None:
        raise NotImplementedError

    async def send_reply(self, reply: EmailMessage | WrittenReply, *, incoming: Incoming,
                         message: Message, origin: str, cost: float = 0.0) -> None:
        # made once: a retry sends these same bytes
        raw = reply.raw if isinstance(reply, WrittenReply) else reply.as_bytes()

        def send(data: bytes) -> Callable[[], Awaitable[None]]:
            return lambda: self.mailbox.send(data, answering=incoming, cost=cost, origin=origin)
        try:
            await self._until_sent(send(raw))
        except SubmitError as exc:
            # The reply is not lost: a human gets it as written, with why it was refused.
            to = self.mailbox.human_for(incoming.sender)
            log.warning("%s: reply refused (%s); it goes to %s", self.address,
                        exc.smtp_reply(), to)
            written = reply.message() if isinstance(reply, WrittenReply) else reply
            redirected = refused_reply(written, to=to, problem=exc.smtp_reply())
            try:
                await self._until_sent(send(redirected.as_bytes()))
            except SubmitError:
                await self._error_reply(
                    incoming, message, cost=cost,
                    problem=f"its reply was refused: {exc.smtp_reply()}",
                    hint="mail can only go to addresses in the local domain",
                )


class AgentWorker(Worker):
    """An agent: its memory and a model call make each reply."""

    def __init__(self, mailbox: Mailbox, profile: AgentProfile, *, model: ChatModel,
                 budget: BudgetGate, before_call: BeforeModelCall | None = None,
                 on_change: Callable[[], None] = lambda: None) -> None:
        super().__init__(mailbox, on_change=on_change)
        self.profile = profile
        self.model = model
        self.budget = budget
        self.before_call = before_call

    async def act(self, incoming: Incoming, message: Message) -> None:
        await self._wait_for_budget()
        spec = incoming.model or self.profile.model
        limit = self.profile.window_of(spec)
        for attempt in range(_FIT_TRIES):
            memory = await self._fitted_memory(incoming, spec, limit)
            try:
                reply, cost = await agent_reply(
                    self.profile, incoming, message, memory, model=self.model,
                    answers=lambda r: self.mailbox.answers(r, incoming),
                    before_call=self.before_call)
                break
            except ModelError as exc:
                if exc.context_exceeded and attempt + 1 < _FIT_TRIES:
                    # The provider knows its window better than our estimate: go below
                    # what was sent, and trim again.
                    limit = shrunk_limit(memory, self.profile.system, ())
                    log.warning("%s: %s says the context is too long; trimming to about "
                                "%d tokens", self.address, spec, limit)
                    continue
                await self._error_reply(
                    incoming, message, problem=f"the model {spec} failed: {exc}",
                    hint=exc.hint or "check the model name and the provider's status")
                return
        await self.send_reply(reply, incoming=incoming, message=message, origin="agent",
                              cost=cost)

    async def _fitted_memory(self, incoming: Incoming, spec: str,
                             limit: int | None) -> list[Turn]:
        """The memory up to ``incoming``, trimmed (and the trim stored) to fit ``limit``."""
        memory = await self.mailbox.memory(incoming)
        if limit is None:
            return memory
        trim = fit(memory, system=self.profile.system, limit=limit,
                   keep_first=self.profile.keep_first, agent=self.address,
                   robots=self.profile.robots)
        if trim is None:
            return memory
        log.info("%s: memory of ~%d tokens trimmed to ~%d for %s (%d messages)",
                 self.address, trim.before, trim.after, spec, len(trim.drop))
        note = trim_note(trim, spec)
        await self._until_sent(lambda: self.mailbox.trim_memory(incoming, trim.drop, note))
        return await self.mailbox.memory(incoming)

    async def _wait_for_budget(self) -> None:
        noted = False
        while (problem := self.budget.problem(self.address)) is not None:
            if not noted:
                noted = True
                log.warning("%s waits: %s", self.address, problem)
                await self.budget.note(self.address, problem)
            self.blocked = True
            try:
                await self.budget.changed()
            finally:
                self.blocked = False


class RobotWorker(Worker):
    """A robot: its plug-in makes each reply."""

    def __init__(self, mailbox: Mailbox, robot: Robot, *,
                 on_change: Callable[[], None] = lambda: None) -> None:
        super().__init__(mailbox, on_change=on_change)
        self.robot = robot

    def parse(self, raw: bytes) -> Message:
        return parse_message(raw)  # robots get the full EmailMessage API

    async def act(self, incoming: Incoming, message: Message) -> None:
        assert isinstance(message, EmailMessage)
        reply = await robot_reply(self.robot, self.address, incoming, message)
        if reply is None:
            await self._until_sent(lambda: self.mailbox.done(incoming))
            return
        await self.send_reply(reply, incoming=incoming, message=message, origin="robot")

