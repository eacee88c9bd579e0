"""The postmaster: checks and stamps a message before anything is stored.

Pure functions over bytes: ``prepare`` turns raw mail into a ``Submission``
or raises ``SubmitError`` with the SMTP code a client should see. It never
touches the store; the engine decides threads and deliveries afterwards.

Headers are edited in the raw header block (prepend ``Received``, add
``Message-ID``/``Date`` when missing, drop ``Bcc``) rather than by
re-serialising with ``email``: the body bytes a client sent are the bytes
every reader gets back, signatures and all.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import formatdate

from .addresses import address_problem, normalize_address, parse_address_list
from .errors import SubmitError
from .mailtext import mime_depth

__all__ = [
    "MAX_MIME_DEPTH", "HeaderView",
    "Submission", "check_sender", "checked_recipient", "decoded_header", "new_message_id",
    "prepare", "split_header_block",
]

#: MIME entities nested deeper than this are refused (Postfix's mime_nesting_limit).
MAX_MIME_DEPTH = 100

_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")


class HeaderView:
    """The header block as plain strings, looked up case-insensitively.

    Built from the lines ``split_header_block`` already found: parsing them
    again with ``email`` cost more than the rest of accepting a message.
    Raw UTF-8 (SMTPUTF8) is decoded as UTF-8, so it stays readable.
    """

    __slots__ = ("_fields",)

    def __init__(self, lines: list[bytes]) -> None:
        fields: dict[str, list[str]] = {}
        for line in lines:
            name, _, value = line.decode("utf-8", "replace").partition(":")
            unfolded = value.replace("\r", "").replace("\n", "").strip()
            fields.setdefault(name.strip().lower(), []).append(unfolded)
        self._fields = fields

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __getitem__(self, name: str) -> str | None:
        values = self._fields.get(name.lower())
        return values[0] if values else None

    def get(self, name: str, default: str = "") -> str:
        values = self._fields.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str, default: list[str] | None = None) -> list[str]:
        return list(self._fields.get(name.lower(), default or []))


@dataclass(frozen=True, slots=True)
class Submission:
    """A checked, stamped message and who it is for.

    ``to`` act on it, ``cc`` (and Bcc'd envelope recipients) only remember it.
    """

    raw: bytes
    #: the header block as accepted (values are plain strings; no body)
    message: HeaderView
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    message_id: str
    subject: str
    in_reply_to: str
    references: tuple[str, ...]
    auto: bool

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.to + tuple(a for a in self.cc if a not in self.to)


def new_message_id(domain: str) -> str:
    return f"<{time.strftime('%Y%m%d%H%M%S')}.{_random_hex(6)}@{domain}>"


class _RandomBytes:
    """``os.urandom`` read 4 KiB at a time: a system call per Message-ID let the store's
    writer thread take the GIL from the event loop (milliseconds each, under load)."""

    def __init__(self) -> None:
        self._pool = b""
        self._lock = threading.Lock()  # two threads never get the same bytes
        os.register_at_fork(after_in_child=self._forget)  # nor a forked child

    def _forget(self) -> None:
        self._pool = b""

    def hex(self, count: int) -> str:
        with self._lock:
            if len(self._pool) < count:
                self._pool = os.urandom(4096)
            taken, self._pool = self._pool[:count], self._pool[count:]
        return taken.hex()


_random_hex = _RandomBytes().hex


def split_header_block(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header lines (continuations joined to their field, LF ends kept) and the rest."""
    head, sep, body = raw.partition(b"\n\n")
    if not sep:
        head, body = raw.rstrip(b"\n"), b""
    fields: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\n"
        else:
            fields.append(line + b"\n")
    return fields, body


def _field_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].strip().lower()


def prepare(
    raw: bytes,
    *,
    domain: str,
    max_size: int,
    max_hops: int,
    origin: str,
    received_from: str = "localhost",
    envelope_rcpts: list[str] | None = None,
    max_mime_depth: int = MAX_MIME_DEPTH,
) -> Submission:
    """Check ``raw`` and stamp it.

    Args:
        origin: who hands it in: "smtp", "sendmail", "console", "agent", "robot".
            Agents and robots mark their mail ``Auto-Submitted``.
        envelope_rcpts: SMTP RCPT TO addresses; when given they are the
            recipients (Bcc works), otherwise To, Cc and Bcc headers are.

    Raises:
        SubmitError: with the SMTP reply the sender should get.
    """
    fields, body = _checked_shape(raw, max_size=max_size, max_hops=max_hops,
                                  max_mime_depth=max_mime_depth)
    message = HeaderView(fields)
    sender = _checked_sender(message, domain=domain)
    to, rcpts = _checked_recipients(message, domain=domain, envelope_rcpts=envelope_rcpts)
    acting = tuple(a for a in to if a in rcpts)
    remembering = tuple(a for a in rcpts if a not in acting)
    stamped_raw, message_id = _stamped(fields, body, message, domain=domain,
                                       origin=origin, received_from=received_from)
    auto_header = message.get("Auto-Submitted", "no").lower()
    auto = origin in ("agent", "robot") or auto_header not in ("", "no")
    references = tuple(message.get("References").split())
    return Submission(
        raw=stamped_raw,
        message=message,
        sender=sender,
        to=acting,
        cc=remembering,
        message_id=message_id,
        subject=decoded_header(message.get("Subject")),
        in_reply_to=message.get("In-Reply-To"),
        references=references,
        auto=auto,
    )


