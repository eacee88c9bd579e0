"""``mailcoach memory``: an agent's memory, its history of edits, and going back to a version.

    mailcoach memory list                      # agents and the size of their memories
    mailcoach memory history swe1@localdomain  # the edits: version, when, who, how, change
    mailcoach memory show swe1@localdomain [--version N]
    mailcoach memory restore swe1@localdomain N

A version is the number of the message whose arrival made the edit (the
record of an edit from a mail client, an X-Rollback mail, a trim note);
``history`` lists them. ``list``, ``history`` and ``show`` read the index
beside a running server; ``restore`` asks a running server to do it (the
IMAP command ``XRESTORE``, logged in as the user), else writes the store
itself. A restore is itself an edit that can be undone the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from .config import Config
from .errors import ConfigError, StoreError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailcoach memory",
        description="Agents' memories: list them, show a memory's edits and versions, "
        "restore an earlier version.")
    parser.add_argument("--config", metavar="FILE",
                        default=os.environ.get("MAILCOACH_CONFIG") or None,
                        help="the server's config (default $MAILCOACH_CONFIG, else the defaults)")
    parser.add_argument("--data-dir", metavar="DIR",
                        default=os.environ.get("MAILCOACH_DATA_DIR") or None,
                        help="the store (default $MAILCOACH_DATA_DIR, else the config's "
                        "data_dir; a console trace directory works too)")
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    commands.add_parser("list", help="agents and the size of their memories")
    history = commands.add_parser("history", help="the recorded edits of a memory")
    history.add_argument("address")
    show = commands.add_parser("show", help="the messages of a memory, now or at a version")
    show.add_argument("address")
    show.add_argument("--version", type=int, metavar="N", help="as it was just after edit N")
    restore = commands.add_parser("restore", help="make version N the memory again "
                                  "(through the running server, if there is one)")
    restore.add_argument("address")
    restore.add_argument("version", type=int, metavar="N")
    return parser


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _list(data_dir: Path) -> int:
    from .store import memory_log

    db = memory_log.read_only(data_dir)
    for address, size in memory_log.agents(db):
        print(f"{address}  {size} messages")
    return 0


def _history(data_dir: Path, address: str) -> int:
    from .store import memory_log

    db = memory_log.read_only(data_dir)
    memory = memory_log.current(db, address)
    edits = memory_log.edits_of(db, address)
    if not memory and not edits:
        print(f"{address} has no memory here", file=sys.stderr)
        return 1
    print(f"{'version':>8}  {'when':19}  {'who':24}  {'how':14}  {'change':>11}  size")
    for edit in edits:
        change = f"+{len(edit.added)} -{len(edit.removed)}"
        print(f"{edit.message:>8}  {_when(edit.at):19}  {edit.who[:24]:24}  {edit.how[:14]:14}  "
              f"{change:>11}  {edit.size}")
    print(f"now: {len(memory)} messages ('mailcoach memory show {address} --version N' "
          "shows a version)")
    return 0


def _show(data_dir: Path, address: str, version: int | None) -> int:
    from .store import memory_log

    db = memory_log.read_only(data_dir)
    memory = memory_log.current(db, address)
    if version is not None:
        memory = memory_log.memory_at(memory, memory_log.edits_of(db, address, after=version),
                                      version)
    described = memory_log.described(db, memory)
    for position, number in enumerate(memory, start=1):
        sender, subject, at = described.get(number, ("?", "?", 0.0))
        print(f"{position:>5}  #{number:<8} {_when(at)}  {sender}: {subject or '(no subject)'}")
    print(f"{len(memory)} messages")
    return 0


def _restore_by_imap(config: Config, address: str, version: int) -> int:
    """The running server does it (XRESTORE), so nothing has to stop."""
    import imaplib

    from .credentials import Credentials
    from .health import pick_address, read_server_file

    configured = (config.imap.host, config.imap.port)
    host, port = pick_address(read_server_file(config.data_dir).get("imap"), configured,
                              None, None)
    if not port:
        raise StoreError(f"the data directory {config.data_dir} is in use, and the server "
                         "that holds it names no IMAP port (server.json): stop it to restore")
    login = Credentials.load_or_create(config.data_dir, config.user)
    with imaplib.IMAP4(host, port, timeout=60) as client:
        try:
            client.login(config.user, login.password)
            folder = "Agents/" + address
            quoted = '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
            typ, data = client.xatom("XRESTORE", quoted, str(version))
        except imaplib.IMAP4.error as exc:
            print(f"mailcoach memory: the server refused: {exc}", file=sys.stderr)
            return 1
    text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
    if typ != "OK":
        print(f"mailcoach memory: the server refused: {text}", file=sys.stderr)
        return 1
    print(f"{address}: version {version} restored by the running server ({text})")
    return 0


async def _restore(config: Config, address: str, version: int) -> int:
    from .runtime.memory_edits import MemoryEditError, MemoryEditor
    from .runtime.router import Router
    from .store.store import Store

    try:
        store = Store.open(config.data_dir)
    except StoreError as exc:
        if "in use" not in str(exc):
            raise
        return _restore_by_imap(config, address, version)
    try:
        editor = MemoryEditor(Router(config, store))
        before = set(store.parties[address].memory) if address in store.parties else set()
        try:
            plan = editor.restore(address, version, config.user)
        except MemoryEditError as exc:
            print(f"mailcoach memory: {exc}", file=sys.stderr)
            return 1
        await store.commit(plan)
        folder = f"Agents/{address}"
        validity = store.folders.uidvalidity(folder)
        if validity is not None and set(plan.memory_rewrites[address]) - before:
            # Old messages are back under UIDs clients have passed: they must look again.
            await store.folders.create_folder(folder, above=validity)
        print(f"{address}: version {version} restored ({len(plan.memory_rewrites[address])} "
              f"messages); this restore is version {plan.meta.id}")
        return 0
    finally:
        await store.aclose()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .config import load_config

    try:
        config = load_config(args.config, data_dir=args.data_dir)
        if args.action == "list":
            return _list(config.data_dir)
        if args.action == "history":
            return _history(config.data_dir, args.address)
        if args.action == "show":
            return _show(config.data_dir, args.address, args.version)
        return asyncio.run(_restore(config, args.address, args.version))
    except (ConfigError, StoreError) as exc:
        print(f"mailcoach memory: {exc}", file=sys.stderr)
        return 1
