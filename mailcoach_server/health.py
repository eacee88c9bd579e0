"""``mailcoach health``: exit 0 when the server answers SMTP (and IMAP), else 1.

For container health checks and scripts. It speaks a little of each
protocol rather than only opening a port: SMTP greeting, ``NOOP`` answered
250, ``QUIT``; IMAP greeting, ``CAPABILITY`` listing IMAP4rev1, ``LOGOUT``.
Neither needs a login.

Which services are checked: SMTP always; IMAP when this installation has an
IMAP server (the same test ``mailcoach serve`` makes before it starts one),
so a healthy server is never reported sick for a service it does not offer,
and a server that should offer IMAP but does not answer is. ``--no-imap``
skips IMAP. Exit codes are 0 and 1 only (Docker reserves 2).

Where to knock: ``--host``/``--smtp-port``/``--imap-port`` when given; else
what the running server wrote in ``<data dir>/server.json`` (the addresses
it really bound, so ``serve --smtp-port 2600`` is checked on 2600); else the
config (``--config`` or ``$MAILCOACH_CONFIG``). ``0.0.0.0``/``::`` are read
as this machine's loopback. ``mailcoach serve`` writes ``server.json`` once
it listens and removes it when it stops cleanly; after a crash the stale
file names ports nobody answers on, which is reported as unhealthy.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import importlib.util
import json
import os
import smtplib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["SERVER_FILE", "advertised_addresses", "check_imap", "check_smtp",
           "has_imap_server", "main", "pick_address", "read_server_file"]

SERVER_FILE: Final = "server.json"
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_SERVICES: Final = ("smtp", "imap")

Address = tuple[str, int]


@contextlib.contextmanager
def advertised_addresses(data_dir: Path, *, smtp: Address | None,
                         imap: Address | None) -> Iterator[Path]:
    """``<data_dir>/server.json`` names the bound addresses while the block runs.

    Written atomically (temp file, ``os.replace``) so a reader never sees half
    of it; removed on the way out if it is still this process's (the store's
    lock makes one server per data directory, but a file left by a crashed
    one is simply replaced).
    """
    path = data_dir / SERVER_FILE
    record = {"pid": os.getpid(),
              **{name: {"host": address[0], "port": address[1]}
                 for name, address in (("smtp", smtp), ("imap", imap)) if address}}
    temp = path.with_name(f".{SERVER_FILE}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(record) + "\n")
    os.replace(temp, path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def read_server_file(data_dir: Path) -> dict[str, Address]:
    """The addresses in ``<data_dir>/server.json`` by service; empty when there is none.

    Raises:
        ValueError: the file exists but is not what ``advertised_addresses`` writes.
    """
    path = data_dir / SERVER_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from exc
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a JSON object")
    found: dict[str, Address] = {}
    for name in _SERVICES:
        entry = record.get(name)
        if entry is None:
            continue
        host = entry.get("host") if isinstance(entry, dict) else None
        port = entry.get("port") if isinstance(entry, dict) else None
        if (not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int)
                or not 0 < port < 65536):
            raise ValueError(f"{path}: {name} is not {{\"host\": str, \"port\": 1..65535}}")
        found[name] = (host, port)
    return found


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
    parser.add_argument("--data-dir", metavar="DIR",
                        default=os.environ.get("MAILCOACH_DATA_DIR") or None,
                        help=f"where the running server wrote {SERVER_FILE} (default "
                        "$MAILCOACH_DATA_DIR, else the config's data_dir)")
    parser.add_argument("--host", help="address to check (default: the server's, "
                        "else the config's; 0.0.0.0 read as 127.0.0.1)")
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
    data_dir = Path(args.data_dir) if args.data_dir else config.data_dir
    try:
        bound = read_server_file(data_dir)
    except ValueError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    smtp_host, smtp_port = pick_address(bound.get("smtp"),
                                        (config.smtp.host, config.smtp.port),
                                        args.host, args.smtp_port)
    problems = [check_smtp(smtp_host, smtp_port, args.timeout)]
    checked = [f"SMTP {_where(smtp_host, smtp_port)}"]
    if not args.no_imap and has_imap_server():
        imap_host, imap_port = pick_address(bound.get("imap"),
                                            (config.imap.host, config.imap.port),
                                            args.host, args.imap_port)
        problems.append(check_imap(imap_host, imap_port, args.timeout))
        checked.append(f"IMAP {_where(imap_host, imap_port)}")
    elif not args.no_imap:
        checked.append("IMAP not checked: this installation has no IMAP server")
    failed = [p for p in problems if p is not None]
    for problem in failed:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if failed:
        return 1
    print("healthy: " + ", ".join(checked)
          + (f" (as in {data_dir / SERVER_FILE})" if bound else ""))
    return 0


def pick_address(bound: Address | None, configured: Address, host: str | None,
            port: int | None) -> Address:
    """Flags first, then what the server bound, then the config; wildcards as loopback."""
    chosen_host, chosen_port = bound or configured
    chosen_host = host or chosen_host
    return _LOOPBACK.get(chosen_host, chosen_host), port or chosen_port
