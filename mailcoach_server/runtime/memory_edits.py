"""Teaching from a mail client: the plans that edit an agent's memory, and the records of them.

An agent's memory is its ``Agents/<address>`` folder. Taking messages out
(EXPUNGE, MOVE), putting messages in (APPEND, COPY: at the end, as new
copies, because a memory is in UID order and UIDs only grow), making a new
agent (CREATE) and going back to an earlier version (``mailcoach memory
restore``) each become one or more ``WritePlan``s committed like any mail:
durable, in order, told to every IMAP session at once. Nothing is ever
lost: the trace keeps every message, and every edit that is not a plain
addition carries a record, a message from the user to the agent in
``Trace`` that says what changed (``X-Mailcoach-Memory-Edit``); the store
keeps each edit's delta (``store/memory_log.py``), which is the memory's
history. Nobody acts on a record, and it is in no memory.

Messages copied from another agent's folder have that agent's address
rewritten to the new one's (as a new agent ``a.swe1`` gets ``swe1``'s
memory), so a cloned memory speaks in the new agent's voice; APPENDed
messages are stored as the client wrote them, checked like mail that
arrives (a local sender, sane headers and MIME).

Not here: IMAP (``imap.folders`` calls this), what a memory is in the
index (``store``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from ..addresses import address_problem, normalize_address, rewrite_address
from ..errors import SubmitError
from ..postmaster import Submission, new_message_id, prepare
from ..records import new_meta, resolve_thread
from ..store.store import MessageMeta, WritePlan
from .headers import AgentState
from .router import Router

__all__ = ["EDIT_HEADER", "MemoryEditor", "MemoryEditError"]

#: On a record of an edit: what was done ("expunge", "create", "restore").
EDIT_HEADER = "X-Mailcoach-Memory-Edit"
#: Listed by subject in a record; more are counted.
_LISTED = 50


class MemoryEditError(Exception):
    """An edit that cannot be made, with the reason for the client."""


class MemoryEditor:
    """Plans for memory edits over the router's store and config."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.store = router.store
        self.config = router.config

    # -- which parties have editable memories ------------------------------------------

    def is_agent(self, address: str) -> bool:
        party = self.store.parties.get(address)
        return party is not None and party.kind == "agent"

    def new_agent_problem(self, address: str) -> str:
        """Why ``address`` cannot become a new agent ("" if it can)."""
        if normalize_address(address) != address:
            return f"{address[:80]!r} is not an address: {address_problem(address)}"
        if not self.config.is_local(address):
            return f"{address} is not in {self.config.domain}"
        if address in self.store.parties:
            return f"{address} exists already"
        kind = self.router.kind_of(address)
        if kind not in (None, "agent"):
            return f"{address} is the {kind}'s address, not an agent's"
        return ""

    # -- plans -----------------------------------------------------------------------------

    def create(self, address: str, who: str) -> WritePlan:
        """A new agent with an empty memory (filled by the COPY or APPENDs that follow)."""
        problem = self.new_agent_problem(address)
        if problem:
            raise MemoryEditError(problem)
        plan = self._record(address, who, "create", f"New agent {address}",
                            f"{who} made the agent {address} from a mail client; its memory "
                            "is its folder Agents/" + address + ".\n")
        plan.party_states[address] = ("agent", AgentState().to_json())
        return plan

    def remove(self, address: str, messages: Sequence[int], who: str) -> WritePlan:
        """Take ``messages`` out of the memory; the record lists them."""
        memory = self._memory(address)
        gone = set(messages) & set(memory)
        lines = self._listed(sorted(gone))
        plan = self._record(address, who, "expunge",
                            f"Memory edit: {len(gone)} message(s) taken out of {address}",
                            f"{who} took {len(gone)} message(s) out of the memory of {address} "
                            f"from a mail client ({len(memory) - len(gone)} left):\n\n"
                            + lines + "\nThe trace keeps them; `mailcoach memory history "
                            f"{address}` lists the versions.\n")
        plan.memory_rewrites[address] = [m for m in memory if m not in gone]
        return plan

    def restore(self, address: str, version: int, who: str) -> WritePlan:
        """The memory as it was just after ``version`` (a message id), as one edit."""
        memory = self._memory(address)
        wanted = self.store.memory_version(address, version)
        back = len(set(wanted) - set(memory))
        out = len(set(memory) - set(wanted))
        plan = self._record(address, who, "restore",
                            f"Memory edit: {address} restored to version {version}",
                            f"{who} restored the memory of {address} to version {version}: "
                            f"{back} message(s) back, {out} taken out, {len(wanted)} in all.\n")
        plan.memory_rewrites[address] = wanted
        return plan

    def add(self, address: str, raw: bytes, received_at: float | None = None) -> WritePlan:
        """A message from a client (APPEND) at the end of the memory, checked like mail."""
        self._memory(address)
        try:
            sub = prepare(raw, domain=self.config.domain, origin="imap",
                          max_size=self.config.smtp.max_message_size,
                          max_hops=self.config.limits.max_hops)
        except SubmitError as exc:
            raise MemoryEditError(exc.reason) from None
        meta = new_meta(sub, id=self.store.allocate_message_id(),
                        thread=resolve_thread(sub, self.store.find_by_message_id, auto=False),
                        received_at=received_at)
        # In Trace too: it is new to the system, as mail that arrives is
        return WritePlan(raw=sub.raw, meta=meta, file="copies", memory_appends=[address],
                         folders=["Trace"], edit="imap-add")

    def copy(self, address: str, messages: Sequence[int], source: str | None) -> list[WritePlan]:
        """Stored messages (COPY) as new copies at the end of the memory; from another
        agent's folder (``source``), that agent's address becomes this one's."""
        self._memory(address)
        plans = []
        for number in messages:
            raw, meta = self.store.read(number)
            if source is not None and source != address:
                text = rewrite_address(raw.decode("utf-8", "surrogateescape"), source, address)
                raw = text.encode("utf-8", "surrogateescape")
                meta = replace(meta, sender=address if meta.sender == source else meta.sender,
                               recipients=tuple(address if r == source else r
                                                for r in meta.recipients))
            copy = replace(meta, id=self.store.allocate_message_id(), cost=0.0,
                           received_at=time.time())
            plans.append(WritePlan(raw=raw, meta=copy, file="copies",
                                   memory_appends=[address], edit="imap-copy"))
        return plans

    # -- pieces ----------------------------------------------------------------------------

    def _memory(self, address: str) -> list[int]:
        if not self.is_agent(address):
            raise MemoryEditError(f"{address} is not an agent: only agents' memories are edited")
        return list(self.store.parties[address].memory)

    def _listed(self, numbers: list[int]) -> str:
        metas: list[MessageMeta] = self.store.metas(numbers[:_LISTED])
        lines = [f"- {m.sender}: {m.subject or '(no subject)'} {m.message_id}" for m in metas]
        if len(numbers) > _LISTED:
            lines.append(f"- and {len(numbers) - _LISTED} more")
        return "\n".join(lines) + "\n"

    def _record(self, address: str, who: str, how: str, subject: str, body: str) -> WritePlan:
        """The record message of an edit: from ``who`` to the agent, in Trace only."""
        message = EmailMessage(policy=SMTP)
        message["From"] = who
        message["To"] = address
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = new_message_id(self.config.domain)
        message["Auto-Submitted"] = "auto-generated"
        message[EDIT_HEADER] = how
        message.set_content(body, charset="utf-8", cte="8bit")
        sub: Submission = prepare(message.as_bytes(), domain=self.config.domain,
                                  max_size=1 << 30, max_hops=self.config.limits.max_hops,
                                  origin="system")
        meta = new_meta(sub, id=self.store.allocate_message_id(),
                        thread=resolve_thread(sub, self.store.find_by_message_id, auto=False))
        return WritePlan(raw=sub.raw, meta=meta, folders=["Trace"], edit=f"imap-{how}"
                         if how != "restore" else "restore")
