"""mbox, the one reader and writer: the store, ``-m``, queue files and sendmail use it.

Writing is mboxrd: each message gets a dated From_ line (``From <sender>
<asctime>``), LF line ends, a final newline, ``>*From `` lines quoted with
one more ``>`` (the reversible variant), and a blank separator line.
``frame`` is written by hand because the stdlib ``mailbox.mbox`` rescans
the whole file to add one message and fsyncs each add on its own; the
store appends many messages with one fsync (group commit).

Reading (``parse``, ``read``) takes what mailcoach, mail clients and the
original mailcoach tool write:

- a message starts at every line beginning with ``From `` (as the stdlib
  and the original split), and the blank line before the next From_ line
  belongs to the mbox, not to the message;
- blank lines before the first From_ line are skipped (the original's trace
  and sample memory begin with one); any other text there is a
  :class:`MboxError`; a 0-byte (or all blank) file is an empty mailbox;
- a file whose first From_ line ends in CRLF is read with CRLF as LF.

Which ``>From `` lines to un-quote is decided per message by its From_
line. A dated one (ours, mutt's, the stdlib's: ``From sender Mon Mar  3
20:02:54 2025``) means mboxrd: one ``>`` comes off every ``>*From `` line,
so what we write reads back byte for byte, however often it is reloaded.
The original tool writes From_ lines without a date (``From ----…`` in its
trace, ``From <sender>`` in saved memories) and never quotes, so under a
dateless From_ line the message is taken verbatim, as its stdlib reader
took it: a ``>From `` line there is text. (A body line ``From `` in such a
file starts a new message, for the original as for us.)

Not here: locking, parsing the messages themselves, Maildir.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..errors import MailcoachError

__all__ = ["MboxError", "frame", "from_line", "parse", "quote", "read", "to_lf", "unquote"]

_QUOTED = re.compile(rb"^(>*From )", re.MULTILINE)
_UNQUOTE = re.compile(rb"^>(>*From )", re.MULTILINE)
_FROM_LINE = re.compile(rb"^From ", re.MULTILINE)
_LEADING_BLANKS = re.compile(rb"(?:[ \t]*\r?\n)*")
# A From_ line with a sender and a date: a time (12:34) and a year after the sender.
_DATED = re.compile(rb"From \S+[ \t](?=.*\b\d{1,2}:\d\d\b)(?=.*\b\d{4}\b)")
_CRS_LF = re.compile(rb"\r+\n")
_NOT_ONE_TOKEN = re.compile(r"[\s\x00-\x1f\x7f]")


class MboxError(MailcoachError):
    """The bytes are not an mbox file."""


def to_lf(raw: bytes) -> bytes:
    """Messages are stored with LF line ends, as mbox files on Unix are."""
    lf = raw.replace(b"\r\n", b"\n")
    if b"\r\n" in lf:  # "\r\r\n": one pass leaves a CRLF; collapse so a reload changes nothing
        lf = _CRS_LF.sub(b"\n", raw)
    return lf


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
    if _NOT_ONE_TOKEN.search(sender):  # the From_ line is one line, its sender one word
        sender = _NOT_ONE_TOKEN.sub("_", sender)
    return f"From {sender or 'MAILER-DAEMON'} {stamp}\n".encode("ascii", "replace")


def frame(message: bytes, sender: str, when: float) -> tuple[bytes, int]:
    """One mbox entry: From_ line, quoted message, blank separator line.

    Returns:
        (entry, header_len): the bytes to append, and the length of the
        From_ line (the quoted message starts there).
    """
    head = from_line(sender, when)
    body = to_lf(message)
    if not body.endswith(b"\n"):
        # A trailing CR is the first half of the line end we add.
        body = to_lf(body + b"\n") if body.endswith(b"\r") else body + b"\n"
    return head + quote(body) + b"\n", len(head)


def parse(data: bytes) -> list[bytes]:
    """The messages of an mbox file's bytes, oldest first (see the module docstring).

    Raises:
        MboxError: something other than blank lines comes before the first From_ line.
    """
    blanks = _LEADING_BLANKS.match(data)  # matches always, maybe empty
    start = blanks.end() if blanks else 0
    if start == len(data):
        return []
    if not data.startswith(b"From ", start):
        raise MboxError("is not an mbox file (its first line that is not blank must start "
                        "with 'From ')")
    first_end = data.find(b"\n", start)
    if first_end > start and data[first_end - 1 : first_end] == b"\r":
        data = data[start:].replace(b"\r\n", b"\n")
        start = 0
    starts = [m.start() for m in _FROM_LINE.finditer(data, start)]
    messages: list[bytes] = []
    for begin, end in zip(starts, [*starts[1:], len(data)], strict=True):
        line_end = data.find(b"\n", begin, end)
        if line_end < 0:  # a From_ line at the very end: an empty message
            messages.append(b"")
            continue
        body = data[line_end + 1 : end]
        if body.endswith(b"\n\n") or body == b"\n":
            body = body[:-1]  # the separator line is the mbox's
        if _DATED.match(data, begin, line_end):
            body = unquote(body)
        messages.append(body)
    return messages


def read(path: Path) -> list[bytes]:
    """The messages of the mbox file at ``path``.

    Raises:
        OSError: it cannot be read.
        MboxError: it is not an mbox file.
    """
    with open(path, "rb") as f:
        return parse(f.read())
