"""Stored messages read by where the index says they are: (file, offset, length).

A folder row carries the span of its message, so a batch of messages costs
no SQL and, since a folder's messages lie mostly one after the other in the
files, a ``pread`` for each run of neighbours (:meth:`SpanReader.read_many`);
each file is opened once per batch. Only the
store's append-only message files can be named, and the mboxrd quoting is
undone here, where it was done.

Not here: which messages to read (``folders``), caching them (``imap.messages``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ..errors import StoreError
from . import mbox

__all__ = ["MESSAGE_FILES", "SpanReader"]

#: Bytes between two spans that one read may take in to cover both (mbox From_ lines,
#: another folder's messages), and the most one read takes.
_GAP, _RUN = 16 * 1024, 1024 * 1024

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
        return mbox.unquote(os.pread(self._fd(file), length, offset))

    def read_many(self, spans: Sequence[tuple[str, int, int]]) -> list[bytes]:
        """What :meth:`read` gives for each ``(file, offset, length)``, in order; spans
        close together in one file (at most ``_GAP`` apart, in order, ``_RUN`` in all)
        in one ``pread``: a syscall costs more than copying a message out of a run."""
        out: list[bytes] = []
        start = 0
        while start < len(spans):
            file, first, length = spans[start]
            end, stop = start + 1, first + length
            while end < len(spans):
                next_file, offset, size = spans[end]
                if next_file != file or not stop <= offset <= stop + _GAP \
                        or offset + size - first > _RUN:
                    break
                stop, end = offset + size, end + 1
            if end == start + 1:
                out.append(self.read(file, first, length))
            else:
                run = os.pread(self._fd(file), stop - first, first)
                out += [mbox.unquote(run[offset - first : offset - first + size])
                        for _, offset, size in spans[start:end]]
            start = end
        return out

    def _fd(self, file: str) -> int:
        fd = self._fds.get(file)
        if fd is None:
            if file not in MESSAGE_FILES:
                raise StoreError(f"{file[:40]!r} is not a message file of the store")
            fd = self._fds[file] = os.open(self._data_dir / file, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> SpanReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
