"""The shell robots' mail: a command and its stdin out of a message, ``Exit Code: N`` back.

Shared by the local shell robot (``shell.py``), the remote one
(``remote_shell.py``) and what both have in common (``command_robot.py``):
the command is the Subject, unfolded; its stdin the text/plain body; a
Subject that is not one clean line is refused with ``Exit Code: 2``; the
reply's Subject is ``Exit Code: N`` and its body the output section. This
module runs nothing and sends nothing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email.headerregistry import BaseHeader
from email.message import EmailMessage, Message
from typing import Final

__all__ = [
    "CommandResult",
    "command_of",
    "command_problem",
    "error_reply",
    "format_reply",
    "refusal",
    "stdin_of",
]

_FOLDED: Final = re.compile(r"\r?\n(?=[ \t])")
# Characters that make a command line look different from what the shell
# runs: bidi overrides and isolates (CVE-2021-42574, "Trojan Source").
_CONTROL_NAMES: Final = {"\n": "a line break", "\r": "a carriage return"}
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended.

    Attributes:
        exit_code: the shell's exit status; 124 after a timeout, 128+n after signal n.
        output_text: stdout and stderr merged, cut to head and tail ("" if none).
        timed_out: the time limit was reached and the process group killed.
        seconds: wall-clock time from start to the end of reading.
        whole_output: the output as written (its first ``keep_whole`` bytes)
            when ``output_text`` is cut; None when nothing was cut or kept.
        output_bytes: bytes of output in all.
    """

    exit_code: int
    output_text: str
    timed_out: bool
    seconds: float
    whole_output: bytes | None = None
    output_bytes: int = 0




def _seconds_text(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"


def format_reply(result: CommandResult) -> EmailMessage:
    """The reply to a command: ``Exit Code: N`` and the output section."""
    if result.output_text:
        body = "--- stdout ---\n" + result.output_text
    else:
        body = "--- no output ---\n"
    if result.timed_out:
        body += f"--- killed after {_seconds_text(result.seconds)} s (timeout) ---\n"
    return error_reply(result.exit_code, body)


def error_reply(exit_code: int, body: str) -> EmailMessage:
    """A reply with Subject ``Exit Code: N`` and ``body``; From/To are the runtime's."""
    reply = EmailMessage()
    reply["Subject"] = f"Exit Code: {exit_code}"
    reply.set_content(body)
    return reply


def command_of(message: Message) -> str:
    """The command line: the Subject, unfolded (RFC 5322 §2.2.3) and stripped."""
    value = message.get("Subject")
    if value is None:
        return ""
    if not isinstance(value, BaseHeader):  # a compat32 message: decode RFC 2047 words here
        from email.header import decode_header, make_header

        value = str(make_header(decode_header(str(value))))
    return _FOLDED.sub("", str(value)).strip()


def command_problem(command: str) -> str | None:
    """Why ``command`` is not run as it stands (None: it is fine).

    A Subject is one line, but an RFC 2047 encoded word can carry a line
    break (``=?utf-8?q?echo_a=0Aecho_b?=``): the shell would run two
    commands where a mail client and the log show one. Control characters
    (a tab excepted) and bidi overrides are refused for the same reason.
    """
    if not command:
        return (
            "Nothing to run: put the command in the Subject (the body, if any, becomes its stdin)."
        )
    for char in command:
        if char == "\t":
            continue
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
            name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "a control character")
            return (
                f"Not run: the Subject holds U+{ord(char):04X} ({name}), so the command "
                f"would not be the line you see. The Subject as decoded: {command!r}\n"
                "Put one command line in the Subject; for a script, send the Subject "
                "'sh' with the script as the body."
            )
    return None


def refusal(command: str) -> EmailMessage | None:
    """The ``Exit Code: 2`` reply for a command that is not run, or None to run it."""
    problem = command_problem(command)
    return None if problem is None else error_reply(2, problem + "\n")


def stdin_of(message: Message) -> bytes:
    """The command's stdin: the text/plain body as UTF-8 with LF line ends (b"" if none)."""
    part: Message | None
    if isinstance(message, EmailMessage):
        part = message.get_body(preferencelist=("plain",))
    else:
        part = next(
            (
                p
                for p in message.walk()
                if p.get_content_type() == "text/plain"
                and p.get_content_disposition() != "attachment"
            ),
            None,
        )
    if part is None:
        return b""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return b""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = payload.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").encode("utf-8")
