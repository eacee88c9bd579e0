"""``mailcoach [-m memory] [-t trace] [-u user] [--debug]``: the original tool's command line.

    mailcoach                                  chat with swe1@localdomain
    mailcoach -q queue.mbox [--budget X] [-c]  run a queue file, then (with -c) chat
    mailcoach -m queue.mbox --auto --budget X  a model plays the user until the budget
                                               (or --budget-tokens N)

Everything is checked before the trace directory is created, so a mistake
leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from .session import Session

__all__ = ["console_parser", "main", "run"]

DESCRIPTION = "Chat with AI agents by mail, run queue files, or let a model play the user."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        self.exit(2, f"mailcoach: {message} (see mailcoach --help)\n")


def console_parser() -> argparse.ArgumentParser:
    """The console's flags; ``mailcoach_server.cli`` adds the subcommands to it."""
    parser = _Parser(prog="mailcoach", description=DESCRIPTION)
    parser.add_argument("-m", "--memory", metavar="PATH",
                        help="history to start from: an mbox file, or a trace directory of "
                        "<address>.mbox files (a trace of ours is continued in place)")
    parser.add_argument("-t", "--trace", metavar="DIR",
                        help="where the trace goes (default ./mailcoach.YYYYMMDDHHMMSS)")
    parser.add_argument("-u", "--user_address", "--user", dest="user", metavar="ADDRESS",
                        default=None, help="your address (default user@localdomain)")
    parser.add_argument("-q", "--queue", metavar="MBOX",
                        help="messages to process in order, without the chat")
    parser.add_argument("-c", "--chat", action="store_true", help="chat after the queue")
    parser.add_argument("--budget", type=float, metavar="USD",
                        help="no model call starts once the total cost reaches this")
    parser.add_argument("--budget-tokens", type=int, metavar="N",
                        help="no model call starts once input + output tokens reach this")
    parser.add_argument("--auto", action="store_true",
                        help="auto pilot: a model plays the user too (needs --budget or "
                        "--budget-tokens)")
    parser.add_argument("--debug", action="store_true",
                        help="show each model call before it happens and wait for Enter")
    parser.add_argument("--serve", action="store_true",
                        help="also listen on SMTP and IMAP, so mail clients can join")
    parser.add_argument("--smtp-port", type=int, metavar="N", help="with --serve (default 2525)")
    parser.add_argument("--imap-port", type=int, metavar="N", help="with --serve (default 1143)")
    parser.add_argument("--config", metavar="FILE", help="YAML config, as for 'serve'")
    parser.add_argument("--model", metavar="SPEC", help="default model, provider/model[@api_base]")
    return parser


def shipped_memory_dir() -> Path:
    return Path(str(resources.files("mailcoach_server.defaults").joinpath("memory")))


