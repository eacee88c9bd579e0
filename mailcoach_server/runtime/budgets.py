"""Tokens spent, for budgets in tokens (``budget_tokens``): a query over the index.

The store records each message's input + output tokens at commit (its
``tokens`` column, from the ``M-Tokens-*`` headers of model replies, see
:mod:`..store.tokens`), so the tally survives restarts the way the USD
budget, which sums the index's ``cost``, does, and no stored mail is read again.

Incremental: each call sums only the messages indexed since the last one
(a range of ids, so its cost does not grow with the store).
"""

from __future__ import annotations

from collections import defaultdict

from ..store.store import Store
from ..store.tokens import tokens_of

__all__ = ["TokenTally", "tokens_of"]


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
        self._seen, spent = self._store.tokens_after(self._seen)
        for sender, tokens in spent.items():
            self._by_sender[sender] += tokens
