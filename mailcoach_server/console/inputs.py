"""Checking the console's input files before anything is written.

A memory is an mbox file (history) or a directory of ``<address>.mbox``
files as a trace writes them (ours or the original tool's: an empty file is
an empty memory); a queue is an mbox file whose every message has a ``To``.
Files are read by ``store.mbox``. Problems are one-line ``ConsoleError``s.
"""

from __future__ import annotations

from pathlib import Path

from ..addresses import address_of_file_name, parse_address_list
from ..errors import MailcoachError
from ..mailtext import read_message
from ..queuefile import with_message_id
from ..store import mbox

__all__ = ["ConsoleError", "check_queue", "memory_files", "read_mbox"]


class ConsoleError(MailcoachError):
    """A problem with what the user gave the console; printed as one line."""


def read_mbox(path: Path, what: str) -> list[bytes]:
    """The messages of an mbox file, or a ConsoleError saying why not."""
    try:
        return mbox.read(path)
    except OSError as exc:
        raise ConsoleError(f"{what} {path}: {exc.strerror}") from None
    except mbox.MboxError as exc:
        raise ConsoleError(f"{what} {path} {exc}") from None


def check_queue(path: Path) -> list[bytes]:
    """A queue's messages (with stable Message-IDs), each checked to have From and To."""
    raws = [with_message_id(raw) for raw in read_mbox(path, "queue")]
    for number, raw in enumerate(raws, start=1):
        message = read_message(raw)
        subject = str(message.get("Subject", "")) or "(no subject)"
        to, _ = parse_address_list(message.get_all("To", []))
        if not to:
            raise ConsoleError(f"queue {path}: message {number} ({subject}) has no To header")
        senders, _ = parse_address_list(message.get_all("From", []))
        if not senders:
            raise ConsoleError(f"queue {path}: message {number} ({subject}) has no From header")
    return raws


def memory_files(path: Path) -> dict[str, Path]:
    """The ``<address>.mbox`` files of a trace directory, by address."""
    found = {a: p for p in sorted(path.glob("*@*.mbox")) if (a := address_of_file_name(p.name))}
    if not found:
        raise ConsoleError(f"memory {path} holds no <address>.mbox files")
    for address, file in found.items():
        read_mbox(file, f"memory of {address}:")
    return found
