"""The shell robot: the Subject is a command line, the body its stdin.

A message to the robot runs ``/bin/sh -c <Subject>`` in the robot's working
directory with the text/plain body on stdin. The reply's Subject is
``Exit Code: N`` and its body the output, as the original tool wrote it::

    --- stdout ---
    <first 50 lines>
    --- stdout: 900 lines skipped ---
    <last 50 lines>

The section keeps the original's name ``stdout`` (agents and old memories
know it) but holds stdout and stderr merged in the order they were written,
as a terminal shows them. Other conventions:

- exit 124 and a ``--- killed after N s (timeout) ---`` line after the time
  limit; the command's whole process group is killed, grandchildren too;
- exit 128+n when the shell died of signal n;
- background jobs (``sleep 30 &``) do not outlive the command: once the
  shell exits, output is read for a short grace and the group is killed;
- a Subject holding a line break or another control character (possible
  through an RFC 2047 encoded word) is refused, not run: the command that
  runs is always the one line a mail client and the log show;
- the child's environment comes from an allow list (``sandbox.py``);
- ``X-Attach: path`` headers attach files of the work directory to the
  reply (``attach.py``), and output longer than the cut is attached whole
  as ``stdout.txt`` (up to ``attach_max_bytes``);
- ``approval`` makes agents' commands wait for the user's yes, asked and
  answered by mail (``approvals.py``);
- ``sandbox: auto`` (the default) runs the command in bubblewrap when it is
  installed and works: no network (unless ``network: true``), read-only
  system, writable working directory only, uid 65534 without capabilities.
  Without a sandbox a server running as root refuses to start the robot
  unless ``allow_unsandboxed_root: true``.

``run_command`` is the core, shared with the HTTP shell stub. This module
does not send mail: the runtime addresses and threads the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import BaseHeader
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any, ClassVar, Final

from mailcoach_robots import Robot, RobotContext
from mailcoach_robots.approval_book import Request
from mailcoach_robots.approval_rules import ApprovalPolicy
from mailcoach_robots.approvals import Approvals
from mailcoach_robots.attach import Attachment, attach_paths, attach_to, read_attachments
from mailcoach_robots.output import HEAD_LINES, TAIL_LINES, OutputCollector
from mailcoach_robots.sandbox import Sandbox

from mailcoach_server.addresses import normalize_address
from mailcoach_server.errors import ConfigError

__all__ = [
    "CommandResult",
    "ShellRobot",
    "command_of",
    "command_problem",
    "error_reply",
    "format_reply",
    "kill_group",
    "refusal",
    "run_command",
    "stdin_of",
]

log = logging.getLogger(__name__)

#: exit code of a command killed at its time limit (as coreutils ``timeout``)
EXIT_TIMEOUT: Final = 124
#: exit code when the command could not be started at all
EXIT_NOT_STARTED: Final = 127
#: how long output is still read after the shell exits (background jobs may hold the pipe)
EXIT_GRACE: Final = 0.5
#: how often the shell's exit is checked while its output pipe stays open
_POLL: Final = 0.02
#: bound on each wait for a killed process to go away
_REAP_WAIT: Final = 5.0
#: largest attachment (and all of a reply's together): base64 of it fits smtp.max_message_size
ATTACH_MAX_BYTES: Final = 5 * 1024 * 1024
#: seconds an approval request waits for the user
APPROVAL_TIMEOUT: Final = 3600
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


def kill_group(pgid: int) -> None:
    # ESRCH: everyone in the group is gone already. EPERM: the group id was
    # reused by someone else's processes (only after our children are gone).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _feed_stdin(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    if stream is None:
        return
    # A command that never reads its stdin (or exits early) closes the pipe.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            stream.write(data)
            await stream.drain()
        stream.close()


async def _read_output(stream: asyncio.StreamReader | None, collector: OutputCollector) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        collector.feed(chunk)


async def _settle(task: asyncio.Task[None], wait_seconds: float) -> bool:
    """Wait up to ``wait_seconds`` for ``task``, then cancel it. True if it ended by itself."""
    if not task.done():
        await asyncio.wait({task}, timeout=wait_seconds)
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        return False
    if not task.cancelled():
        task.exception()  # consumed here: the reply is what matters, not a pipe error
    return True


async def _wait_exit(
    proc: asyncio.subprocess.Process, deadline: float, reader: asyncio.Task[None] | None = None
) -> bool:
    """Wait for the shell to exit; False at the deadline.

    ``proc.wait()`` cannot be used for this: asyncio wakes it only once the
    output pipe is closed too, which a background grandchild may never do.
    ``proc.returncode`` is set as soon as the child is reaped, so it is
    polled, in steps of ``_POLL`` or sooner when the output ends.
    """
    while proc.returncode is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if reader is None or reader.done():
            await asyncio.sleep(min(_POLL, remaining))
        else:
            await asyncio.wait({reader}, timeout=min(_POLL, remaining))
    return True


async def run_command(
    command: str,
    stdin: bytes,
    *,
    cwd: Path | str,
    # The command's own limit (exit 124 and a note), not a cancellation deadline.
    timeout: float,  # noqa: ASYNC109
    env: Mapping[str, str] | None,
    argv_prefix: Sequence[str] = (),
    shell: str = "/bin/sh",
    head_lines: int = HEAD_LINES,
    tail_lines: int = TAIL_LINES,
    process_groups: set[int] | None = None,
    keep_whole: int = 0,
) -> CommandResult:
    """Run ``shell -c command`` in its own session and collect its merged output.

    Args:
        command: the command line.
        stdin: bytes written to the command's stdin (concurrently with reading).
        cwd: working directory (must exist).
        timeout: seconds before the process group is killed (exit code 124).
        env: the child's environment (None: inherit, secrets and all).
        argv_prefix: a wrapper such as ``bwrap_argv(...)``.
        shell: the shell that interprets ``command``.
        head_lines, tail_lines: how output is cut.
        process_groups: a set the running group id is kept in, so that an
            owner can kill it from outside (``ShellRobot.aclose``).
        keep_whole: bytes of the whole output kept for when the text is cut.

    Raises:
        OSError: the shell (or the wrapper) could not be started.
    """
    started = time.monotonic()
    proc = await _start_shell(command, cwd=cwd, env=env, argv_prefix=argv_prefix, shell=shell)
    pgid = proc.pid
    if process_groups is not None:
        process_groups.add(pgid)
    collector = OutputCollector(head_lines, tail_lines, keep_whole=keep_whole)
    writer = asyncio.create_task(_feed_stdin(proc.stdin, stdin), name=f"shell-stdin-{pgid}")
    reader = asyncio.create_task(_read_output(proc.stdout, collector), name=f"shell-out-{pgid}")
    timed_out = False
    try:
        deadline = started + timeout
        timed_out = not await _wait_exit(proc, deadline, reader)
        if not timed_out and not reader.done():
            # The shell exited but a background job still holds the pipe.
            grace = min(EXIT_GRACE, max(deadline - time.monotonic(), 0.0))
            await asyncio.wait({reader}, timeout=grace)
    finally:
        # Always: kills the command at its deadline, and its background jobs after it.
        await _kill_and_reap(proc, reader, writer, process_groups)
    output_text = collector.finish()
    return CommandResult(
        exit_code=_exit_code(proc.returncode, timed_out=timed_out),
        output_text=output_text,
        timed_out=timed_out,
        seconds=time.monotonic() - started,
        whole_output=collector.whole if keep_whole and collector.cut else None,
        output_bytes=collector.total_bytes,
    )


async def _start_shell(
    command: str,
    *,
    cwd: Path | str,
    env: Mapping[str, str] | None,
    argv_prefix: Sequence[str],
    shell: str,
) -> asyncio.subprocess.Process:
    """``shell -c command`` with piped stdin, stdout+stderr merged, in its own session."""
    return await asyncio.create_subprocess_exec(
        *argv_prefix,
        shell,
        "-c",
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: killpg reaches grandchildren
        cwd=cwd,
        env=None if env is None else dict(env),
    )


async def _kill_and_reap(
    proc: asyncio.subprocess.Process,
    reader: asyncio.Task[None],
    writer: asyncio.Task[None],
    process_groups: set[int] | None,
) -> None:
    """Kill the command's process group, reap the shell and settle the pipe tasks."""
    pgid = proc.pid
    kill_group(pgid)
    if process_groups is not None:
        process_groups.discard(pgid)
    await _wait_exit(proc, time.monotonic() + _REAP_WAIT)
    # A killed group closes the pipe at once; only a process that left
    # the group (setsid) could keep it open past this bound.
    if not await _settle(reader, 1.0):
        transport = getattr(proc, "_transport", None)  # no public way to drop the pipe
        if transport is not None:
            transport.close()
    await _settle(writer, 0.0)


