"""Queue files: an mbox of messages submitted in order, each exactly once.

A message is identified by its Message-ID; one without gets a stable one
made from its bytes, so submitting the same file again (after a restart,
or twice by mistake) skips what is already stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MailcoachError, SubmitError
from .mailtext import parse_message
from .postmaster import split_header_block
from .store import mbox

if TYPE_CHECKING:
    from .runtime.engine import Engine

__all__ = ["QueueReport", "read_queue", "submit_queue", "with_message_id"]


@dataclass(slots=True)
class QueueReport:
    submitted: int = 0
    skipped: int = 0
    refused: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.submitted} submitted, {self.skipped} already done"
        if self.refused:
            text += f", {len(self.refused)} refused ({'; '.join(self.refused)})"
        return text


def read_queue(path: Path) -> list[bytes]:
    """The messages of an mbox file, each with a Message-ID.

    Raises:
        MailcoachError: no such file, or not an mbox (``store.mbox.MboxError``).
    """
    if not path.is_file():
        raise MailcoachError(f"{path}: no such queue file")
    try:
        raws = mbox.read(path)
    except mbox.MboxError as exc:
        raise mbox.MboxError(f"queue {path} {exc}") from None
    return [with_message_id(raw) for raw in raws]


def with_message_id(raw: bytes) -> bytes:
    """``raw`` with a Message-ID: its own, or a stable one made from its bytes."""
    fields, _ = split_header_block(raw.replace(b"\r\n", b"\n"))
    if any(line.lower().startswith(b"message-id:") for line in fields):
        return raw
    digest = hashlib.sha256(raw).hexdigest()[:24]
    return f"Message-ID: <queue.{digest}@mailcoach>\n".encode() + raw


def message_id_of(raw: bytes) -> str:
    return str(parse_message(raw).get("Message-ID", "")).strip()


async def submit_queue(engine: Engine, path: Path, *, origin: str = "console",
                       wait: bool = False) -> QueueReport:
    """Submit each message not yet stored; with ``wait``, let agents finish each first."""
    report = QueueReport()
    for number, raw in enumerate(read_queue(path), start=1):
        if engine.store.find_by_message_id(message_id_of(raw)) is not None:
            report.skipped += 1
            continue
        try:
            await engine.submit(raw, origin=origin)
        except SubmitError as exc:
            report.refused.append(f"message {number}: {exc.smtp_reply()}")
            continue
        report.submitted += 1
        if wait:
            await engine.wait_idle()
    return report
