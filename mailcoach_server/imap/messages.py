"""Message bytes for FETCH and SEARCH: read in batches, kept in a bounded cache.

A folder row already says where a message is (file, offset, length), so a
batch of messages costs one ``pread`` each and no SQL (the store's
:class:`~mailcoach_server.store.spans.SpanReader` reads them). Messages never change
once stored, which makes the cache trivially correct: a
:class:`~mailcoach_server.imap.fetch.MessageView` (CRLF bytes, MIME tree
parsed on first need) is shared by every session until it is evicted, least
recently used first, past ``max_bytes``. A sweep over a big folder (a header
FETCH of everything, a SEARCH of the text) reads through the cache without
filling it (``keep=False``): those messages are not asked for again soon, and
what is (the message a client has open) stays. The server empties it when
the last client goes.

Not here: which messages a command wants (``commands``), the FETCH grammar
(``fetch``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from ..store.spans import SpanReader
from .fetch import MessageView
from .folders import Row

__all__ = ["MessageCache"]

class MessageCache:
    """Message id → :class:`MessageView`, filled from the store's mbox files."""

    def __init__(self, data_dir: Path, *, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._data_dir = data_dir
        self._max_bytes = max_bytes
        self._bytes = 0
        self._views: OrderedDict[int, MessageView] = OrderedDict()

    def views(self, rows: Sequence[Row], *, keep: bool = True) -> list[MessageView]:
        """The views of ``rows``, in order; each file is opened once for the batch.

        ``keep``: add the ones read to the cache (not for a sweep over a folder).
        """
        out: list[MessageView] = []
        cached = self._views
        with SpanReader(self._data_dir) as spans:
            for row in rows:
                view = cached.get(row.message)
                if view is not None:
                    cached.move_to_end(row.message)
                    out.append(view)
                    continue
                view = MessageView(spans.read(row.file, row.offset, row.length))
                if keep:
                    self._add(row.message, view)
                out.append(view)
        return out

    def _add(self, message: int, view: MessageView) -> None:
        # Twice the raw size: the bytes plus, roughly, a parsed tree.
        self._views[message] = view
        self._bytes += 2 * view.size
        while self._bytes > self._max_bytes and len(self._views) > 1:
            _, old = self._views.popitem(last=False)
            self._bytes -= 2 * old.size

    def clear(self) -> None:
        self._views.clear()
        self._bytes = 0
