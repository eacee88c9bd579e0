"""``mailcoach health``: exit 0 when the server answers SMTP (and IMAP), else 1.

For container health checks and scripts. It speaks a little of each
protocol rather than only opening a port: SMTP greeting, ``NOOP`` answered
250, ``QUIT``; IMAP greeting, ``CAPABILITY`` listing IMAP4rev1, ``LOGOUT``.
Neither needs a login.

Which services are checked: SMTP always; IMAP when this installation has an
IMAP server (the same test ``mailcoach serve`` makes before it starts one),
so a healthy server is never reported sick for a service it does not offer,
and a server that should offer IMAP but does not answer is. ``--no-imap``
skips IMAP. Ports and host come from the config (``--config`` or
``$MAILCOACH_CONFIG``), with ``0.0.0.0``/``::`` read as this machine's
loopback. Exit codes are 0 and 1 only (Docker reserves 2).
"""

from __future__ import annotations

import argparse
import imaplib
import importlib.util
import os
import smtplib
import sys

__all__ = ["check_imap", "check_smtp", "has_imap_server", "main"]

_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_smtp(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` greets with 220 and answers NOOP with 250, else the problem."""
    try:
        with smtplib.SMTP(timeout=timeout) as client:
            code, text = client.connect(host, port)
            if code != 220:
                return f"SMTP {_where(host, port)}: greeting {code} {text!r}"
            code, text = client.noop()
            if code != 250:
                return f"SMTP {_where(host, port)}: NOOP answered {code} {text!r}"
    except (smtplib.SMTPException, OSError) as exc:
        return f"SMTP {_where(host, port)}: {getattr(exc, 'strerror', None) or exc}"
    return None


def check_imap(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` greets ``* OK`` and lists IMAP4rev1 in CAPABILITY."""
    try:
        client = imaplib.IMAP4(host, port, timeout=timeout)
    except (imaplib.IMAP4.error, OSError) as exc:
        return f"IMAP {_where(host, port)}: {getattr(exc, 'strerror', None) or exc}"
    try:
        status, data = client.capability()
        words = b" ".join(d for d in data if isinstance(d, bytes)).upper().split()
        if status != "OK" or b"IMAP4REV1" not in words:
            return f"IMAP {_where(host, port)}: CAPABILITY answered {status} {data!r}"
    except (imaplib.IMAP4.error, OSError) as exc:
        return f"IMAP {_where(host, port)}: {exc}"
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            client.shutdown()
    return None


def has_imap_server() -> bool:
    """Whether this installation can serve IMAP (``mailcoach_server.imap.server`` exists)."""
    try:
        return importlib.util.find_spec("mailcoach_server.imap.server") is not None
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mailcoach health",
        description="Check that a mailcoach server answers: SMTP NOOP, and IMAP CAPABILITY "
        "when this installation has an IMAP server. Exit 0 healthy, 1 not.")
    parser.add_argument("--config", metavar="FILE",
                        default=os.environ.get("MAILCOACH_CONFIG") or None,
                        help="the server's config (default $MAILCOACH_CONFIG, else the defaults)")
    parser.add_argument("--host", help="address to check (default: the config's, "
                        "0.0.0.0 read as 127.0.0.1)")
    parser.add_argument("--smtp-port", type=int, metavar="N")
    parser.add_argument("--imap-port", type=int, metavar="N")
    parser.add_argument("--no-imap", action="store_true", help="check SMTP only")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    from .config import load_config
    from .errors import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    smtp_host = args.host or _LOOPBACK.get(config.smtp.host, config.smtp.host)
    smtp_port = args.smtp_port or config.smtp.port
    problems = [check_smtp(smtp_host, smtp_port, args.timeout)]
    checked = [f"SMTP {_where(smtp_host, smtp_port)}"]
    if not args.no_imap and has_imap_server():
        imap_host = args.host or _LOOPBACK.get(config.imap.host, config.imap.host)
        imap_port = args.imap_port or config.imap.port
        problems.append(check_imap(imap_host, imap_port, args.timeout))
        checked.append(f"IMAP {_where(imap_host, imap_port)}")
    elif not args.no_imap:
        checked.append("IMAP not checked: this installation has no IMAP server")
    failed = [p for p in problems if p is not None]
    for problem in failed:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if failed:
        return 1
    print("healthy: " + ", ".join(checked))
    return 0
