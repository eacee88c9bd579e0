"""Who serves a party: a lease kept on the IMAP server with CONDSTORE (RFC 7162).

The party's state folder holds one lease message. Its MODSEQ is the lease's
version: the holder renews by flipping the message's keyword between
``$MCHeld1`` and ``$MCHeld2`` with ``UID STORE ... (UNCHANGEDSINCE <the
MODSEQ it wrote last>)``, every third of ``lease_seconds``. The server does the
compare-and-set, so of two workers only one wins each step:

* a worker sees ``$MCReleased`` (a clean stop, or a new lease): it takes the
  lease at once, conditionally;
* else it watches the MODSEQ on its own clock; unchanged for ``lease_seconds``
  means the holder is dead (kill -9, machine gone), and it takes over,
  conditionally. No clocks are compared across machines;
* a holder whose conditional STORE fails (``[MODIFIED]``) has lost the lease
  and stops acting at once; it also checks before every step with effects
  outside the server (a robot run, an SMTP submission).

A holder stalled longer than ``lease_seconds`` (a paused VM) can overlap one
step with its successor; the deterministic reply Message-ID and the look in
Sent before acting keep that from making a second reply.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .connection import ImapConnection

__all__ = ["LEASE_HEADER", "Lease", "LeaseLost"]

log = logging.getLogger("mailcoach.worker.lease")

LEASE_HEADER = "X-Mailcoach-Lease"
_HELD = ("$MCHeld1", "$MCHeld2")
_RELEASED = "$MCReleased"


class LeaseLost(Exception):
    """Another worker holds this party now: stop acting for it."""


class Lease:
    def __init__(self, party: str, folder: str, seconds: float) -> None:
        self.party = party
        self.folder = folder
        self.seconds = seconds
        self.held = False
        self._uid = 0
        self._modseq = 0  # the MODSEQ we wrote last, while held
        self._renewed = 0.0  # monotonic time of the last successful write

    @property
    def renew_every(self) -> float:
        return self.seconds / 3

    @property
    def due(self) -> bool:
        return self.held and time.monotonic() - self._renewed >= self.renew_every

    async def _lease_message(self, conn: ImapConnection) -> tuple[int, int, frozenset[str]]:
        """(UID, MODSEQ, flags) of the lease message, made if there is none yet."""
        await conn.select(self.folder, create=True)
        uids = await conn.uid_search("HEADER", LEASE_HEADER, self.party)
        if not uids:
            raw = (f"From: {self.party}\r\nTo: {self.party}\r\nSubject: mailcoach worker lease"
                   f"\r\n{LEASE_HEADER}: {self.party}\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n\r\n"
                   "The worker serving this mailbox keeps this message's flags changing.\r\n"
                   "Do not delete it while a worker runs.\r\n").encode()
            await conn.append(raw, self.folder, flags=("\\Seen", _RELEASED))
            uids = await conn.uid_search("HEADER", LEASE_HEADER, self.party)
        uid = uids[0]  # two made at once: everyone uses the first
        fetched = await conn.uid_fetch(str(uid), "(UID FLAGS MODSEQ)")
        if not fetched:
            return uid, 0, frozenset()
        return uid, fetched[0].modseq, fetched[0].flags

    async def _write(self, conn: ImapConnection, uid: int, since: int, flag: str) -> bool:
        ok, fetched = await conn.uid_store(str(uid), f"(UNCHANGEDSINCE {since})", "FLAGS",
                                           f"(\\Seen {flag})")
        if not ok:
            return False
        modseq = next((f.modseq for f in fetched if f.uid == uid and f.modseq), 0)
        if not modseq:
            again = await conn.uid_fetch(str(uid), "(UID MODSEQ)")
            modseq = again[0].modseq if again else 0
        self._uid, self._modseq, self._renewed = uid, modseq, time.monotonic()
        return True

    async def try_take(self, conn: ImapConnection, watched: dict[str, float]) -> bool:
        """One look: take the lease if it is free or its holder has gone quiet.

        ``watched`` carries the MODSEQ seen and since when across looks.
        """
        if "CONDSTORE" not in conn.capabilities:
            log.warning("%s: the server has no CONDSTORE, so no lease: run one worker "
                        "per party", self.party)
            self.held = True
            return True
        uid, modseq, flags = await self._lease_message(conn)
        now = time.monotonic()
        if watched.get("modseq") != modseq:
            watched["modseq"], watched["since"] = modseq, now
        quiet = now - watched["since"] >= self.seconds
        if _RELEASED in flags or quiet or not (flags & set(_HELD)):
            if await self._write(conn, uid, modseq, _HELD[0]):
                self.held = True
                log.info("%s: lease taken%s", self.party,
                         " from a worker that went quiet" if quiet else "")
                return True
        return False

    async def acquire(self, conn: ImapConnection) -> None:
        """Wait until this worker holds the lease."""
        watched: dict[str, float] = {}
        while True:  # polling the server is the point: its MODSEQ is the holder's pulse
            if await self.try_take(conn, watched):
                return
            await asyncio.sleep(min(self.renew_every, 5.0))

    async def renew(self, conn: ImapConnection) -> None:
        """Prove the lease is still ours by writing it again.

        Raises:
            LeaseLost: another worker wrote it since.
        """
        if "CONDSTORE" not in conn.capabilities:
            return
        if not self.held:
            raise LeaseLost(f"{self.party}: the lease is not held")
        await conn.select(self.folder, create=True)
        fetched = await conn.uid_fetch(str(self._uid), "(UID FLAGS MODSEQ)")
        current = fetched[0] if fetched else None
        flag = _HELD[1] if current is not None and _HELD[0] in current.flags else _HELD[0]
        if current is None or not await self._write(conn, self._uid, self._modseq, flag):
            self.held = False
            raise LeaseLost(f"{self.party}: another worker holds the lease now")

    async def release(self, conn: ImapConnection) -> None:
        """Give the lease back (a clean stop): the next worker takes it without waiting."""
        if not self.held or "CONDSTORE" not in conn.capabilities:
            return
        self.held = False
        await conn.select(self.folder, create=True)
        await self._write(conn, self._uid, self._modseq, _RELEASED)
