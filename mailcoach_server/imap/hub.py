"""Telling selected sessions that their folder changed, as it happens.

The store calls :meth:`Hub._on_commit` on the event loop right after every
group commit, with the plans it wrote: their ``folders`` and the parties
whose memory grew (``Agents/<address>``) got new mail, and a rewritten
memory (X-Rollback) means "look again". Sessions tell the hub about the
flags they stored and the messages they expunged, and it passes those on
to the other sessions with the folder selected. A notice only records what
changed and sets an event; the session turns it into responses when it may
(at once in IDLE, else with its next command), so a notice costs nothing
on the commit path. That is how new mail reaches IDLE within milliseconds.

An expunge is told twice: the rows first (:meth:`Hub.expunging`, before they
leave the index, so another session can still fetch what it was told about),
then the UIDs once they are gone (:meth:`Hub.expunged`). A session reads its
snapshot off the event loop before it watches the folder; :meth:`Hub.version`
counts the notices that take messages away, so SELECT can tell that one came
meanwhile and look again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ..store.store import Store, WritePlan
from .folders import AGENTS, DELIMITER, Row

__all__ = ["Hub", "Watcher"]


class Watcher(Protocol):
    """A selected session, as the hub sees it."""

    def on_appended(self) -> None: ...
    def on_rescan(self) -> None: ...
    def on_flags(self, changes: dict[int, tuple[str, ...]]) -> None: ...
    def on_expunging(self, rows: Sequence[Row]) -> None: ...
    def on_expunged(self, uids: Sequence[int]) -> None: ...


class Hub:
    """Who has which folder selected, and telling them when it changes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._watchers: dict[str, set[Watcher]] = {}
        #: folder -> notices so far that took messages away (expunges, rescans)
        self._versions: dict[str, int] = {}
        self._listener: Callable[[list[WritePlan]], None] = self._on_commit
        store.listeners.append(self._listener)

    def close(self) -> None:
        if self._listener in self._store.listeners:
            self._store.listeners.remove(self._listener)
        self._watchers.clear()

    def watch(self, name: str, watcher: Watcher) -> None:
        self._watchers.setdefault(name, set()).add(watcher)

    def unwatch(self, name: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(name)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[name]

    def version(self, name: str) -> int:
        """Changes to ``name`` so far that a snapshot read before them would miss."""
        return self._versions.get(name, 0)

    def _removing(self, name: str) -> None:
        self._versions[name] = self._versions.get(name, 0) + 1

    def _each(self, name: str, origin: Any = None) -> list[Watcher]:
        return [w for w in self._watchers.get(name, ()) if w is not origin]

    def _on_commit(self, plans: list[WritePlan]) -> None:
        """Store listener: runs on the event loop right after each group commit."""
        appended: set[str] = set()
        rescan: set[str] = set()
        if not plans:  # add_to_folder (COPY): cheap to ask every real folder
            appended.update(n for n in self._watchers if not n.startswith(AGENTS + DELIMITER))
        for plan in plans:
            appended.update(plan.folders)
            appended.update(f"{AGENTS}{DELIMITER}{p}" for p in plan.memory_appends)
            rescan.update(f"{AGENTS}{DELIMITER}{p}" for p in plan.memory_rewrites)
        for name in appended - rescan:
            for watcher in self._each(name):
                watcher.on_appended()
        for name in rescan:
            self._removing(name)
            for watcher in self._each(name):
                watcher.on_rescan()

    def appended(self, name: str) -> None:
        for watcher in self._each(name):
            watcher.on_appended()

    def flags_changed(self, name: str, changes: dict[int, tuple[str, ...]],
                      origin: Any = None) -> None:
        for watcher in self._each(name, origin):
            watcher.on_flags(changes)

    def watched(self, name: str, origin: Any = None) -> bool:
        """Does a session other than ``origin`` have ``name`` selected?"""
        return bool(self._each(name, origin))

    def expunging(self, name: str, rows: Sequence[Row], origin: Any = None) -> None:
        self._removing(name)
        for watcher in self._each(name, origin):
            watcher.on_expunging(rows)

    def expunged(self, name: str, uids: Sequence[int], origin: Any = None) -> None:
        self._removing(name)
        for watcher in self._each(name, origin):
            watcher.on_expunged(uids)

    def gone(self, names: Iterable[str]) -> None:
        """Folders deleted or renamed away: their sessions see every message expunged."""
        for name in names:
            self._removing(name)
            for watcher in self._each(name):
                watcher.on_rescan()
