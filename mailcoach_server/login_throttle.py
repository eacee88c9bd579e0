"""Failed logins slowed per client address, shared by SMTP AUTH and IMAP LOGIN.

After a wrong password from an address, that address's answers are spaced
out: the failure is answered after ``delay`` seconds, the next one after
twice that, up to ``max_delay``. Answers are queued per address (a client
with several connections at once waits its turn), but no answer waits more
than ``max_delay``: a login never hangs. A right password waits for answers
already queued, then clears the address. An address with no failure for
``forget_after`` seconds starts over.

Waiting is ``asyncio.sleep``: other clients and the event loop go on. IPv6
clients are grouped by /64, the block one host usually has.

Not here: checking the password (``credentials``) or any protocol text.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["ClientState", "LoginThrottle"]

#: seconds without a failure after which an address is forgotten
FORGET_AFTER: Final = 600.0
#: prune forgotten addresses once this many are tracked
_PRUNE_AT: Final = 1024


@dataclass(frozen=True, slots=True)
class ClientState:
    """What the throttle remembers about one client address."""

    #: failed logins since the last success (or since it was forgotten)
    failures: int
    #: the delay given to the last failure, in seconds
    last_delay: float
    #: when (``time.monotonic()``) the last queued answer goes out
    answer_at: float


class LoginThrottle:
    """Spaces out login answers to addresses that failed.

    Args:
        delay: seconds before answering a first failure; 0 turns the throttle off.
        max_delay: the cap of the doubling.
        forget_after: seconds without a failure after which an address starts over.
        clock: monotonic seconds; must be the clock ``asyncio.sleep`` waits on.
    """

    def __init__(self, *, delay: float = 1.0, max_delay: float = 8.0,
                 forget_after: float = FORGET_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self.max_delay = max(delay, max_delay)
        self.forget_after = forget_after
        self._clock = clock
        self._clients: dict[str, ClientState] = {}

    def state(self, client: str) -> ClientState | None:
        """What is remembered about ``client`` (an IP address), or None."""
        key = _key(client)
        entry = self._clients.get(key)
        if entry is not None and self._forgotten(entry, self._clock()):
            del self._clients[key]
            return None
        return entry

    def retry_after(self, client: str) -> float:
        """Seconds until an answer to ``client`` could go out now (0: at once)."""
        entry = self.state(client)
        return max(0.0, entry.answer_at - self._clock()) if entry else 0.0

    async def failed(self, client: str) -> float:
        """Record a wrong password from ``client``; return once its answer may go.

        Returns:
            The seconds this answer waited.
        """
        now = self._clock()
        entry = self.state(client)
        failures = entry.failures + 1 if entry else 1
        delay = min(self.delay * 2 ** (failures - 1), self.max_delay) if self.delay > 0 else 0.0
        queued = max(now, entry.answer_at if entry else now) + delay
        answer_at = min(queued, now + self.max_delay)
        self._clients[_key(client)] = ClientState(failures, delay, answer_at)
        if len(self._clients) > _PRUNE_AT:
            self._prune(now)
        return await self._until(answer_at, now)

    async def succeeded(self, client: str) -> float:
        """A right password: wait for answers already queued, then forget ``client``."""
        now = self._clock()
        entry = self.state(client)
        if entry is None:
            return 0.0
        waited = await self._until(entry.answer_at, now)
        current = self._clients.get(_key(client))
        if current is not None and current.answer_at <= entry.answer_at:
            del self._clients[_key(client)]  # no new failure was queued meanwhile
        return waited

    async def _until(self, answer_at: float, start: float) -> float:
        # A deadline, not a condition: asyncio may wake a timer up to its clock
        # resolution early, and an answer must never go before its time.
        while (remaining := answer_at - self._clock()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
        return max(0.0, answer_at - start)

    def _forgotten(self, entry: ClientState, now: float) -> bool:
        return now - entry.answer_at > self.forget_after

    def _prune(self, now: float) -> None:
        for key in [k for k, e in self._clients.items() if self._forgotten(e, now)]:
            del self._clients[key]


def _key(client: str) -> str:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client  # not an IP (a Unix socket, a test): itself
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
