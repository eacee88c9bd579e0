"""The mail of approval by mail: the request, reading the answer, the notes.

The request goes to the approver, Subject ``Approve: <command> [approval
TOKEN]``, and says who asked, the command, its stdin and how to answer.
An answer is the first line of the text that is neither quoted (``>``),
nor a client's "On ... wrote:" line: its first word ``yes`` (``y``, ``ok``,
``approve``) or ``no`` (``n``, ``deny``, ``refuse``, ``reject``); a reason
may follow on the same line or the next.

What the agent gets is the reply to its command, threaded to it: the
output (Subject ``Exit Code: N``), or ``Exit Code: 126`` with ``refused by
the user: <reason>`` or an expiry note. 126 is the shell's "found but
could not be executed" (as for a permission denied), so an agent reads it
as a command that did not run, in the protocol it already knows, and it
is not an error note: the agent acts on it and sees it in its memory.
No I/O here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Final, Literal

from mailcoach_robots.approval_book import Request

__all__ = ["EXIT_NOT_APPROVED", "Answer", "answer_of", "note", "readdressed", "request_mail",
           "settled_text", "span", "unapproved_reply"]

#: exit code of a command the user refused, or that expired unanswered (sh: cannot execute)
EXIT_NOT_APPROVED: Final = 126
#: characters of the command in the request's Subject (the body has it whole)
_SUBJECT_COMMAND: Final = 120
#: characters of stdin shown in the request
_SHOWN_STDIN: Final = 4000
_YES: Final = frozenset({"yes", "y", "ok", "okay", "approve", "approved"})
_NO: Final = frozenset({"no", "n", "deny", "denied", "refuse", "refused", "reject"})
_WORD: Final = re.compile(r"^\s*([A-Za-z]+)\b[\s.,;:!\-\u2013\u2014]*(.*)$")
_ATTRIBUTION: Final = re.compile(r"wrote:\s*$|^-{2,}\s*Original Message", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Literal["yes", "no"]
    reason: str = ""


def _when(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp).astimezone())


def span(seconds: float) -> str:
    """``1 h``, ``30 min``, ``45 s``: how long a request waits."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"


def _answer_lines(text: str) -> list[str]:
    """The lines that may hold an answer: not quoted, not an attribution, up to a signature."""
    lines = []
    for line in text.splitlines():
        if line.rstrip() == "--":
            break
        if line.lstrip().startswith(">") or _ATTRIBUTION.search(line):
            lines.append("")  # a quote stands between the answer and its reason
            continue
        lines.append(line.strip())
    return lines


def answer_of(text: str) -> Answer | None:
    """The verdict a reply's text gives, or None when it gives none."""
    lines = _answer_lines(text)
    first = next((i for i, line in enumerate(lines) if line), None)
    if first is None:
        return None
    match = _WORD.match(lines[first])
    if match is None:
        return None
    word, rest = match.group(1).lower(), match.group(2).strip()
    if word in _YES:
        return Answer("yes")
    if word not in _NO:
        return None
    if not rest and first + 1 < len(lines):
        rest = lines[first + 1]
    return Answer("no", rest[:500])


def request_mail(request: Request, *, robot: str, approver: str, why: str,
                 console_hint: bool = True) -> EmailMessage:
    """The ``Approve:`` mail to the approver (the runtime threads it to the command)."""
    command = request.command
    shown = command if len(command) <= _SUBJECT_COMMAND else command[:_SUBJECT_COMMAND] + "..."
    mail = EmailMessage()
    mail["To"] = approver
    mail["Subject"] = f"Approve: {shown} [approval {request.token}]"
    mail["Message-ID"] = request.request_id
    mail["X-Mailcoach-Approval"] = request.token
    stdin = request.stdin
    if not stdin:
        stdin_text = "Standard input: none.\n"
    else:
        cut = stdin[:_SHOWN_STDIN]
        more = len(stdin) - len(cut)
        stdin_text = (f"Standard input ({len(stdin.encode())} bytes):\n--- stdin ---\n{cut}"
                      + ("" if cut.endswith("\n") else "\n")
                      + (f"--- stdin: {more} more characters not shown ---\n" if more else "")
                      + "--- end of stdin ---\n")
    attach = "".join(f"    {path}\n" for path in request.attach)
    expires = _when(request.expires)
    waits = span(request.expires - request.created)
    body = (
        f"{request.agent} asks {robot} to run this command ({why}):\n\n"
        f"    {command}\n\n{stdin_text}"
        + (f"\nand to attach these files to the reply:\n{attach}" if attach else "")
        + "\nTo run it, reply \"yes\". To refuse it, reply \"no\", with a reason on the same "
        "line or the next: the agent is told \"refused by the user: <reason>\".\n"
        f"Any mail client works: answer this mail (your reply goes to {robot}), or send "
        f"{robot} a mail with [approval {request.token}] in the Subject.\n"
        + (f"In the console: open the menu (an empty line), pick {robot}, and type yes or no.\n"
           if console_hint else "")
        + f"\nWithout an answer the request expires at {expires} ({waits} after it was "
        "asked), and the command is not run.\n"
    )
    mail.set_content(body)
    return mail


def readdressed(reply: EmailMessage, request: Request, *, approver: str) -> EmailMessage:
    """``reply`` as the answer to the agent's command: To the agent, Cc the approver."""
    for name in ("To", "Cc", "In-Reply-To", "References"):
        del reply[name]
    reply["To"] = request.agent
    if approver != request.agent:
        reply["Cc"] = approver
    if request.command_id:
        reply["In-Reply-To"] = request.command_id
        reply["References"] = " ".join([*request.command_refs, request.command_id])
    return reply


def unapproved_reply(request: Request, text: str) -> EmailMessage:
    """``Exit Code: 126`` with ``text``: the command was not run."""
    reply = EmailMessage()
    reply["Subject"] = f"Exit Code: {EXIT_NOT_APPROVED}"
    reply.set_content(f"--- not run ---\n{text}\n")
    return reply


def note(subject: str, text: str, *, to: str | None = None,
         request: Request | None = None) -> EmailMessage:
    """A short note; threaded to the request mail when ``request`` is given."""
    mail = EmailMessage()
    if to:
        mail["To"] = to
    mail["Subject"] = subject
    if request is not None:
        mail["In-Reply-To"] = request.request_id
        mail["References"] = request.request_id
    mail.set_content(text.rstrip("\n") + "\n")
    return mail


def settled_text(request: Request) -> str:
    """How a decided request is described: "approved at ... by ..." and the like."""
    when = _when(request.settled or time.time())
    if request.state == "approved":
        return f"already approved at {when} by {request.by}; it ran once and is not run again"
    if request.state == "refused":
        return f"already refused at {when} by {request.by}" + (
            f" ({request.reason})" if request.reason else "")
    return f"it expired unanswered at {when}; the agent was told it did not run"
