"""The local ``BudgetGate``: what the store says was spent against the configured budgets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..config import Config
from ..store.store import Store
from .budgets import TokenTally

__all__ = ["Spending"]


class Spending:
    """Global and per-agent budgets in USD and tokens; ``set_budget`` changes one at run time.

    Args:
        tell: sends the note that an agent waits (once per agent until the budget changes).
    """

    def __init__(self, config: Config, store: Store, *,
                 tell: Callable[[str, str], Awaitable[None]]) -> None:
        self.config = config
        self.store = store
        self.budget = config.budget
        self.budget_tokens = config.budget_tokens
        self.tokens = TokenTally(store)
        self._tell = tell
        self._event = asyncio.Event()
        self._noted: set[str] = set()

    def problem(self, agent: str) -> str | None:
        """Why ``agent`` may not start a model call now, or None."""
        if self.budget is not None:
            spent = self.store.spent()
            if spent >= self.budget:
                return f"the budget of ${self.budget:.4f} is spent (${spent:.4f})"
        if self.budget_tokens is not None:
            used = self.tokens.spent()
            if used >= self.budget_tokens:
                return f"the budget of {self.budget_tokens} tokens is spent ({used} tokens)"
        settings = self.config.party_settings(agent)
        if settings.budget is not None:
            spent = self.store.spent(agent)
            if spent >= settings.budget:
                return f"{agent}'s budget of ${settings.budget:.4f} is spent (${spent:.4f})"
        if settings.budget_tokens is not None:
            used = self.tokens.spent(agent)
            if used >= settings.budget_tokens:
                return (f"{agent}'s budget of {settings.budget_tokens} tokens is spent "
                        f"({used} tokens)")
        return None

    async def note(self, agent: str, problem: str) -> None:
        if agent in self._noted:
            return
        self._noted.add(agent)
        await self._tell(agent, problem)

    async def changed(self) -> None:
        await self._event.wait()

    def set_budget(self, budget: float | None) -> None:
        """Change the global budget at run time; waiting agents look again."""
        self.budget = budget
        self._event.set()
        self._event = asyncio.Event()
        self._noted.clear()