def main(argv: list[str] | None = None) -> int:
    return run(console_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The console with parsed flags: checks them, then chats or runs the queue."""
    if args.auto and args.budget is None and args.budget_tokens is None:
        print("mailcoach: --auto needs --budget (e.g. --budget 0.05) or --budget-tokens: a "
              "model playing the user never stops by itself", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..errors import MailcoachError

    try:
        return _run(args)
    except MailcoachError as exc:
        print(f"mailcoach: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mailcoach: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1


@dataclass(slots=True)
class _Inputs:
    """What the flags name, read and checked before anything is written."""

    memory: Path | None
    history: list[bytes]  # messages of an mbox memory
    party_files: dict[str, Path]  # <address>.mbox files of a memory directory
    in_place: bool  # the memory is a trace of ours, continued where it is
    queue: list[bytes]
    trace: Path


def _run(args: argparse.Namespace) -> int:
    from ..config import load_config

    inputs = _checked_inputs(args)
    overrides = {"data_dir": str(inputs.trace), "user": args.user, "budget": args.budget,
                 "budget_tokens": args.budget_tokens,
                 "models.default": args.model, "smtp.port": args.smtp_port,
                 "imap.port": args.imap_port}
    config = load_config(args.config, **overrides)

    from .session import Session

    out = sys.stdout
    session = Session(config, out=out, serve=args.serve, debug=args.debug, auto=args.auto,
                      shipped_memory=inputs.memory is None).open()
    try:
        _load_and_announce(session, inputs, args)
        return _drive(session, inputs, args)
    finally:
        session.close()
        print(f"trace saved in {inputs.trace}; continue with: mailcoach -m {inputs.trace}",
              file=out)


def _checked_inputs(args: argparse.Namespace) -> _Inputs:
    """Step 1: check every input before anything is written."""
    from .inputs import ConsoleError, check_queue, memory_files, read_mbox

    memory = Path(args.memory) if args.memory else None
    history: list[bytes] = []
    party_files: dict[str, Path] = {}
    in_place = False
    if memory is not None:
        if memory.is_dir():
            in_place = (memory / "index.sqlite").exists() and args.trace is None
            if not in_place:
                party_files = memory_files(memory)
        elif memory.exists():
            history = read_mbox(memory, "memory")
        else:
            raise ConsoleError(f"memory {memory}: no such file or directory")
    queue = check_queue(Path(args.queue)) if args.queue else []
    if args.auto and not queue and not history and not in_place and not party_files:
        raise ConsoleError("--auto needs a task: give it with -q FILE or -m FILE")
    trace = Path(args.trace) if args.trace else (
        memory if in_place and memory is not None
        else Path(f"./mailcoach.{datetime.datetime.now():%Y%m%d%H%M%S}"))
    if trace.exists() and not trace.is_dir():
        raise ConsoleError(f"trace {trace} exists and is not a directory")
    return _Inputs(memory, history, party_files, in_place, queue, trace)


def _load_and_announce(session: Session, inputs: _Inputs, args: argparse.Namespace) -> None:
    """Load the memory into the session and say what runs where."""
    out, config = session.out, session.config
    if inputs.memory is None:
        print(f"memory: {shipped_memory_dir()} (default)", file=out)
    elif inputs.in_place:
        print(f"memory: {inputs.memory} (continuing this trace)", file=out)
    else:
        print(f"memory: {inputs.memory}", file=out)
    if inputs.party_files:
        session.load_party_files(inputs.party_files)
    if inputs.history:
        history = inputs.history
        session.load_history(history[:-1] if args.auto and not inputs.queue else history)
    print(f"trace: {inputs.trace.resolve()}", file=out)
    from ..app import price_note

    note = price_note(config)
    if note:
        print(note.strip(), file=out)
    if session.server and session.server.smtp_address:
        host, port = session.server.smtp_address
        imap = session.server.imap_address
        print(f"serving: SMTP {host}:{port}"
              + (f", IMAP {imap[0]}:{imap[1]}" if imap else "")
              + f" (login {config.user}, password in {session.server.credentials.path})",
              file=out)
    out.flush()


def _drive(session: Session, inputs: _Inputs, args: argparse.Namespace) -> int:
    """Run the auto pilot or the queue, then chat unless the run ends there."""
    history, queue = inputs.history, inputs.queue
    if args.auto and history and not queue:
        session.submit(history[-1])  # the task that starts the auto pilot
        return _finish(session, session.wait())
    if queue:
        from ..queuefile import message_id_of

        for raw in queue:
            if session.engine.store.find_by_message_id(message_id_of(raw)) is None:
                session.submit(raw)
            blocked = session.wait()
            if blocked:
                return _finish(session, blocked)
        _finish(session, [])
        if not args.chat:
            return 0
    elif args.auto:
        return _finish(session, session.wait())
    else:
        session.wait()  # work left over from a continued trace
    from .chat import chat

    chat(session, session.out)
    return 0


def _finish(session: Session, blocked: list[str]) -> int:
    spent = session.spent()
    if blocked:
        tokens = session.config.budget_tokens
        of = "; ".join(
            ([f"${spent:.6f} spent of ${session.config.budget}"]
             if session.config.budget is not None else [f"${spent:.6f} spent"])
            + ([f"{session.engine.tokens.spent()} tokens of {tokens}"]
               if tokens is not None else []))
        print(f"budget reached: {of}; mail waiting for {', '.join(blocked)}. The run ends.",
              file=session.out)
    else:
        print(f"done: ${spent:.6f} spent", file=session.out)
    return 0
