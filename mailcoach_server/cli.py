"""The ``mailcoach`` command line: ``serve``, ``worker``, ``shell-stub``, ``health``,
``memory``, else the console.

One argparse parser: the console's flags, with the subcommands as subparsers.
A subcommand counts only as the first word (``mailcoach serve ...``); with
none, ``mailcoach`` is the console, flag for flag. Only argument parsing
lives here; everything else is imported when a command runs, so
``mailcoach --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

__all__ = ["config_from_args", "main", "parser", "serve_parser", "setup_logging"]

SERVE_HELP = "run the mail server headless (SMTP and IMAP)"
SERVE_DESCRIPTION = ("Run the mail server headless: SMTP and IMAP on loopback, agents and "
                     "robots answering mail. Stop with Ctrl+C or SIGTERM.")
#: subcommands whose module parses its own arguments: name -> (module, help)
_DELEGATED = {
    "shell-stub": ("shell_stub", "run shell commands for the remote-shell robot over HTTP"),
    "health": ("health", "check that a running server answers (exit 0 healthy, 1 not)"),
    "memory": ("memory_cli", "agents' memories: list, history of edits, show, restore a "
               "version"),
    "worker": ("worker.run", "serve agents and robots from their mailboxes on an IMAP + SMTP "
               "server (needs mailcoach[worker])"),
}


def parser() -> argparse.ArgumentParser:
    """``mailcoach``: the console's flags, and the subcommands."""
    from .console.cli import console_parser

    top = console_parser()
    commands = top.add_subparsers(dest="command", metavar="COMMAND", title="subcommands",
                                  description="'mailcoach COMMAND --help' for its flags; "
                                  "with no COMMAND, the console",
                                  parser_class=argparse.ArgumentParser)
    _add_serve_arguments(commands.add_parser("serve", prog="mailcoach serve", help=SERVE_HELP,
                                             description=SERVE_DESCRIPTION))
    for name, (_, text) in _DELEGATED.items():
        # their own parser reads the rest of the line, --help included
        commands.add_parser(name, prog=f"mailcoach {name}", help=text, add_help=False)
    return top


def serve_parser() -> argparse.ArgumentParser:
    """``mailcoach serve`` alone (the container entrypoint parses its arguments with it)."""
    return _add_serve_arguments(argparse.ArgumentParser(prog="mailcoach serve",
                                                        description=SERVE_DESCRIPTION))


def _add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", metavar="FILE", default=os.environ.get("MAILCOACH_CONFIG"),
                        help="YAML config (default: $MAILCOACH_CONFIG, else the shipped one)")
    parser.add_argument("--data-dir", metavar="DIR", help="where mail is kept "
                        "(default ./mailcoach-data)")
    parser.add_argument("--domain", help="the local mail domain (default localdomain)")
    parser.add_argument("--host", help="listen address for SMTP and IMAP (default 127.0.0.1)")
    parser.add_argument("--smtp-port", type=int, metavar="N", help="default 2525; 0 = any free")
    parser.add_argument("--imap-port", type=int, metavar="N", help="default 1143; 0 = any free")
    parser.add_argument("--model", metavar="SPEC",
                        help="default model, provider/model[@api_base]")
    parser.add_argument("--budget", type=float, metavar="USD", help="spending cap for all agents")
    parser.add_argument("--budget-tokens", type=int, metavar="N",
                        help="cap on input + output tokens for all agents")
    parser.add_argument("--no-auth", action="store_true",
                        help="accept SMTP without AUTH (only sensible on a private network)")
    parser.add_argument("--queue", metavar="MBOX", help="submit the messages of an mbox file "
                        "once (remembered across restarts), then keep serving")
    parser.add_argument("--debug", action="store_true", help="log everything")
    parser.add_argument("--print-config", action="store_true",
                        help="print the shipped default config (a commented starting point)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The config the ``serve`` flags describe (the container entrypoint uses it too)."""
    from .config import load_config

    overrides = {
        "data_dir": args.data_dir,
        "domain": args.domain,
        "smtp.host": args.host,
        "imap.host": args.host,
        "smtp.port": args.smtp_port,
        "imap.port": args.imap_port,
        "models.default": args.model,
        "budget": args.budget,
        "budget_tokens": args.budget_tokens,
        "smtp.auth_required": False if args.no_auth else None,
    }
    return load_config(args.config, **overrides)


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        for noisy in ("mail.log", "LiteLLM", "litellm", "httpx", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def serve_main(argv: list[str]) -> int:
    return serve(serve_parser().parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """``mailcoach serve`` with parsed flags."""
    if args.print_config:
        from .config import default_config_text

        print(default_config_text(), end="")
        return 0
    setup_logging(args.debug)
    from .errors import MailcoachError

    try:
        config = config_from_args(args)
        from .app import serve

        return serve(config, queue=Path(args.queue) if args.queue else None)
    except MailcoachError as exc:
        print(f"mailcoach: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"mailcoach: {exc.strerror or exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = parser()
    args, unknown = top.parse_known_args(argv)
    if args.command is not None and argv[0] != args.command:
        # e.g. `mailcoach -c serve`: a console flag, then a word; as before, not a command
        top.error(f"unrecognized arguments: {args.command}")
    if args.command in _DELEGATED:  # the rest of the line is theirs, untouched
        module = importlib.import_module(f".{_DELEGATED[args.command][0]}", __package__)
        return int(module.main(argv[1:]))
    if args.command == "serve":
        if unknown:
            serve_parser().error(f"unrecognized arguments: {' '.join(unknown)}")
        return serve(args)
    if unknown:
        top.error(f"unrecognized arguments: {' '.join(unknown)}")
    from .console.cli import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
