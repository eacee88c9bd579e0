"""The spool: mail handed to ``mailcoach-sendmail`` while the server was not running.

Laid out like a maildir under ``<data_dir>/spool``::

    tmp/      a message being written (never read)
    new/      complete messages, delivered in name order when the server starts
    failed/   messages the postmaster refused, each beside a ``.reason`` file
    .lock     flock between a spooling sendmail and a starting server

A spool file is the message with its envelope in front, as header lines of
our own (``X-Mailcoach-Envelope-From``, one ``X-Mailcoach-Envelope-To`` per
recipient), so it still opens in a mail reader. It is written durably
(tmp file, fsync, rename into ``new/``, fsync of the directory) and carries a
Message-ID, stamped here when missing: the server skips a message whose
Message-ID is already stored, so a crash between submitting and deleting a
file never delivers it twice.

The lock closes the race between the two sides: sendmail takes it, looks
for the server once more and writes only if it is still not there; the
server takes it after its listeners are up and lists ``new/``. So a message
is either seen by the listing or sent over SMTP, never neither.

This is not a mail queue: nothing is retried on a timer, and a refused
message is set aside with its reason, not bounced.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .errors import StoreError, SubmitError
from .postmaster import new_message_id, split_header_block

if TYPE_CHECKING:
    from .runtime.engine import Engine

__all__ = [
    "SPOOL_DIR",
    "SpoolEntry",
    "deliver_spool",
    "pending",
    "read_spool",
    "spool_lock",
    "write_spool",
]

log = logging.getLogger("mailcoach.spool")

SPOOL_DIR: Final = "spool"
_FROM: Final = b"x-mailcoach-envelope-from:"
_TO: Final = b"x-mailcoach-envelope-to:"
_HEADERS = BytesHeaderParser(policy=compat32)
_sequence = itertools.count()


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path
    envelope_from: str
    rcpts: list[str]
    raw: bytes
    message_id: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) and make each new entry durable in its parent."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        _fsync_dir(directory.parent)


def _with_message_id(raw: bytes, envelope_from: str) -> bytes:
    fields, _ = split_header_block(raw)
    if any(line.lower().startswith(b"message-id:") for line in fields):
        return raw
    domain = envelope_from.rpartition("@")[2] or "localhost"
    return f"Message-ID: {new_message_id(domain)}\n".encode() + raw


def write_spool(data_dir: Path, raw: bytes, envelope_from: str, rcpts: list[str]) -> Path:
    """Store one message durably in ``<data_dir>/spool/new``; return its path.

    Raises:
        OSError: the spool could not be written (nothing is left in ``new/``).
    """
    spool = data_dir / SPOOL_DIR
    tmp_dir, new_dir = spool / "tmp", spool / "new"
    _ensure_dir(tmp_dir)
    _ensure_dir(new_dir)
    raw = _with_message_id(raw.replace(b"\r\n", b"\n"), envelope_from)
    envelope = f"X-Mailcoach-Envelope-From: {envelope_from}\n".encode()
    envelope += b"".join(f"X-Mailcoach-Envelope-To: {r}\n".encode() for r in rcpts)
    # Names sort in submission order: time, then this process's own counter.
    name = f"{time.time_ns():020d}.{os.getpid()}.{next(_sequence):06d}.eml"
    tmp = tmp_dir / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(envelope + raw)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, new_dir / name)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(new_dir)
    return new_dir / name


def read_spool(path: Path) -> SpoolEntry:
    """Split a spool file into envelope and message.

    Raises:
        ValueError: the file has no envelope (not written by ``write_spool``).
    """
    data = path.read_bytes()
    sender: str | None = None
    rcpts: list[str] = []
    while True:
        line, sep, rest = data.partition(b"\n")
        lower = line.lower()
        if lower.startswith(_FROM):
            sender = line[len(_FROM):].decode("utf-8", "replace").strip()
        elif lower.startswith(_TO):
            rcpts.append(line[len(_TO):].decode("utf-8", "replace").strip())
        else:
            break
        data = rest
    if sender is None or not rcpts:
        raise ValueError("no envelope (X-Mailcoach-Envelope-From/-To) at the top")
    message_id = str(_HEADERS.parsebytes(data).get("Message-ID", "")).strip()
    return SpoolEntry(path, sender, rcpts, data, message_id)


def pending(data_dir: Path) -> list[Path]:
    """The spooled messages waiting in ``new/``, oldest first."""
    new_dir = data_dir / SPOOL_DIR / "new"
    if not new_dir.is_dir():
        return []
    return sorted(p for p in new_dir.iterdir() if p.is_file() and not p.name.startswith("."))


@contextlib.contextmanager
def spool_lock(data_dir: Path, timeout: float = 10.0) -> Iterator[bool]:
    """Hold ``spool/.lock`` (flock) for the block; yields False if it was not had in time.

    Waiting is bounded: a stuck holder must not make a sender hang. Going on
    without the lock only reopens the small race described above.
    """
    spool = data_dir / SPOOL_DIR
    _ensure_dir(spool)
    fd = os.open(spool / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        locked = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
        yield locked
    finally:
        os.close(fd)  # closing releases the flock


def _list_locked(data_dir: Path) -> list[Path]:
    with spool_lock(data_dir) as locked:
        if not locked:
            log.warning("spool lock busy; listing %s without it", data_dir / SPOOL_DIR)
        return pending(data_dir)


def _set_aside(path: Path, reason: str) -> Path:
    failed = path.parent.parent / "failed"
    _ensure_dir(failed)
    target = failed / path.name
    reason_file = target.with_suffix(".reason")
    fd = os.open(reason_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(reason + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(path, target)
    _fsync_dir(failed)
    _fsync_dir(path.parent)
    return target


def _remove(path: Path) -> None:
    path.unlink()
    _fsync_dir(path.parent)


async def deliver_spool(engine: Engine) -> int:
    """Submit each spooled message in order; return how many were submitted.

    Call it once the listeners are up. A message already in the store (by
    Message-ID) is only removed; one the postmaster refuses moves to
    ``spool/failed/`` with a ``.reason`` file. A store error stops the run
    and leaves the rest for the next start.
    """
    data_dir = engine.store.data_dir
    paths = await asyncio.to_thread(_list_locked, data_dir)
    delivered = 0
    for number, path in enumerate(paths):
        try:
            entry = await asyncio.to_thread(read_spool, path)
        except ValueError as exc:
            target = await asyncio.to_thread(_set_aside, path, f"unreadable spool file: {exc}")
            log.error("spooled %s is unreadable (%s); set aside in %s", path.name, exc, target)
            continue
        except OSError as exc:
            log.error("cannot read spooled %s: %s", path, exc.strerror or exc)
            continue
        if entry.message_id and engine.store.find_by_message_id(entry.message_id) is not None:
            log.info("spooled %s (%s) was already delivered", path.name, entry.message_id)
            await asyncio.to_thread(_remove, path)
            continue
        try:
            await engine.submit(entry.raw, origin="sendmail", envelope_rcpts=entry.rcpts)
        except SubmitError as exc:
            target = await asyncio.to_thread(_set_aside, path, exc.smtp_reply())
            log.warning("spooled %s refused: %s; set aside in %s", entry.message_id,
                        exc.smtp_reply(), target)
            continue
        except StoreError as exc:
            log.error("cannot deliver the spool now (%s); %d message(s) wait in %s", exc,
                      len(paths) - number, path.parent)
            break
        await asyncio.to_thread(_remove, path)
        delivered += 1
    if delivered:
        log.info("delivered %d spooled message(s)", delivered)
    return delivered
