"""Approval by mail: a command from an agent that needs it waits for the user's yes.

The flow, for a robot configured with ``approval`` (``approval_rules.py``):

1. An agent's command that needs approval is not run. The robot's reply to
   it goes to the approver (``approver``, default the config's user):
   ``Approve: <command> [approval TOKEN]``, threaded to the command, with a
   Message-ID of the robot's own that the request is found by later. The
   request is written to the robot's state file first (``approval_book``).
2. The approver answers from any client: a mail to the robot whose
   In-Reply-To or References name the request, or whose Subject holds its
   token. In the console (no threading there), a mail to the robot with no
   Subject answers the only pending request. ``yes`` runs the command and
   the output goes To the agent (Cc the approver) as the reply to its
   command, threaded to it; ``no`` sends ``Exit Code: 126`` and
   ``refused by the user: <reason>`` the same way.
3. A request is decided once: the state is written before the command
   runs, so a crash never runs it twice (at most once, as the workers keep
   a shell command), and a second answer gets "already approved".
4. Only the approver decides. An answer from anyone else (an agent saying
   ``yes`` to its own command) is refused with a note and counts for
   nothing; the request keeps waiting. Mail from the approver is never
   held: whoever approves does not ask themself.
5. Expiry: a robot has no clock of its own in the runtime, so this class
   runs one task (``start`` at the engine's start, ``aclose`` cancels it)
   that sleeps until the next request is due, then tells the agent
   (``Exit Code: 126``, threaded to its command) and the approver (threaded
   to the request), through ``RobotContext.post``. A home without ``post``
   gets no timer: an overdue request is expired when it is answered.

Commands come in through ``hold``; answers through ``answer``. Running a
command is the robot's business (the ``run`` callback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage, Message
from email.utils import make_msgid
from pathlib import Path
from typing import Final

from mailcoach_robots import RobotContext
from mailcoach_robots.approval_book import ApprovalBook, Request, message_ids
from mailcoach_robots.approval_mail import (
    Answer,
    answer_of,
    note,
    readdressed,
    request_mail,
    settled_text,
    span,
    unapproved_reply,
)
from mailcoach_robots.approval_rules import ApprovalPolicy

from mailcoach_server.addresses import normalize_address
from mailcoach_server.errors import ConfigError

__all__ = ["Approvals", "Run", "sender_of", "state_path"]

log = logging.getLogger(__name__)

#: runs an approved request's command; returns the reply (Subject ``Exit Code: N``)
Run = Callable[[Request], Awaitable[EmailMessage]]
#: longest sleep of the expiry task (it also wakes when a request is added)
_MAX_NAP: Final = 300.0


def sender_of(message: Message) -> str:
    return normalize_address(str(message.get("From", ""))) or ""


def state_path(context: RobotContext) -> Path:
    """Where a robot keeps its approvals: its part of the data dir, outside the work dir."""
    return Path(context.data_dir) / "robots" / context.address / "approvals.json"


class Approvals:
    """The approval requests of one robot and what answering them does."""

    def __init__(self, context: RobotContext, policy: ApprovalPolicy, *, approver: str,
                 timeout: float, workdir: Path | None, run: Run) -> None:
        self.robot = context.address
        self.policy = policy
        self.approver = approver
        self.timeout = timeout
        self._post = context.post
        self._run = run
        path = state_path(context)
        # workdir None: commands run elsewhere (the remote shell's stub).
        if workdir is not None and path.resolve().is_relative_to(workdir):
            raise ConfigError(f"robots.{self.robot}.workdir: {workdir} holds the approval "
                              f"state ({path}); commands could approve themselves")
        self.book = ApprovalBook(path)
        if policy.active and not approver:
            raise ConfigError(f"robots.{self.robot}.approver: approval needs an approver "
                              "(the config's user, or an address here)")
        self._lock = asyncio.Lock()
        self._added = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        if self._post is not None and self._timer is None and (
                self.policy.active or self.book.pending()):
            self._timer = asyncio.create_task(self._expire_loop(),
                                              name=f"approvals {self.robot}")

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None

    # -- commands and answers --------------------------------------------------

    def is_answer(self, message: Message) -> Request | None:
        """The request ``message`` answers (by Message-ID or token), if any."""
        if not self.book.requests:
            return None
        ids = message_ids(message.get("In-Reply-To"), *reversed(
            message_ids(message.get("References"))))
        return self.book.find(ids, str(message.get("Subject", "")))

    def console_answer(self, message: Message, command: str,
                       text: str) -> Request | EmailMessage | None:
        """In the console a ``yes`` has no threading: with no Subject it answers the only
        pending request; with several, the reply lists them and how to name one."""
        if command or sender_of(message) != self.approver or answer_of(text) is None:
            return None
        pending = self.book.pending()
        if len(pending) <= 1:
            return pending[0] if pending else None
        listed = "".join(f"    [approval {r.token}]  {r.agent}: {r.command}\n" for r in pending)
        return note("Which one?", f"{len(pending)} commands wait for approval:\n\n{listed}\n"
                    "Answer one by replying to its Approve mail, or put its [approval TOKEN] "
                    "in the Subject (in the console: an empty line, then :[approval TOKEN]).")

    def needs_approval(self, message: Message, command: str) -> str | None:
        """Why the command must wait (None: run it now)."""
        if not self.policy.active or sender_of(message) == self.approver:
            return None
        action, why = self.policy.decide(command)
        return why if action == "ask" else None

    async def hold(self, message: Message, command: str, stdin: bytes, attach: list[str],
                   why: str) -> EmailMessage:
        """Keep the command for the approver; the request mail is the reply."""
        now = time.time()
        token = secrets.token_hex(6)
        domain = self.robot.partition("@")[2] or None
        request = Request(
            token=token, request_id=make_msgid("approval", domain=domain),
            agent=sender_of(message), command=command,
            stdin=stdin.decode("utf-8", "replace"), attach=attach,
            command_id=str(message.get("Message-ID", "")).strip(),
            command_refs=message_ids(message.get("References")),
            created=now, expires=now + self.timeout)
        async with self._lock:
            await asyncio.to_thread(self.book.add, request)
        self._added.set()
        log.info("%s holds %r from %s for %s (%s)", self.robot, command, request.agent,
                 self.approver, token)
        return request_mail(request, robot=self.robot, approver=self.approver, why=why)

    async def answer(self, request: Request, message: Message, text: str) -> EmailMessage:
        """The reply to an answer: the command's output to the agent, or a note."""
        sender = sender_of(message)
        if sender != self.approver:
            log.warning("%s: %s tried to answer request %s of %s; refused", self.robot,
                        sender, request.token, request.agent)
            return note(f"Not counted: {request.command[:80]}",
                        f"Only {self.approver} can approve or refuse commands for "
                        f"{self.robot}; an agent cannot approve its own. Your answer was not "
                        f"counted: the request [approval {request.token}] still waits for "
                        f"{self.approver}.")
        verdict = answer_of(text)
        async with self._lock:
            if request.state == "pending" and request.expires <= time.time():
                await self._expire(request)
            if request.state != "pending":
                return note(f"Re: Approve: {request.command[:80]}",
                            f"The command \"{request.command}\": {settled_text(request)}.")
            if verdict is None:
                return note(f"Re: Approve: {request.command[:80]}",
                            "Not understood: reply \"yes\" to run the command, or \"no\" "
                            "(a reason may follow) to refuse it. The request still waits.")
            state = "approved" if verdict.verdict == "yes" else "refused"
            await asyncio.to_thread(self.book.settle, request, state,
                                    reason=verdict.reason, by=sender)
        log.info("%s: %s %s %r of %s", self.robot, sender, state, request.command,
                 request.agent)
        return readdressed(await self._decided(request, verdict), request,
                           approver=self.approver)

    async def _decided(self, request: Request, verdict: Answer) -> EmailMessage:
        if verdict.verdict == "yes":
            return await self._run(request)
        reason = verdict.reason or "no reason given"
        return unapproved_reply(request, f"refused by the user: {reason}")

    # -- expiry ------------------------------------------------------------------

    async def _expire_loop(self) -> None:
        while True:
            now = time.time()
            for request in self.book.pending():
                if request.expires <= now:
                    async with self._lock:
                        if request.state == "pending":
                            await self._expire(request)
            upcoming = [r.expires for r in self.book.pending()]
            nap = min([_MAX_NAP, *(max(t - time.time(), 0.01) for t in upcoming)])
            self._added.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(nap):
                    await self._added.wait()

    async def _expire(self, request: Request) -> None:
        """Tell the agent and the approver, then mark it expired (hold the lock)."""
        waited = span(request.expires - request.created)
        log.info("%s: request %s (%r of %s) expired", self.robot, request.token,
                 request.command, request.agent)
        if self._post is not None:
            to_agent = readdressed(unapproved_reply(
                request, f"not approved: {self.approver} did not answer within {waited}; "
                "the approval request expired. Send the command again to ask again."),
                request, approver=self.approver)
            del to_agent["Cc"]
            to_user = note(f"Expired: {request.command[:80]}",
                           f"Nobody answered within {waited}, so {request.agent}'s command "
                           f"\"{request.command}\" was not run; {request.agent} was told.",
                           to=self.approver, request=request)
            for mail in (to_agent, to_user):
                try:
                    await self._post(mail)
                except Exception:  # a refused note must not stop the timer
                    log.exception("%s: the expiry note for %s was not sent", self.robot,
                                  request.token)
        await asyncio.to_thread(self.book.settle, request, "expired")
