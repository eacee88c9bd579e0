"""Stored messages read by where the index says they are: (file, offset, length).

A folder row carries the span of its message, so a batch of messages costs
one ``pread`` each and no SQL; each file is opened once per batch. Only the
store's append-only message files can be named, and the mboxrd quoting is
undone here, where it was done.

Not here: which messages to read (``folders``), caching them (``imap.messages``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from ..errors import StoreError
from . import mbox

__all__ = ["MESSAGE_FILES", "SpanReader"]

#: Append-only message files: the trace (every message that flowed), mail
#: APPENDed by IMAP clients, and rewritten copies (a cloned agent's memory).
MESSAGE_FILES = ("trace", "imap", "copies")


class SpanReader:
    """``with SpanReader(data_dir) as spans: spans.read(file, offset, length)``."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._fds: dict[str, int] = {}

    def read(self, file: str, offset: int, length: int) -> bytes:
        """The message's bytes (LF line ends, quoting undone)."""
        fd = self._fds.get(file)
        if fd is None:
            if file not in MESSAGE_FILES:
                raise StoreError(f"{file[:40]!r} is not a message file of the store")
            fd = self._fds[file] = os.open(self._data_dir / file, os.O_RDONLY | os.O_CLOEXEC)
        return mbox.unquote(os.pread(fd, length, offset))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> SpanReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