def _checked_shape(
    raw: bytes, *, max_size: int, max_hops: int, max_mime_depth: int
) -> tuple[list[bytes], bytes]:
    """The header lines and body of ``raw`` (LF line ends), or a refusal for its size,
    header syntax, hop count or MIME nesting."""
    if len(raw) > max_size:
        raise SubmitError(552, "5.3.4", f"message too big ({len(raw)} > {max_size} bytes)")
    raw = raw.replace(b"\r\n", b"\n")
    if not _HEADER_LINE.match(raw):
        raise SubmitError(554, "5.6.0", "malformed message: it does not start with a header")
    fields, body = split_header_block(raw)
    for line in fields:
        if not (_HEADER_LINE.match(line)):
            raise SubmitError(554, "5.6.0", f"malformed header line: {line[:60]!r}")
    hops = sum(1 for line in fields if _field_name(line) == b"received")
    if hops >= max_hops:
        raise SubmitError(554, "5.4.6", f"too many hops ({hops} Received headers): a mail loop?")
    if mime_depth(b"".join(fields), body, max_mime_depth) > max_mime_depth:
        raise SubmitError(554, "5.6.0", "message content rejected: MIME nesting exceeds "
                          f"the safety limit of {max_mime_depth} levels")
    return fields, body


def _checked_sender(message: HeaderView, *, domain: str) -> str:
    """The one From address, checked against ``domain``."""
    senders, bad = parse_address_list(message.get_all("From", []))
    if bad:
        raise SubmitError(553, "5.1.7", f"bad sender address {_shown(bad[0])}: "
                          f"{address_problem(bad[0])}")
    if len(senders) != 1:
        raise SubmitError(553, "5.1.7", "the From header must hold exactly one address")
    sender = senders[0]
    check_sender(sender, domain=domain)
    return sender


def _checked_recipients(
    message: HeaderView, *, domain: str, envelope_rcpts: list[str] | None
) -> tuple[list[str], list[str]]:
    """The To addresses and every recipient (the envelope's, else To, Cc and Bcc),
    all in ``domain``."""
    to, bad_to = parse_address_list(message.get_all("To", []))
    cc, bad_cc = parse_address_list(message.get_all("Cc", []))
    bcc, bad_bcc = parse_address_list(message.get_all("Bcc", []))
    if envelope_rcpts is not None:
        rcpts = [checked_recipient(rcpt) for rcpt in envelope_rcpts]
    else:
        if bad_to or bad_cc or bad_bcc:
            first = (bad_to + bad_cc + bad_bcc)[0]
            raise SubmitError(553, "5.1.3",
                              f"bad address {_shown(first)}: {address_problem(first)}")
        rcpts = list(dict.fromkeys(to + cc + bcc))
    if not rcpts:
        raise SubmitError(554, "5.5.1", "no recipients")
    for rcpt in rcpts:
        if not _in_domain(rcpt, domain):
            raise SubmitError(550, "5.7.1", f"relay denied: {rcpt} is not in {domain}")
    return to, rcpts


def _stamped(
    fields: list[bytes], body: bytes, message: HeaderView, *,
    domain: str, origin: str, received_from: str,
) -> tuple[bytes, str]:
    """The message as stored, and its Message-ID: a Received line on top, Bcc dropped,
    Message-ID, Date and (for agents and robots) Auto-Submitted added when missing."""
    stamped: list[bytes] = [
        f"Received: from {received_from} by {domain} (mailcoach) with {_protocol(origin)};\n"
        f"\t{_date_now()}\n".encode()
    ]
    message_id = message.get("Message-ID")
    for line in fields:
        if _field_name(line) == b"bcc":
            continue  # delivered, never shown
        stamped.append(line)
    if not message_id:
        message_id = new_message_id(domain)
        stamped.append(f"Message-ID: {message_id}\n".encode())
    if "Date" not in message:
        stamped.append(f"Date: {_date_now()}\n".encode())
    if origin in ("agent", "robot") and "Auto-Submitted" not in message:
        stamped.append(b"Auto-Submitted: auto-replied\n")
    return b"".join(stamped) + b"\n" + body, message_id


_date_of_second: tuple[int, str] = (0, "")


def _date_now() -> str:
    """The RFC 5322 date of now, local time; made once a second (a message each
    needs one or two, and formatting one costs more than the rest of the stamp)."""
    global _date_of_second
    now = time.time()
    second, text = _date_of_second
    if int(now) != second:
        text = formatdate(now, localtime=True)
        _date_of_second = (int(now), text)
    return text


def checked_recipient(raw: str) -> str:
    """A recipient as given (SMTP RCPT TO, a command line): normalised, or refused.

    Raises:
        SubmitError: 553 5.1.3 (bad destination address syntax, RFC 3463), with why.
    """
    address = normalize_address(raw)
    if address is None:
        raise SubmitError(553, "5.1.3", f"bad recipient address {_shown(raw)}: "
                          f"{address_problem(raw)}")
    return address


def check_sender(address: str, *, domain: str) -> None:
    """Who may send: an address of the local domain (the From header, and SMTP MAIL FROM).

    Raises:
        SubmitError: 553 5.7.1, as Postfix refuses a sender it does not serve.
    """
    if not _in_domain(address, domain):
        raise SubmitError(553, "5.7.1", f"sender {address} is not in the local domain {domain}")


def decoded_header(value: str) -> str:
    """RFC 2047 encoded words to text (``=?utf-8?q?caf=C3=A9?=`` → ``café``)."""
    if "=?" not in value:
        return " ".join(value.split())
    try:
        return " ".join(str(make_header(decode_header(value))).split())
    except (ValueError, LookupError):  # a broken encoded word: keep it as it came
        return value


def _shown(raw: str, limit: int = 80) -> str:
    """An untrusted address as it may appear in a reply: one ASCII line, not too long."""
    text = raw.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _in_domain(address: str, domain: str) -> bool:
    return address.rpartition("@")[2] == domain.lower()


def _protocol(origin: str) -> str:
    return {"smtp": "ESMTP"}.get(origin, f"local ({origin})")
