"""mbox framing: From_ lines and mboxrd quoting, as bytes.

Written by hand because the stdlib ``mailbox.mbox`` rescans the whole file
to add one message and fsyncs each add on its own; the store appends many
messages with one fsync (group commit). Reading a whole file back (``-m``)
uses the stdlib.

Quoting is mboxrd (``>From `` → ``>>From ``), the reversible variant, so a
message read back for IMAP is byte-for-byte what was accepted.
"""

from __future__ import annotations

import re
import time

__all__ = ["from_line", "frame", "quote", "unquote", "to_lf"]

_QUOTED = re.compile(rb"^(>*From )", re.MULTILINE)
_UNQUOTE = re.compile(rb"^>(>*From )", re.MULTILINE)


def to_lf(raw: bytes) -> bytes:
    """Messages are stored with LF line ends, as mbox files on Unix are."""
    return raw.replace(b"\r\n", b"\n")


def quote(body: bytes) -> bytes:
    if b"From " not in body:  # nearly always: skip the regex
        return body
    return _QUOTED.sub(rb">\1", body)


def unquote(body: bytes) -> bytes:
    if b">From " not in body:
        return body
    return _UNQUOTE.sub(rb"\1", body)


def from_line(sender: str, when: float) -> bytes:
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(when))
    return f"From {sender or 'MAILER-DAEMON'} {stamp}\n".encode("ascii", "replace")


def frame(message: bytes, sender: str, when: float) -> tuple[bytes, int]:
    """One mbox entry: From_ line, quoted message, blank separator line.

    Returns:
        (entry, header_len): the bytes to append, and the length of the
        From_ line (the quoted message starts there).
    """
    head = from_line(sender, when)
    body = quote(to_lf(message))
    if not body.endswith(b"\n"):
        body += b"\n"
    return head + body + b"\n", len(head)