def _exit_code(returncode: int | None, *, timed_out: bool) -> int:
    """The shell convention: 124 for a timeout, 128+N for death by signal N."""
    if timed_out:
        return EXIT_TIMEOUT
    if returncode is None:
        return 128 + signal.SIGKILL
    if returncode < 0:
        return 128 - returncode
    return returncode


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


def _option(context: RobotContext, name: str, default: Any, check: Any, expected: str) -> Any:
    value = context.options.get(name, default)
    if not check(value):
        raise ConfigError(f"robots.{context.address}.{name}: expected {expected}, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_env(value: Any) -> bool:
    def is_name(name: Any) -> bool:
        return isinstance(name, str) and bool(name) and "=" not in name and "\0" not in name

    if isinstance(value, list):
        return all(is_name(name) for name in value)
    return isinstance(value, Mapping) and all(
        is_name(k) and (v is None or (isinstance(v, str | int | float) and "\0" not in str(v)))
        for k, v in value.items()
    )


class ShellRobot(Robot):
    """Runs the Subject as a shell command line and mails back exit code and output."""

    kind: ClassVar[str] = "shell"
    options: ClassVar[frozenset[str]] = frozenset(
        {
            "timeout",
            "workdir",
            "head_lines",
            "tail_lines",
            "sandbox",
            "shell",
            "network",
            "env",
            "allow_unsandboxed_root",
            "attach_max_bytes",
            "approval",
            "approver",
            "approval_timeout",
        }
    )

    def __init__(self, context: RobotContext) -> None:
        super().__init__(context)
        key = f"robots.{context.address}"
        self.timeout: float = _option(context, "timeout", 60, _is_number, "seconds > 0")
        workdir = _option(context, "workdir", "work", lambda v: isinstance(v, str) and v, "a path")
        self.workdir = (Path(context.data_dir) / workdir).resolve()
        data_dir = Path(context.data_dir).resolve()
        if self.workdir == data_dir or self.workdir in data_dir.parents:
            # It would show the login file, the trace and the index to every command.
            raise ConfigError(
                f"{key}.workdir: {self.workdir} holds the data directory; "
                "use a directory of its own (default: work)"
            )
        self.head_lines: int = _option(context, "head_lines", HEAD_LINES, _is_count, "a count")
        self.tail_lines: int = _option(context, "tail_lines", TAIL_LINES, _is_count, "a count")
        requested: str = _option(
            context,
            "sandbox",
            "auto",
            lambda v: v in ("auto", "none", "bwrap"),
            "auto, bwrap or none",
        )
        self.shell: str = _option(
            context, "shell", "/bin/sh", lambda v: isinstance(v, str) and v, "a shell's path"
        )
        # Without a sandbox the command has the server's network; the option
        # only means something for bwrap.
        network: bool = _option(
            context, "network", False, lambda v: isinstance(v, bool), "true or false"
        )
        allow_root: bool = _option(
            context, "allow_unsandboxed_root", False, lambda v: isinstance(v, bool), "true or false"
        )
        env = _option(
            context, "env", {}, _is_env, "a list of variable names, or a mapping of names to values"
        )
        # A list (or a null value) passes the server's variable on; a value sets it.
        if isinstance(env, list):
            env = dict.fromkeys(env)
        self.env_names: tuple[str, ...] = tuple(k for k, v in env.items() if v is None)
        self.env: dict[str, str] = {str(k): str(v) for k, v in env.items() if v is not None}
        self.sandbox = Sandbox.choose(
            requested,
            network=network,
            allow_unsandboxed_root=allow_root,
            key=f"{key}.sandbox",
            switch=f"{key}.allow_unsandboxed_root: true",
        )
        self._groups: set[int] = set()
        self.attach_max_bytes: int = _option(context, "attach_max_bytes", ATTACH_MAX_BYTES,
                                             _is_count, "a number of bytes")
        self.approvals = _approvals(context, self.workdir, self._run_approved)

    @property
    def summary(self) -> str:
        approval = ", approval" if self.approvals.policy.active else ""
        return f"{self.kind}, {self.sandbox.mode}{approval}"

    async def start(self) -> None:
        await self.approvals.start()

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
        why = self.approvals.needs_approval(message, command)
        if why is not None:
            return await self.approvals.hold(message, command, stdin, attach_paths(message), why)
        return await self.execute(command, stdin, attach_paths(message))

    async def _run_approved(self, request: Request) -> EmailMessage:
        return await self.execute(request.command, request.stdin.encode("utf-8"), request.attach)

    async def execute(self, command: str, stdin: bytes, attach: list[str]) -> EmailMessage:
        """Run ``command`` now; the reply with its output and the files asked for."""
        env = self.sandbox.environment(self.workdir, names=self.env_names, values=self.env)
        argv_prefix, process_env = self.sandbox.launch(self.workdir, env)
        log.info("%s runs %r (%s)", self.context.address, command, self.sandbox.mode)
        try:
            await asyncio.to_thread(self.sandbox.prepare, self.workdir)
            result = await run_command(
                command,
                stdin,
                cwd=self.workdir,
                timeout=self.timeout,
                env=process_env,
                argv_prefix=argv_prefix,
                shell=self.shell,
                head_lines=self.head_lines,
                tail_lines=self.tail_lines,
                process_groups=self._groups,
                keep_whole=self.attach_max_bytes,
            )
        except OSError as exc:
            return error_reply(
                EXIT_NOT_STARTED,
                f"--- error ---\ncould not start {self.shell} in {self.workdir}: {exc}\n",
            )
        return await self._with_files(result, attach)

    async def _with_files(self, result: CommandResult, attach: list[str]) -> EmailMessage:
        """``format_reply(result)`` with ``stdout.txt`` when cut and the X-Attach files."""
        files: list[Attachment] = []
        lines: list[str] = []
        if result.whole_output is not None:
            files.append(Attachment("stdout.txt", result.whole_output))
            kept, total = len(result.whole_output), result.output_bytes
            lines.append(f"--- stdout.txt: the whole output ({total} bytes) is attached ---"
                         if kept >= total else
                         f"--- stdout.txt: the first {kept} of {total} bytes of the output "
                         "are attached (attach_max_bytes) ---")
        if attach:
            more, notes = await asyncio.to_thread(
                read_attachments, self.workdir, attach, max_bytes=self.attach_max_bytes,
                used=sum(len(f.data) for f in files))
            files += more
            lines += notes
        reply = format_reply(result)
        if not lines:
            return reply
        reply = error_reply(result.exit_code, reply.get_content() + "\n".join(lines) + "\n")
        attach_to(reply, files)
        return reply

    async def aclose(self) -> None:
        await self.approvals.aclose()
        for pgid in list(self._groups):
            kill_group(pgid)


def _approvals(context: RobotContext, workdir: Path, run: Any) -> Approvals:
    """The ``approval``, ``approver`` and ``approval_timeout`` options, checked."""
    key = f"robots.{context.address}"
    policy = ApprovalPolicy.parse(context.options.get("approval", "never"), f"{key}.approval")
    approver = _option(context, "approver", context.user,
                       lambda v: v == "" or (isinstance(v, str) and normalize_address(v)),
                       "an address")
    timeout = _option(context, "approval_timeout", APPROVAL_TIMEOUT, _is_number, "seconds > 0")
    return Approvals(context, policy, approver=normalize_address(approver) or "",
                     timeout=timeout, workdir=workdir, run=run)
