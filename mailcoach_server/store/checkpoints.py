"""WAL checkpoints in a thread and a connection of their own, off the writer's commits.

SQLite checkpoints the WAL inside the commit that makes it longer than
``wal_autocheckpoint`` pages: that commit then copies pages into the
database and fsyncs it while the group's acknowledgement waits. The
writer's connection has a high limit instead (``schema.connect``, a safety
net), and after its commits ``Checkpointer.poke()`` starts a PASSIVE
checkpoint here every ``every`` commits, which blocks neither the writer
nor readers. Durability is SQLite's either way: a checkpoint only copies
committed, synced frames.

Not here: what is committed (``store``), the schema (``schema``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

__all__ = ["Checkpointer"]

log = logging.getLogger(__name__)


class Checkpointer:
    """``poke()`` from the writer thread after each commit; ``close()`` when done."""

    def __init__(self, db_path: Path, every: int = 32) -> None:
        self._path = db_path
        self._every = every
        self._commits = 0
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="store-checkpoint")
        self._running: Future[None] | None = None
        self._conn: sqlite3.Connection | None = None  # made and used in its thread

    def poke(self) -> None:
        """A commit happened: start a checkpoint if enough did and none is running."""
        self._commits += 1
        if self._commits < self._every or (self._running and not self._running.done()):
            return
        self._commits = 0
        self._running = self._executor.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, isolation_level=None,
                                             check_same_thread=False)
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the next one, or SQLite's own, tries again
            log.warning("WAL checkpoint failed: %s", exc)

    def shrink(self, then: Callable[[], None] | None = None) -> None:
        """Its connection's page cache back to the allocator, after a running checkpoint;
        then ``then``, in its thread."""
        def run() -> None:
            if self._conn is not None:
                self._conn.execute("PRAGMA shrink_memory")
            if then is not None:
                then()
        self._executor.submit(run)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
