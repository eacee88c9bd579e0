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

``run_command`` is the core, shared with the HTTP shell stub. The mail
format (``command_of``, ``stdin_of``, ``format_reply``, re-exported here)
is ``command_mail.py``, and the flow of one mail (approval, refusal,
``stdout.txt``), shared with the remote shell, ``command_robot.py``. This
module does not send mail: the runtime addresses and threads the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any, ClassVar, Final

from mailcoach_robots import RobotContext
from mailcoach_robots.attach import attach_paths, read_attachments
from mailcoach_robots.command_mail import (
    CommandResult,
    command_of,
    command_problem,
    error_reply,
    format_reply,
    refusal,
    stdin_of,
)
from mailcoach_robots.command_robot import (
    ATTACH_MAX_BYTES,
    COMMAND_OPTIONS,
    CommandRobot,
    approvals_from_options,
    is_count,
    is_number,
    option,
    reply_with_files,
    stdout_attachment,
)
from mailcoach_robots.output import HEAD_LINES, TAIL_LINES, OutputCollector
from mailcoach_robots.sandbox import Sandbox

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


def _is_env(value: Any) -> bool:
    def is_name(name: Any) -> bool:
        return isinstance(name, str) and bool(name) and "=" not in name and "\0" not in name

    if isinstance(value, list):
        return all(is_name(name) for name in value)
    return isinstance(value, Mapping) and all(
        is_name(k) and (v is None or (isinstance(v, str | int | float) and "\0" not in str(v)))
        for k, v in value.items()
    )


class ShellRobot(CommandRobot):
    """Runs the Subject as a shell command line and mails back exit code and output."""

    kind: ClassVar[str] = "shell"
    options: ClassVar[frozenset[str]] = COMMAND_OPTIONS | frozenset(
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
        }
    )

    def __init__(self, context: RobotContext) -> None:
        super().__init__(context)
        key = f"robots.{context.address}"
        self.timeout: float = option(context, "timeout", 60, is_number, "seconds > 0")
        workdir = option(context, "workdir", "work", lambda v: isinstance(v, str) and v, "a path")
        self.workdir = (Path(context.data_dir) / workdir).resolve()
        data_dir = Path(context.data_dir).resolve()
        if self.workdir == data_dir or self.workdir in data_dir.parents:
            # It would show the login file, the trace and the index to every command.
            raise ConfigError(
                f"{key}.workdir: {self.workdir} holds the data directory; "
                "use a directory of its own (default: work)"
            )
        self.head_lines: int = option(context, "head_lines", HEAD_LINES, is_count, "a count")
        self.tail_lines: int = option(context, "tail_lines", TAIL_LINES, is_count, "a count")
        requested: str = option(
            context,
            "sandbox",
            "auto",
            lambda v: v in ("auto", "none", "bwrap"),
            "auto, bwrap or none",
        )
        self.shell: str = option(
            context, "shell", "/bin/sh", lambda v: isinstance(v, str) and v, "a shell's path"
        )
        # Without a sandbox the command has the server's network; the option
        # only means something for bwrap.
        network: bool = option(
            context, "network", False, lambda v: isinstance(v, bool), "true or false"
        )
        allow_root: bool = option(
            context, "allow_unsandboxed_root", False, lambda v: isinstance(v, bool), "true or false"
        )
        env = option(
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
        self.attach_max_bytes: int = option(context, "attach_max_bytes", ATTACH_MAX_BYTES,
                                            is_count, "a number of bytes")
        self.approvals = approvals_from_options(context, workdir=self.workdir,
                                                run=self.run_approved)

    @property
    def summary(self) -> str:
        approval = ", approval" if self.approvals.policy.active else ""
        return f"{self.kind}, {self.sandbox.mode}{approval}"

    def attach_requested(self, message: Message) -> list[str]:
        return attach_paths(message)

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
        files, lines = stdout_attachment(result)
        if attach:
            more, notes = await asyncio.to_thread(
                read_attachments, self.workdir, attach, max_bytes=self.attach_max_bytes,
                used=sum(len(f.data) for f in files))
            files += more
            lines += notes
        return reply_with_files(result, files, lines)

    async def aclose(self) -> None:
        await super().aclose()
        for pgid in list(self._groups):
            kill_group(pgid)

