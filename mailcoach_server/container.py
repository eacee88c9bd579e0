"""The Docker image's entrypoint: ``mailcoach serve`` for a container, AUTH kept on.

Inside a container the server has to listen on all interfaces (the port
publishing decides who can reach it), so the loopback-only default that
makes a plain start safe does not hold there. This entrypoint therefore
refuses to start with SMTP AUTH off (``--no-auth`` or
``smtp.auth_required: false``) unless ``MAILCOACH_ALLOW_NO_AUTH=1`` says so
explicitly: mail to the shell robot runs commands.

Environment (the Dockerfile sets the first two):

    MAILCOACH_DATA_DIR       data directory, default /data (the volume)
    MAILCOACH_HOST           listen address, default 0.0.0.0
    MAILCOACH_CONFIG         optional YAML config (mount it read-only)
    MAILCOACH_ALLOW_NO_AUTH  "1" to allow AUTH off
    OPENAI_API_KEY, ...      provider keys, read by litellm

Arguments are those of ``mailcoach serve`` (``--queue FILE``, ``--budget
USD``, ``--model``, ``--debug``, ...); flags given win over the
environment. ``mailcoach health`` (the image's HEALTHCHECK) checks the
ports the server bound, from ``/data/server.json``, however they were chosen.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Final

__all__ = ["main", "serve_arguments"]

DEFAULT_DATA_DIR: Final = "/data"
DEFAULT_HOST: Final = "0.0.0.0"
ALLOW_NO_AUTH: Final = "MAILCOACH_ALLOW_NO_AUTH"
_LOOPBACK: Final = ("127.0.0.1", "::1", "localhost")


def serve_arguments(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """The ``mailcoach serve`` arguments this entrypoint runs with."""
    args = ["--data-dir", environ.get("MAILCOACH_DATA_DIR") or DEFAULT_DATA_DIR,
            "--host", environ.get("MAILCOACH_HOST") or DEFAULT_HOST]
    if config := environ.get("MAILCOACH_CONFIG"):
        args += ["--config", config]
    return args + argv  # argparse: a later flag overrides an earlier one


def main(argv: list[str] | None = None) -> int:
    from .cli import config_from_args, serve_parser, setup_logging
    from .errors import MailcoachError

    argv = sys.argv[1:] if argv is None else argv
    args = serve_parser().parse_args(serve_arguments(argv, os.environ))
    setup_logging(args.debug)
    try:
        config = config_from_args(args)
    except MailcoachError as exc:
        print(f"mailcoach: {exc}", file=sys.stderr)
        return 2
    if not config.smtp.auth_required and os.environ.get(ALLOW_NO_AUTH) != "1":
        print(f"mailcoach: refusing to start with SMTP AUTH off in a container: the server "
              f"listens on {config.smtp.host}, and mail to the shell robot runs commands. "
              f"Set {ALLOW_NO_AUTH}=1 to start anyway.", file=sys.stderr)
        return 2
    smtp = config.smtp
    if smtp.host not in _LOOPBACK:
        # Connections from the published port arrive from the container network, not
        # loopback, and there is no TLS here: let AUTH PLAIN/LOGIN through. Publish the
        # ports on the host's loopback only (compose.yaml does).
        config = dataclasses.replace(config, smtp=dataclasses.replace(
            smtp, allow_plaintext_auth=True))
    if config.imap.host not in _LOOPBACK:  # the same for IMAP LOGIN
        config = dataclasses.replace(config, imap=dataclasses.replace(
            config.imap, allow_plaintext_auth=True))
    from .app import serve

    try:
        return serve(config, queue=Path(args.queue) if args.queue else None)
    except MailcoachError as exc:
        print(f"mailcoach: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mailcoach: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
