"""What the local and the remote shell robot share: one command mail in, one reply out.

``CommandRobot`` is the flow of a message to a shell robot, wherever the
command runs: an answer to an approval request is acted on
(``approvals.py``); a Subject that is not one clean line is refused
(``command_mail.refusal``); an agent's command that needs approval is held
for the approver; anything else runs now, through the subclass's
``execute``. It also reads the options both robots take (``approval``,
``approver``, ``approval_timeout``, ``attach_max_bytes``) and turns a cut
output kept whole into the ``stdout.txt`` attachment.

Where a command runs (a local process group, an HTTP stub) and which
files it can attach are the subclass's business, not this module's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any, ClassVar, Final

from mailcoach_robots import Robot, RobotContext
from mailcoach_robots.approval_book import Request
from mailcoach_robots.approval_rules import ApprovalPolicy
from mailcoach_robots.approvals import Approvals, Run
from mailcoach_robots.attach import Attachment, attach_to
from mailcoach_robots.command_mail import (
    CommandResult,
    command_of,
    error_reply,
    format_reply,
    refusal,
    stdin_of,
)

from mailcoach_server.addresses import normalize_address
from mailcoach_server.errors import ConfigError

__all__ = [
    "APPROVAL_TIMEOUT",
    "ATTACH_MAX_BYTES",
    "COMMAND_OPTIONS",
    "CommandRobot",
    "approvals_from_options",
    "is_count",
    "is_number",
    "option",
    "reply_with_files",
    "stdout_attachment",
]

log = logging.getLogger(__name__)

#: largest attachment (and all of a reply's together): base64 of it fits smtp.max_message_size
ATTACH_MAX_BYTES: Final = 5 * 1024 * 1024
#: seconds an approval request waits for the user
APPROVAL_TIMEOUT: Final = 3600
#: the options every command robot takes, beside its own
COMMAND_OPTIONS: Final = frozenset(
    {"attach_max_bytes", "approval", "approver", "approval_timeout"})


def option(context: RobotContext, name: str, default: Any, check: Any, expected: str) -> Any:
    """The robot's option ``name`` (or ``default``); a ConfigError naming the key if bad."""
    value = context.options.get(name, default)
    if not check(value):
        raise ConfigError(f"robots.{context.address}.{name}: expected {expected}, got {value!r}")
    return value


def is_number(value: Any) -> bool:
    """A positive int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def is_count(value: Any) -> bool:
    """A non-negative int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def approvals_from_options(context: RobotContext, *, workdir: Path | None,
                           run: Run) -> Approvals:
    """The ``approval``, ``approver`` and ``approval_timeout`` options, checked.

    Args:
        workdir: the local directory commands can write (None: they run elsewhere);
            the approval state must not lie inside it.
        run: runs an approved request's command.
    """
    key = f"robots.{context.address}"
    policy = ApprovalPolicy.parse(context.options.get("approval", "never"), f"{key}.approval")
    approver = option(context, "approver", context.user,
                      lambda v: v == "" or (isinstance(v, str) and normalize_address(v)),
                      "an address")
    timeout = option(context, "approval_timeout", APPROVAL_TIMEOUT, is_number, "seconds > 0")
    return Approvals(context, policy, approver=normalize_address(approver) or "",
                     timeout=timeout, workdir=workdir, run=run)


def stdout_attachment(result: CommandResult) -> tuple[list[Attachment], list[str]]:
    """``stdout.txt`` and its line for the reply, when the output was cut and kept whole."""
    if result.whole_output is None:
        return [], []
    kept, total = len(result.whole_output), result.output_bytes
    line = (f"--- stdout.txt: the whole output ({total} bytes) is attached ---"
            if kept >= total else
            f"--- stdout.txt: the first {kept} of {total} bytes of the output "
            "are attached (attach_max_bytes) ---")
    return [Attachment("stdout.txt", result.whole_output)], [line]


def reply_with_files(result: CommandResult, files: Sequence[Attachment],
                     lines: Sequence[str]) -> EmailMessage:
    """``format_reply(result)``, with ``lines`` after the output and ``files`` attached."""
    reply = format_reply(result)
    if not lines:
        return reply
    reply = error_reply(result.exit_code, reply.get_content() + "\n".join(lines) + "\n")
    attach_to(reply, files)
    return reply


class CommandRobot(Robot):
    """A robot that runs the Subject as a command; subclasses implement ``execute``.

    A subclass sets ``approvals`` (``approvals_from_options``, with
    ``run_approved`` as its ``run``) and ``attach_max_bytes`` in its
    ``__init__``.
    """

    options: ClassVar[frozenset[str]] = COMMAND_OPTIONS
    approvals: Approvals
    attach_max_bytes: int

    def attach_requested(self, message: Message) -> list[str]:
        """The files a command mail asks for (none here: a subclass that can read them says)."""
        return []

    async def execute(self, command: str, stdin: bytes, attach: list[str]) -> EmailMessage:
        """Run ``command`` now; the reply with its output (Subject ``Exit Code: N``)."""
        raise NotImplementedError

    async def start(self) -> None:
        await self.approvals.start()

    async def aclose(self) -> None:
        await self.approvals.aclose()

    async def handle(self, message: EmailMessage) -> EmailMessage:
        command = command_of(message)
        stdin = stdin_of(message)
        text = stdin.decode("utf-8")
        answered = self.approvals.is_answer(message) or self.approvals.console_answer(
            message, command, text)
        if isinstance(answered, EmailMessage):
            return answered
        if answered is not None:
            return await self.approvals.answer(answered, message, text)
        refused = refusal(command)
        if refused is not None:
            log.warning("%s: not run: %r", self.context.address, command)
            return refused
        attach = self.attach_requested(message)
        why = self.approvals.needs_approval(message, command)
        if why is not None:
            return await self.approvals.hold(message, command, stdin, attach, why)
        return await self.execute(command, stdin, attach)

    async def run_approved(self, request: Request) -> EmailMessage:
        """Run a request the approver said yes to, as it was asked."""
        return await self.execute(request.command, request.stdin.encode("utf-8"), request.attach)
