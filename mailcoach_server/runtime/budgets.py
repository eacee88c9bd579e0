"""Tokens spent, for budgets in tokens (``budget_tokens``): read back from the stored mail.

Every message a model wrote carries ``M-Tokens-Input`` and ``M-Tokens-Output``;
the store keeps the mail, so the tally survives restarts without an index
column of its own, the way the USD budget sums the index's ``cost``. Only
model-written mail of this server counts: the postmaster's own ``Received``
line (always the first header) says ``with local (agent)`` for it, which a
sender cannot forge and which history loaded with ``-m`` (``local (memory)``)
and cloned memories (the ``copies`` file) do not have.

Read lazily and incrementally: nothing is read until a token budget is asked
about, then each new message once.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Final

from ..store.store import Store

__all__ = ["TokenTally", "tokens_of"]

_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
# postmaster.prepare stamps "Received: from ... by <domain> (mailcoach) with local (agent);"
_AGENT_STAMP: Final = re.compile(rb"\AReceived:[^\n]*\(mailcoach\) with local \(agent\)",
                                 re.IGNORECASE)
_TOKENS: Final = re.compile(rb"^M-Tokens-(?:Input|Output):[ \t]*(\d{1,12})[ \t]*\r?$",
                            re.IGNORECASE | re.MULTILINE)


def tokens_of(raw: bytes) -> int:
    """Input + output tokens a stored message cost; 0 unless a model of ours wrote it."""
    match = _HEADER_END.search(raw)
    head = raw[: match.start()] if match else raw
    if not _AGENT_STAMP.match(head):
        return 0
    return sum(int(value) for value in _TOKENS.findall(head))


class TokenTally:
    """Tokens spent per sender (an agent) and in all, kept current from the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._seen = 0  # highest message id already counted
        self._by_sender: defaultdict[str, int] = defaultdict(int)

    def spent(self, sender: str | None = None) -> int:
        """Tokens spent by ``sender``, or by every agent together."""
        self._catch_up()
        if sender is None:
            return sum(self._by_sender.values())
        return self._by_sender.get(sender, 0)

    def _catch_up(self) -> None:
        for number, sender in self._store.senders_after(self._seen, "trace"):
            raw, _ = self._store.read(number)
            self._by_sender[sender] += tokens_of(raw)
            self._seen = number
