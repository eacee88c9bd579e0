"""``mailcoach worker --config worker.yaml``: serve parties from their mailboxes on a server.

For each party: log in (a refused login, or TLS that cannot be had as
configured, stops the worker with a clear error; so does either found by one
SMTP submission check at start; an unreachable server is retried with
backoff, each try logged), take its
lease, then run the runtime's own ``AgentWorker`` or ``RobotWorker`` over an
``ImapMailbox`` while a keeper renews the lease. A lost lease stops that
party's worker at once and the loop goes back to waiting for the lease.
SIGINT/SIGTERM stop cleanly: leases are released, so another worker takes
over without waiting for them to expire.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from ..errors import ConfigError, MailcoachError
from ..runtime.context import primer
from ..runtime.llm import ChatModel, LiteLLMModel, ModelPrice
from ..runtime.party import AgentProfile
from ..runtime.plugins import load_robot
from ..runtime.workers import AgentWorker, RobotWorker, Worker
from .budget import ServerBudget
from .connection import LoginRefused
from .lease import LeaseLost
from .mailbox import ImapMailbox
from .settings import PartyLogin, WorkerSettings, load_worker_settings
from .submit import SmtpSubmitter
from .tls import TlsUnavailable

__all__ = ["main", "run_worker"]

log = logging.getLogger("mailcoach.worker")

_RESTART_DELAY = 1.0


def _model(settings: WorkerSettings) -> ChatModel:
    config = settings.config
    return LiteLLMModel(
        prices={name: ModelPrice(i, o) for name, (i, o) in config.prices.items()},
        default_price=ModelPrice(*config.default_price) if config.default_price else None,
        templates=config.models.chat_templates, timeout=config.models.timeout,
        retries=config.models.retries, backoff=config.models.backoff,
        max_in_flight=config.limits.max_models_in_flight)


def _profile(settings: WorkerSettings, address: str) -> AgentProfile:
    config = settings.config
    party = config.party_settings(address)
    system = primer(address, domain=config.domain, user=config.user,
                    robots=[(r.address, r.kind) for r in config.robots], system=party.system)
    return AgentProfile(address=address, system=system, model=party.model,
                        robots=frozenset(r.address for r in config.robots))


class PartyRunner:
    """One party: its mailbox, its lease, and the runtime worker while the lease is held."""

    def __init__(self, party: PartyLogin, settings: WorkerSettings, model: ChatModel,
                 budget: ServerBudget) -> None:
        self.party = party
        self.settings = settings
        self.mailbox = ImapMailbox(party, settings)
        self.model = model
        self.budget = budget
        budget.mailboxes[party.address] = self.mailbox
        self.robot = None
        spec = settings.config.robot_spec(party.address)
        if spec is not None:
            self.robot = load_robot(spec, settings.config.data_dir, user=settings.config.user,
                                    post=self.mailbox.post)

    def _worker(self) -> Worker:
        if self.robot is not None:
            return RobotWorker(self.mailbox, self.robot)
        return AgentWorker(self.mailbox, _profile(self.settings, self.party.address),
                           model=self.model, budget=self.budget)

    async def run(self) -> None:
        """Serve until cancelled. Raises ``LoginRefused`` or ``TlsUnavailable``
        (configuration errors)."""
        await self.mailbox.connect()
        if self.robot is not None:
            await self.robot.start()
        while True:
            await self.mailbox.hold()
            log.info("%s: serving (lease held)", self.party.address)
            worker = self._worker().start()
            assert worker.task is not None
            keeper = asyncio.create_task(self.mailbox.keep_lease(),
                                         name=f"lease {self.party.address}")
            try:
                await asyncio.wait({worker.task, keeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (worker.task, keeper):
                    task.cancel()
                await asyncio.gather(worker.task, keeper, return_exceptions=True)
            for task in (keeper, worker.task):
                problem = None if task.cancelled() else task.exception()
                if isinstance(problem, (LoginRefused, TlsUnavailable)):
                    raise problem
                if isinstance(problem, LeaseLost):
                    log.warning("%s: %s; this worker stops acting for it", self.party.address,
                                problem)
                    break
                if problem is not None:
                    log.error("%s: the worker stopped (%s: %s); starting it again",
                              self.party.address, type(problem).__name__, problem)
                    break
            await asyncio.sleep(_RESTART_DELAY)

    async def aclose(self) -> None:
        await self.mailbox.aclose()
        if self.robot is not None:
            await self.robot.aclose()


async def run_worker(settings: WorkerSettings, *, model: ChatModel | None = None,
                     ready: asyncio.Event | None = None) -> int:
    """Serve every party of ``settings`` until SIGINT/SIGTERM; the exit code."""
    the_model = model or _model(settings)
    budget = ServerBudget(settings.config)
    runners = [PartyRunner(party, settings, the_model, budget) for party in settings.parties]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(r.run(), name=f"party {r.party.address}") for r in runners]
    first = settings.parties[0]  # TLS and the login, once: every party submits the same way
    tasks.append(asyncio.create_task(
        SmtpSubmitter(settings.smtp, first.login, first.password).check(), name="smtp check"))
    stopping = asyncio.create_task(stop.wait(), name="signals")
    print(f"mailcoach worker: {len(runners)} parties on imap "
          f"{settings.imap.host}:{settings.imap.port}, smtp "
          f"{settings.smtp.host}:{settings.smtp.port}", flush=True)
    print("ready (Ctrl+C or SIGTERM stops)", flush=True)
    if ready is not None:
        ready.set()
    code = 0
    try:
        pending = {*tasks, stopping}
        while pending and not stop.is_set():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                problem = None if task.cancelled() else task.exception()
                if isinstance(problem, MailcoachError):  # LoginRefused, TlsUnavailable
                    print(f"mailcoach worker: {problem}", file=sys.stderr, flush=True)
                    code = 2
                    stop.set()
                elif problem is not None:
                    raise problem
    finally:
        for task in (*tasks, stopping):
            task.cancel()
        await asyncio.gather(*tasks, stopping, return_exceptions=True)
        await asyncio.gather(*(r.aclose() for r in runners), return_exceptions=True)
        close = getattr(the_model, "aclose", None)
        if close is not None:
            await close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code


def main(argv: list[str]) -> int:
    """``mailcoach worker`` with its arguments parsed (see ``cli.py``)."""
    import argparse

    from ..cli import setup_logging

    parser = argparse.ArgumentParser(prog="mailcoach worker")
    parser.add_argument("--config", metavar="FILE", required=True, help="worker.yaml")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    if not args.debug:  # it logs every untagged response it does not use at INFO
        logging.getLogger("aioimaplib").setLevel(logging.WARNING)
    try:
        settings = load_worker_settings(args.config)
        return asyncio.run(run_worker(settings))
    except ConfigError as exc:
        print(f"mailcoach worker: {exc}", file=sys.stderr)
        return 2
    except MailcoachError as exc:
        print(f"mailcoach worker: {exc}", file=sys.stderr)
        return 2
