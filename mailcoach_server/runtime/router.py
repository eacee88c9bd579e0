"""The router: what one accepted message changes, as ``WritePlan``s.

To → the party acts on it · Cc and Bcc → remember only · the sender
remembers its own message. Agents apply the control headers (X-Rollback,
X-Expect, ...) before the message joins their memory, an agent sending it
included; X-Drop keeps it out of memory but a To recipient still answers.
A party seen for the first time is registered here; a new agent
``a.swe1@d`` starts with a copy of ``swe1@d``'s memory, addresses rewritten.

Planning is synchronous and reads the store's in-memory state, so plans
made one after the other on the event loop never race.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..addresses import ancestors, rewrite_address
from ..config import Config
from ..errors import SubmitError
from ..notices import notice
from ..postmaster import Submission, new_message_id, prepare
from ..records import Thread, new_meta, resolve_thread
from ..store.store import MessageMeta, Store, WritePlan
from .context import ERROR_HEADER, starts_with_original_primer
from .headers import AgentState, apply_control_headers

__all__ = ["FOLDERS", "Router"]

log = logging.getLogger("mailcoach.router")

#: IMAP folders the router files mail in, with their SPECIAL-USE attribute.
FOLDERS = {"INBOX": "", "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
           "Trace": "\\All"}

#: how far back ``users_question`` follows In-Reply-To
_MAX_ANCESTORS = 10_000


class Router:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.postmaster = f"postmaster@{config.domain}"
        #: auto pilot: a model plays the user
        self.user_is_agent = False

    # -- parties -------------------------------------------------------------

    def kind_of(self, address: str) -> str | None:
        """"user", "agent", "robot", "system", or None for an unknown address."""
        if address == self.config.user:
            return "agent" if self.user_is_agent else "user"
        if address == self.postmaster:
            return "system"
        if self.config.robot_spec(address) is not None:
            return "robot"
        party = self.store.parties.get(address)
        if party is not None:
            return party.kind
        if any(spec.address == address for spec in self.config.agents):
            return "agent"
        return None

    def check_recipient(self, address: str) -> None:
        """Raise the SMTP error for a recipient we will not take."""
        if not self.config.is_local(address):
            raise SubmitError(550, "5.7.1", f"relay denied: {address} is not in "
                              f"{self.config.domain}")
        if self.kind_of(address) is None and not self.config.auto_create_agents:
            raise SubmitError(550, "5.1.1", f"no such mailbox: {address}")

    def clone_plans(self, address: str) -> list[WritePlan]:
        """A new agent's first memory: a copy of its nearest ancestor's, addresses rewritten.

        The first plan carries the new party's state; [] when there is
        nothing to copy (the party is then created by the message's plan).
        """
        if address in self.store.parties or self.kind_of(address) not in (None, "agent"):
            return []
        source = next((a for a in ancestors(address)
                       if a in self.store.parties and self.store.parties[a].kind == "agent"),
                      None)
        if source is None or not self.store.parties[source].memory:
            return []
        parent = self.store.parties[source]
        state = AgentState.from_json(parent.state)
        state.expect = []
        plans = []
        for number in parent.memory:
            raw, meta = self.store.read(number)
            plans.append(self._copy_plan(raw, meta, source, address))
        plans[0].party_states[address] = ("agent", state.to_json())
        log.info("new agent %s starts with %d messages of %s", address, len(plans), source)
        return plans

    def _copy_plan(self, raw: bytes, meta: MessageMeta, old: str, new: str) -> WritePlan:
        text = rewrite_address(raw.decode("utf-8", "surrogateescape"), old, new)
        copy = replace(
            meta,
            id=self.store.allocate_message_id(),
            sender=new if meta.sender == old else meta.sender,
            recipients=tuple(new if r == old else r for r in meta.recipients),
            cost=0.0,  # the ancestor paid for it
        )
        return WritePlan(raw=text.encode("utf-8", "surrogateescape"), meta=copy, file="copies",
                         memory_appends=[new])

    # -- messages ------------------------------------------------------------

    def plan(self, sub: Submission, *, completes: int | None = None, cost: float = 0.0,
             thread: Thread | None = None, act: bool = True) -> list[WritePlan]:
        """Everything ``sub`` changes, in commit order (new parties first)."""
        plans: list[WritePlan] = []
        parties = list(dict.fromkeys((sub.sender, *sub.recipients)))
        for address in parties:
            plans.extend(self.clone_plans(address))
        thread = thread or resolve_thread(sub, self.store.find_by_message_id, auto=sub.auto)
        limit = self.config.limits.max_auto_rounds
        stopped = thread.auto_round >= limit
        meta = new_meta(sub, id=self.store.allocate_message_id(), thread=thread, cost=cost)
        main = WritePlan(raw=sub.raw, meta=meta, completes=completes)
        for address in parties:
            if address not in self.store.parties and not any(
                address in p.party_states for p in plans
            ):
                kind = self.kind_of(address) or "agent"
                state = AgentState().to_json() if kind == "agent" else {}
                main.party_states[address] = (kind, state)
        errored = sub.message[ERROR_HEADER] is not None and sub.auto
        for address in parties:
            self._route_to(address, sub, main, plans, act=act and not (stopped or errored))
        main.folders.append("Trace")
        if self.config.user in sub.recipients:
            main.folders.append("INBOX")
        if sub.sender == self.config.user:
            main.folders.append("Sent")
            main.folder_flags["Sent"] = "\\Seen"
        plans.append(main)
        if stopped and thread.auto_round == limit:
            plans.extend(self._stop_note(sub, limit, meta.thread))
        return plans

    def _kind_planned(self, address: str, main: WritePlan, plans: list[WritePlan]) -> str:
        for plan in (*plans, main):
            if address in plan.party_states:
                return plan.party_states[address][0]
        return self.kind_of(address) or "agent"

    def _route_to(self, address: str, sub: Submission, main: WritePlan,
                  plans: list[WritePlan], *, act: bool) -> None:
        kind = self._kind_planned(address, main, plans)
        acts = act and address in sub.to and address != sub.sender
        # An agent's own message acts on its memory too (the original's Agent.add
        # runs for the sender): X-Pop-Shell on what it sends trims its context.
        if kind != "agent":
            main.memory_appends.append(address)
            if acts and kind == "robot":
                main.deliveries.append((address, None))
            return
        party = self.store.parties.get(address)
        memory = list(party.memory) if party else [
            p.meta.id for p in plans if address in p.memory_appends]
        state_json = (party.state if party else
                      next(p.party_states[address][1] for p in (*plans, main)
                           if address in p.party_states))
        state = AgentState.from_json(state_json)
        primer_stored = ("X-Rollback" in sub.message
                         and self._primer_stored(address, memory, plans))
        effect = apply_control_headers(sub.message, sub.sender, state, memory,
                                       self._touches_robot, primer_stored=primer_stored)
        for warning in effect.warnings:
            log.warning("%s: %s", address, warning)
        if effect.state != state or party is None:
            main.party_states[address] = ("agent", effect.state.to_json())
        if effect.memory is not None:
            main.memory_rewrites[address] = effect.memory
            main.edit = " ".join(h.lower() for h in ("X-Rollback", "X-Pop-Shell")
                                 if h in sub.message) or "headers"
        if effect.store:
            main.memory_appends.append(address)
        # X-Drop still answers, from the memory the headers left (the original's
        # "X-Rollback: N" + "X-Drop": undo and regenerate).
        if acts and not effect.state.expect:
            # a model chosen in the headers (M-Model) wins over the configured one
            model = effect.state.model or self.config.party_settings(address).model
            main.deliveries.append((address, model))

    def memory_note_plan(self, address: str, memory: list[int],
                         note: tuple[str, str]) -> WritePlan:
        """``address``'s memory becomes ``memory`` and then a note from the postmaster.

        The note (``(subject, body)``, e.g. why messages were trimmed) is in the
        trace like any message, at the end of the memory as a shell reply would
        be (so ``Agents/<address>`` stays in UID order); nobody acts on it.
        """
        subject, body = note
        raw = notice(self.postmaster, address, subject, body,
                     message_id=new_message_id(self.config.domain),
                     headers={"X-Mailcoach-Memory": "trimmed"})
        sub = prepare(raw, domain=self.config.domain, max_size=1 << 30,
                      max_hops=self.config.limits.max_hops, origin="system")
        meta = new_meta(sub, id=self.store.allocate_message_id(),
                        thread=resolve_thread(sub, self.store.find_by_message_id, auto=False))
        return WritePlan(raw=sub.raw, meta=meta, folders=["Trace"], edit="trim",
                         memory_rewrites={address: [*memory, meta.id]})

    def users_question(self, meta: MessageMeta) -> MessageMeta | None:
        """The user's message that ``meta`` follows from: itself, or its nearest
        ancestor by In-Reply-To sent by the user (None if the chain has none).

        A reply to the user threads under it: the shell's output and the
        agents' mail in between are not in the user's mailbox.
        """
        current: MessageMeta | None = meta
        seen: set[str] = set()
        for _ in range(_MAX_ANCESTORS):  # a chain of mail is finite, but its headers are not ours
            if current is None:
                return None
            if current.sender == self.config.user:
                return current
            parent = current.in_reply_to
            if not parent or parent in seen:
                return None
            seen.add(parent)
            current = self.store.find_by_message_id(parent)
        return None

    def _primer_stored(self, address: str, memory: list[int], plans: list[WritePlan]) -> bool:
        """Whether ``address``'s memory begins with the original tool's primer."""
        planned = {p.meta.id: p.meta for p in plans}
        first = [planned[n] for n in memory[:2] if n in planned]
        if len(first) < len(memory[:2]):
            first = self.store.metas(memory[:2])
        return starts_with_original_primer([(m.sender, m.subject) for m in first], address)

    def _touches_robot(self, number: int) -> bool:
        metas = self.store.metas([number])
        if not metas:
            return False
        meta = metas[0]
        return any(self.config.robot_spec(a) is not None
                   for a in (meta.sender, *meta.recipients))

    def _stop_note(self, sub: Submission, limit: int, thread: str) -> list[WritePlan]:
        body = (
            f"The thread \"{sub.subject}\" reached {limit} automatic messages in a row "
            "(agents and robots mailing each other with no word from you), so mailcoach "
            f"stopped delivering it. The last message, from {sub.sender}, is stored but "
            "nobody acts on it.\n\nReply in the thread to let it go on, or raise "
            "limits.max_auto_rounds in the config.\n"
        )
        raw = notice(self.postmaster, self.config.user, f"Stopped: {sub.subject}", body,
                     message_id=new_message_id(self.config.domain),
                     in_reply_to=sub.message_id, references=(*sub.references, sub.message_id),
                     headers={ERROR_HEADER: "auto-round limit"})
        note = prepare(raw, domain=self.config.domain, max_size=1 << 30,
                       max_hops=self.config.limits.max_hops, origin="system")
        # Past the limit itself, so the note never calls for another note.
        return self.plan(note, thread=Thread(thread, limit + 1))
