"""Message bytes for FETCH and SEARCH: read in batches, kept in a bounded cache.

A folder row already says where a message is (file, offset, length), so a
batch of messages costs a ``pread`` per run of neighbours and no SQL (the store's
:class:`~mailcoach_server.store.spans.SpanReader` reads them). Messages never change
once stored, which makes the cache trivially correct: a
:class:`~mailcoach_server.imap.fetch.MessageView` (CRLF bytes, MIME tree
parsed on first need) is shared by every session until it is evicted, least
recently used first, past ``max_bytes``. A sweep over a big folder (a header
FETCH of everything, a SEARCH of the text) reads through the cache without
filling it (``keep=False``): those messages are not asked for again soon, and
what is (the message a client has open) stays. The server empties it when
the last client goes, and closes the header cache a second later (a client that
comes straight back finds it open, its pages read).

A FETCH that needs no body (size, header fields, ENVELOPE, even
BODYSTRUCTURE once made) is answered from the persistent header cache
(``headers.sqlite``, :mod:`~mailcoach_server.store.header_cache`) where it
has the messages, one batch a query; what a batch had to read from the
messages goes back into it (:meth:`MessageCache.remember`), so the first
header FETCH of a folder fills it and the next ones open no message file.

Not here: which messages a command wants (``commands``), the FETCH grammar
(``fetch``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from ..store.header_cache import CACHE_FILES, CachedHeader, HeaderCache, Key
from ..store.spans import SpanReader
from .fetch import ITEMS_VERSION, FetchPlan, MessageView
from .folders import Row

__all__ = ["MessageCache"]

_EMPTY = MessageView(b"")  # a place in a batch, until its message is read


def _key(row: Row) -> Key:
    return row.message, row.received_at


class MessageCache:
    """Message id → :class:`MessageView`, filled from the store's mbox files.

    Beside it, the persistent :class:`~mailcoach_server.store.header_cache.HeaderCache`
    (``headers.sqlite``) answers plans that need no body: size, header block and
    the items made from it, so a header FETCH of a big folder reads no message twice.
    """

    def __init__(self, data_dir: Path, *, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._data_dir = data_dir
        self._max_bytes = max_bytes
        self._bytes = 0
        self._views: OrderedDict[int, MessageView] = OrderedDict()
        self.headers = HeaderCache(data_dir / CACHE_FILES[0], items_version=ITEMS_VERSION)

    def entries(self, keys: Sequence[Key]) -> dict[int, CachedHeader]:
        """The header cache's entries of ``(message id, received_at)``, by message id
        (those it has)."""
        return self.headers.get(keys)

    def views(self, rows: Sequence[Row], *, keep: bool = True,
              plan: FetchPlan | None = None) -> list[MessageView]:
        """The views of ``rows``, in order; each file is opened once for the batch.

        ``keep``: add the ones read to the cache (not for a sweep over a folder).
        ``plan``: the FETCH they are for; when it needs no body, views come from
        the header cache where it has them (see :meth:`remember`).
        """
        out: list[MessageView] = []
        cached = self._views
        keys: frozenset[str] = frozenset()
        tree_keys, needs_block = keys, False
        entries: dict[int, CachedHeader] = {}
        if plan is not None and plan.from_header:
            entries = self.entries([_key(row) for row in rows])
            keys, tree_keys, needs_block = frozenset(plan.cache_keys), plan.tree_keys, \
                plan.needs_block
        unread: list[int] = []  # positions in out of the messages read from their files
        for row in rows:
            view = cached.get(row.message)
            if view is not None:
                cached.move_to_end(row.message)
                out.append(view)
                continue
            entry = entries.get(row.message)
            # An entry answers with its items; with its header block it also makes
            # the items it lacks (all but the body structure's).
            if entry is not None and (
                    keys <= entry.items.keys() and not needs_block
                    or entry.block is not None and tree_keys <= entry.items.keys()):
                # never kept in memory: it has no body
                out.append(MessageView.from_cache(entry.size, entry.block, entry.items))
                continue
            unread.append(len(out))
            out.append(_EMPTY)
        if unread:
            with SpanReader(self._data_dir) as spans:
                read = spans.read_many([(rows[at].file, rows[at].offset, rows[at].length)
                                        for at in unread])
            for at, raw in zip(unread, read, strict=True):
                view = out[at] = MessageView(raw)
                if keep:
                    self._add(rows[at].message, view)
        return out

    def remember(self, rows: Sequence[Row], views: Sequence[MessageView], plan: FetchPlan) -> None:
        """Keep in the header cache what answering ``plan`` made that it lacks: the
        entries of messages read from their files, and items new to an entry."""
        if not plan.from_header:
            return  # the cache could not answer it next time either
        keys = plan.cache_keys
        entries = []
        for row, view in zip(rows, views, strict=True):
            if view.cached is not None and view.cached.issuperset(keys):
                continue  # the usual case once the cache is warm
            made = view.computed(keys)
            if view.cached is not None and not made:
                continue
            # The block only when a client asks for it as such (BODY[HEADER]): the items
            # a client fetches are a fraction of it, and a new one is made from the message.
            block = view.header_block if plan.needs_block else view.cached_block
            view.cached = (view.cached or frozenset()).union(key for key, _ in made)
            entries.append((_key(row), CachedHeader(view.size, block, view.items(view.cached))))
        self.headers.put(entries)

    def _add(self, message: int, view: MessageView) -> None:
        # Twice the raw size: the bytes plus, roughly, a parsed tree.
        self._views[message] = view
        self._bytes += 2 * view.size
        while self._bytes > self._max_bytes and len(self._views) > 1:
            _, old = self._views.popitem(last=False)
            self._bytes -= 2 * old.size

    def forget_views(self) -> None:
        """Forget the views (the messages' bytes): the header cache stays open."""
        self._views.clear()
        self._bytes = 0

    def clear(self) -> None:
        """Forget the views and close the header cache's file (it reopens on next use)."""
        self.forget_views()
        self.headers.close()
