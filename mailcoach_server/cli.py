"""The ``mailcoach`` command line: ``serve``, ``shell-stub``, ``health``, else the console.

Only argument parsing lives here; everything else is imported when a
command runs, so ``mailcoach --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

__all__ = ["config_from_args", "main", "serve_parser", "setup_logging"]

SUBCOMMANDS = ("serve", "shell-stub", "health")


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailcoach serve",
        description="Run the mail server headless: SMTP and IMAP on loopback, agents and robots "
        "answering mail. Stop with Ctrl+C or SIGTERM.",
    )
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
    args = serve_parser().parse_args(argv)
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
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        return serve_main(argv[1:])
    if argv and argv[0] == "shell-stub":
        from .shell_stub import main as stub_main

        return stub_main(argv[1:])
    if argv and argv[0] == "health":
        from .health import main as health_main

        return health_main(argv[1:])
    from .console.cli import main as console_main

    return console_main(argv)


if __name__ == "__main__":
    sys.exit(main())
