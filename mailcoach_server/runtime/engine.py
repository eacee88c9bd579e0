"""The engine: one ``submit`` for every message, and the workers that answer.

Every front end (SMTP, sendmail, the console, queue files) and every reply
of an agent or robot goes through ``Engine.submit``: postmaster checks,
router plans, store commits (fsync), then the acting parties' workers are
woken. Nothing is acted on before it is on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from email.message import EmailMessage, Message
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path

from mailcoach_robots import Post, Robot

from ..addresses import parse_address_list
from ..config import Config
from ..errors import SubmitError
from ..notices import notice
from ..postmaster import new_message_id, prepare
from ..records import header_fields, new_meta, resolve_thread
from ..store import mbox
from ..store.store import MessageMeta, Store, WritePlan
from .budgets import TokenTally
from .context import ERROR_HEADER, primer, stored_turn_text
from .llm import (
    ChatModel,
    ChatTurn,
    LiteLLMModel,
    ModelPrice,
    known_input_limit,
    split_model,
    takes_images,
)
from .local_mailbox import StoreMailbox
from .mailbox import Turn
from .memory_turns import MemoryTurns
from .party import AgentProfile, BeforeModelCall
from .plugins import load_robot
from .router import FOLDERS, Router
from .spending import Spending
from .workers import AgentWorker, RobotWorker, Worker

__all__ = ["Engine", "memory_plans"]

log = logging.getLogger("mailcoach.engine")


class Engine:
    """Create with ``Engine(config, store)``, then ``await start()``; ``await aclose()``."""

    def __init__(self, config: Config, store: Store, model: ChatModel | None = None, *,
                 user_is_agent: bool = False) -> None:
        self.config = config
        self.store = store
        self.router = Router(config, store)
        self.router.user_is_agent = user_is_agent
        self.model: ChatModel = model or LiteLLMModel(
            prices={name: ModelPrice(i, o) for name, (i, o) in config.prices.items()},
            default_price=ModelPrice(*config.default_price) if config.default_price else None,
            templates=config.models.chat_templates,
            timeout=config.models.timeout,
            retries=config.models.retries,
            backoff=config.models.backoff,
            max_in_flight=config.limits.max_models_in_flight,
        )
        self.robots: dict[str, Robot] = {
            spec.address: load_robot(spec, store.data_dir, user=config.user,
                                     post=self._robot_post(spec.address))
            for spec in config.robots
        }
        self.workers: dict[str, Worker] = {}
        self.mailboxes: dict[str, StoreMailbox] = {}
        self.spending = Spending(config, store, tell=self._budget_note)
        self._input_limits: dict[str, int | None] = {}
        self._activity = asyncio.Event()
        #: called before each model call (the console's --debug waits for Enter there)
        self.before_model_call: BeforeModelCall | None = None
        #: each party's memory as turns, kept between calls (a memory grows at its end)
        self.memory_turns = MemoryTurns(self.turn_of)

    # -- life cycle ----------------------------------------------------------

    async def start(self, *, shipped_memory: bool = True) -> None:
        """Create folders, give configured agents their shipped memory, resume pending work."""
        for folder, special in FOLDERS.items():
            self.store.ensure_folder(folder, special)
        plans: list[WritePlan] = []
        for spec in self.config.agents:
            if shipped_memory and spec.address not in self.store.parties:
                shipped = _shipped_memory(spec.address, self.config.domain)
                if shipped is not None:
                    rewrite = [("@localdomain", "@" + self.config.domain)]
                    plans.extend(memory_plans(self.store, spec.address, shipped, rewrite))
        if plans:
            await self.store.commit_many(plans)
        for party in self.store.parties_with_pending():
            self.notify(party)
        for robot in self.robots.values():
            await robot.start()

    async def aclose(self) -> None:
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for robot in self.robots.values():
            try:
                await robot.aclose()
            except Exception:
                log.exception("closing robot %s", robot.context.address)
        close_model = getattr(self.model, "aclose", None)
        if close_model is not None:
            await close_model()

    # -- submitting ----------------------------------------------------------

    async def submit(
        self,
        raw: bytes,
        *,
        origin: str,
        envelope_rcpts: list[str] | None = None,
        completes: int | None = None,
        cost: float = 0.0,
        received_from: str = "localhost",
        act: bool = True,
    ) -> MessageMeta:
        """Accept one message: check, stamp, store durably, wake who must act.

        Raises:
            SubmitError: the message was refused (nothing was stored).

        With ``act=False`` the message is only remembered (loading history).
        """
        sub = prepare(
            raw,
            domain=self.config.domain,
            max_size=self.config.smtp.max_message_size,
            max_hops=self.config.limits.max_hops,
            origin=origin,
            received_from=received_from,
            envelope_rcpts=envelope_rcpts,
        )
        for address in sub.recipients:
            self.router.check_recipient(address)
        plans = self.router.plan(sub, completes=completes, cost=cost, act=act)
        await self.store.commit_many(plans)
        stored = [plan for plan in plans if plan.raw and plan.file == "trace"]
        for plan in stored:
            for party, _ in plan.deliveries:
                self.notify(party)
        if log.isEnabledFor(logging.INFO):  # after the caller has answered (the SMTP 250)
            asyncio.get_running_loop().call_soon(_log_accepted, stored, origin)
        return next(p.meta for p in plans if p.raw is sub.raw)

    def _robot_post(self, address: str) -> Post:
        """How robot ``address`` sends mail of its own: From forced, submitted as a robot's."""
        async def post(message: EmailMessage) -> None:
            del message["From"]
            message["From"] = address
            await self.submit(message.as_bytes(), origin="robot")
        return post

    def notify(self, party: str) -> None:
        """Wake ``party``'s worker, starting one if it has none."""
        worker = self.workers.get(party)
        if worker is not None and worker.running:
            self.mailboxes[party].notify()
            return
        kind = self.router.kind_of(party)
        if kind == "robot" and party not in self.robots:
            log.error("no robot is configured for %s; its mail waits", party)
            return
        mailbox = StoreMailbox(party, self.store, submit=self.submit, turns=self.memory_turns,
                               human_for=self._human_for, answers=self.reply_answers,
                               rewrite=self._rewrite_memory)
        self.mailboxes[party] = mailbox
        if kind == "robot":
            worker = RobotWorker(mailbox, self.robots[party], on_change=self.worker_changed)
        else:
            worker = AgentWorker(mailbox, self._profile(party), model=self.model,
                                 budget=self.spending, before_call=self._before_model_call,
                                 on_change=self.worker_changed)
        self.workers[party] = worker.start()

    def _profile(self, agent: str) -> AgentProfile:
        config = self.config
        settings = config.party_settings(agent)
        system = primer(agent, domain=config.domain, user=config.user,
                        robots=[(r.address, r.kind) for r in config.robots],
                        system=settings.system)
        return AgentProfile(address=agent, system=system, model=settings.model,
                            robots=frozenset(r.address for r in config.robots),
                            window_of=self._input_limit, keep_first=config.limits.keep_first,
                            vision_of=self._takes_images)

    def _takes_images(self, spec: str) -> bool:
        return takes_images(spec, self.config.models.vision)

    def _input_limit(self, spec: str) -> int | None:
        """Tokens a call to ``spec`` may send: its window less room for the answer."""
        if spec not in self._input_limits:
            name = split_model(spec)[0].lower()
            window = next((tokens for pattern, tokens in self.config.models.context_windows.items()
                           if fnmatchcase(name, pattern.lower())
                           or fnmatchcase(spec.lower(), pattern.lower())),
                          None) or known_input_limit(spec)
            self._input_limits[spec] = (None if window is None
                                        else window - max(256, window // 8))
        return self._input_limits[spec]

    async def _before_model_call(self, agent: str, model: str, turns: list[ChatTurn]) -> None:
        # Looked up at each call: the console sets it after the engine started.
        if self.before_model_call is not None:
            await self.before_model_call(agent, model, turns)

    async def _rewrite_memory(self, address: str, memory: list[int],
                              note: tuple[str, str]) -> None:
        await self.store.commit(self.router.memory_note_plan(address, memory, note))

    def _human_for(self, sender: str) -> str:
        """Mail between agents and robots that fails is told to the user."""
        return sender if self.router.kind_of(sender) == "user" else self.config.user

    def turn_of(self, number: int) -> Turn:
        """(sender, text) of a stored message as a model sees it (read and parsed each time;
        ``memory_turns`` keeps them). Safe in a worker thread: the store's reads are."""
        raw, meta = self.store.read(number)
        return meta.sender, stored_turn_text(raw,
                                             attachment_text=self.config.limits.attachment_text)

    def reply_answers(self, reply: Message, meta: MessageMeta) -> str | None:
        """What a reply to ``meta`` threads under, if not ``meta`` itself.

        A reply that goes to the user answers the user's question, the last
        message of the user in the chain that led to ``meta``; the shell
        output or agent mail in between never reached the user's mailbox.
        """
        user = self.config.user
        if meta.sender == user:
            return None
        recipients, _ = parse_address_list(reply.get_all("To", []) + reply.get_all("Cc", []))
        if user not in recipients:
            return None
        question = self.router.users_question(meta)
        return question.message_id if question is not None and question.message_id else None

    def check_recipient(self, address: str) -> None:
        """For SMTP RCPT TO: raise the SubmitError a recipient would get."""
        self.router.check_recipient(address)

    # -- budgets -------------------------------------------------------------

    @property
    def tokens(self) -> TokenTally:
        return self.spending.tokens

    def budget_problem(self, agent: str) -> str | None:
        """Why ``agent`` may not start a model call now, or None."""
        return self.spending.problem(agent)

    def set_budget(self, budget: float | None) -> None:
        """Change the global budget at run time; waiting agents look again."""
        self.spending.set_budget(budget)

    async def _budget_note(self, agent: str, problem: str) -> None:
        body = (
            f"{agent} will not call its model: {problem}.\n\n"
            "Its mail is kept and waits. Raise the budget (budget:, budget_tokens: or "
            "agents.defaults.budget in the config, or --budget, --budget-tokens) and restart "
            "to go on.\n"
        )
        raw = notice(self.router.postmaster, self.config.user,
                     f"{agent} waits: budget spent", body,
                     message_id=new_message_id(self.config.domain),
                     headers={ERROR_HEADER: "budget"})
        try:
            await self.submit(raw, origin="system")
        except SubmitError:
            log.exception("cannot send the budget note")

    # -- waiting (console, queue files, tests) -------------------------------

    def idle(self) -> bool:
        """No worker is acting (workers blocked on a budget count as idle)."""
        return all(not w.busy or w.blocked or not w.running for w in self.workers.values())

    def cancel_model_calls(self) -> int:
        """Cancel what every agent is doing now; each sender gets a note. Returns how many."""
        return sum(1 for w in self.workers.values()
                   if isinstance(w, AgentWorker) and w.cancel_current())

    def blocked(self) -> list[str]:
        """Agents whose mail waits for budget."""
        return [a for a, w in self.workers.items() if w.blocked]

    def worker_changed(self) -> None:
        """Workers call this when they start or stop acting."""
        self._activity.set()

    async def wait_idle(self) -> None:
        """Wait until every worker is idle (bound it with ``asyncio.timeout``)."""
        while not self.idle():
            self._activity.clear()
            await self._activity.wait()


def _shipped_memory(address: str, domain: str) -> Path | None:
    """The memory mailcoach ships for a default agent (written for @localdomain)."""
    local, _, at = address.partition("@")
    if at != domain:
        return None
    candidate = resources.files("mailcoach_server.defaults").joinpath(
        "memory", f"{local}@localdomain.mbox")
    return Path(str(candidate)) if candidate.is_file() else None


def memory_plans(store: Store, address: str, path: Path | None,
                 rewrite: Iterable[tuple[str, str]] = ()) -> list[WritePlan]:
    """Plans that give a new party ``address`` the memory in an mbox file.

    ``rewrite`` pairs (old, new) are replaced in every message, e.g. a
    shipped memory written for ``@localdomain`` used in another domain.
    """
    plans: list[WritePlan] = []
    earlier: dict[str, MessageMeta] = {}
    if path is not None:
        for raw in mbox.read(path):  # mboxrd un-quoted; the original's files verbatim
            for old, new in rewrite:
                raw = raw.replace(old.encode(), new.encode())
            plans.append(_copy_plan(store, raw, address, earlier))
    if plans:
        plans[0].party_states[address] = ("agent", {"model": None, "expect": []})
    return plans


def _copy_plan(store: Store, raw: bytes, address: str,
               earlier: dict[str, MessageMeta]) -> WritePlan:
    # Threads follow the earlier messages of the same file, not yet in the store.
    fields = header_fields(raw)
    thread = resolve_thread(
        fields, lambda mid: earlier.get(mid) or store.find_by_message_id(mid), auto=False)
    meta = new_meta(fields, id=store.allocate_message_id(), thread=thread)
    if meta.message_id:
        earlier.setdefault(meta.message_id, meta)
    return WritePlan(raw=raw, meta=meta, file="copies", memory_appends=[address])


def _log_accepted(plans: list[WritePlan], origin: str) -> None:
    """One INFO line a message (operators read it); a line per delivery only at DEBUG:
    a message to a hundred agents would otherwise write a hundred and one."""
    delivering = log.isEnabledFor(logging.DEBUG)
    for plan in plans:
        meta = plan.meta
        log.info("accepted %s from %s to %s (%s) %r", meta.message_id, meta.sender,
                 ", ".join(meta.recipients), origin, meta.subject)
        if delivering:
            for party, model in plan.deliveries:
                log.debug("deliver %s to %s%s", meta.message_id, party,
                          f" (model {model})" if model else "")
