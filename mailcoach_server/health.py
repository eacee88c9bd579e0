"""``mailcoach health``: exit 0 when the server answers SMTP (and IMAP), else 1.

For container health checks: connects, reads the greeting, says goodbye.
"""

from __future__ import annotations

import argparse
import socket
import sys

__all__ = ["main", "probe"]


def probe(host: str, port: int, greeting: bytes, timeout: float) -> str | None:
    """None when ``host:port`` greets with ``greeting``, else what went wrong."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            line = sock.makefile("rb").readline(1024)
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
    if not line.startswith(greeting):
        return f"{host}:{port}: unexpected greeting {line[:60]!r}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailcoach health",
                                     description="Check that a mailcoach server answers.")
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--host")
    parser.add_argument("--smtp-port", type=int)
    parser.add_argument("--imap-port", type=int)
    parser.add_argument("--no-imap", action="store_true", help="check SMTP only")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    from .config import load_config
    from .errors import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"mailcoach health: {exc}", file=sys.stderr)
        return 2
    checks = [(args.host or config.smtp.host, args.smtp_port or config.smtp.port, b"220 ")]
    if not args.no_imap:
        checks.append((args.host or config.imap.host, args.imap_port or config.imap.port,
                       b"* OK"))
    problems = [p for host, port, hello in checks
                if (p := probe(host, port, hello, args.timeout)) is not None]
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if not problems:
        print("healthy")
    return 1 if problems else 0
