"""``ServerBudget``: the ``BudgetGate`` of a worker, from what the parties' Sent folders say.

Every reply a worker sends carries ``M-Cost`` and ``M-Tokens-*`` and is saved in
the party's Sent, on the server: that is the record of what was spent, so a
worker restarted on another machine knows it (``ImapMailbox.spent``). Limits are
``serve``'s: ``budget``/``budget_tokens`` for all the agents this worker serves
together, and each agent's own (``Config.party_settings``). As in ``serve``,
a spent budget holds the mail (it is not dropped) and the user gets one note.
"""

from __future__ import annotations

import asyncio
import logging

from ..config import Config
from .mailbox import ImapMailbox

__all__ = ["ServerBudget"]

log = logging.getLogger("mailcoach.worker")


class ServerBudget:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.mailboxes: dict[str, ImapMailbox] = {}
        self._noted: set[str] = set()
        self._changed = asyncio.Event()  # limits change only with a restart, as in serve

    def problem(self, agent: str) -> str | None:
        config = self.config
        spent_usd = sum(m.spent.usd for m in self.mailboxes.values())
        spent_tokens = sum(m.spent.tokens for m in self.mailboxes.values())
        if config.budget is not None and spent_usd >= config.budget:
            return f"the budget of ${config.budget:.4f} is spent (${spent_usd:.4f})"
        if config.budget_tokens is not None and spent_tokens >= config.budget_tokens:
            return (f"the budget of {config.budget_tokens} tokens is spent "
                    f"({spent_tokens} tokens)")
        own = self.mailboxes.get(agent)
        settings = config.party_settings(agent)
        if own is not None and settings.budget is not None and own.spent.usd >= settings.budget:
            return f"{agent}'s budget of ${settings.budget:.4f} is spent (${own.spent.usd:.4f})"
        if (own is not None and settings.budget_tokens is not None
                and own.spent.tokens >= settings.budget_tokens):
            return (f"{agent}'s budget of {settings.budget_tokens} tokens is spent "
                    f"({own.spent.tokens} tokens)")
        return None

    async def note(self, agent: str, problem: str) -> None:
        if agent in self._noted or agent not in self.mailboxes:
            return
        self._noted.add(agent)
        body = (f"{agent} will not call its model: {problem}.\r\n\r\nIts mail is kept and "
                "waits. Raise the budget in the server config and restart the worker to "
                "go on.\r\n")
        await self.mailboxes[agent].notify_user(f"{agent} waits: budget spent", body)

    async def changed(self) -> None:
        await self._changed.wait()
