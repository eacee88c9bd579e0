"""Startup and shutdown of ``mailcoach serve``: store, engine, listeners, signals.

``running(config)`` is the whole server as an async context manager (the
tests and the console use it); ``serve(config)`` adds the banner and waits
for SIGINT/SIGTERM, then closes everything in reverse order and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import __version__
from .config import Config
from .credentials import Credentials
from .health import advertised_addresses
from .login_throttle import LoginThrottle
from .runtime.engine import Engine
from .runtime.llm import ChatModel, ModelPrice, find_price, missing_key_variables
from .spool import deliver_spool
from .store.store import Store

__all__ = ["Server", "banner", "price_note", "running", "serve"]

log = logging.getLogger("mailcoach")


@dataclass(slots=True)
class Server:
    config: Config
    store: Store
    engine: Engine
    credentials: Credentials
    smtp_address: tuple[str, int] | None = None
    imap_address: tuple[str, int] | None = None
    #: failed logins, per client address, for SMTP and IMAP alike
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)


@contextlib.asynccontextmanager
async def running(config: Config, *, model: ChatModel | None = None, smtp: bool = True,
                  imap: bool = True, shipped_memory: bool = True,
                  user_is_agent: bool = False) -> AsyncIterator[Server]:
    """The server, listening, until the block ends.

    ``shipped_memory=False`` starts agents without the memory mailcoach
    ships (the console loads its own); ``user_is_agent`` is auto pilot.
    """
    store = Store.open(config.data_dir)
    listeners: list[asyncio.Server] = []
    engine: Engine | None = None
    try:
        credentials = Credentials.load_or_create(config.data_dir, config.user)
        engine = Engine(config, store, model=model, user_is_agent=user_is_agent)
        await engine.start(shipped_memory=shipped_memory)
        throttle = LoginThrottle(delay=config.limits.login_delay,
                                 max_delay=config.limits.login_delay_max)
        server = Server(config, store, engine, credentials, login_throttle=throttle)
        if smtp:
            from .smtp.server import start_smtp

            listener = await start_smtp(
                engine, credentials, host=config.smtp.host, port=config.smtp.port,
                auth_required=config.smtp.auth_required,
                allow_plaintext_auth=config.smtp.allow_plaintext_auth,
                max_size=config.smtp.max_message_size, hostname=config.domain,
                throttle=throttle,
            )
            listeners.append(listener)
            server.smtp_address = listener.sockets[0].getsockname()[:2]
        if imap:
            from .imap.server import start_imap

            listener = await start_imap(server)
            listeners.append(listener)
            server.imap_address = listener.sockets[0].getsockname()[:2]
        await deliver_spool(engine)  # after the listeners: see spool.py on the lock
        yield server
    finally:
        for listener in listeners:
            listener.close()
        for listener in listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.wait_closed(), 2)
        if engine is not None:
            await engine.aclose()
        await store.aclose()


def banner(server: Server) -> str:
    config = server.config
    lines = [f"mailcoach {__version__}: mail for @{config.domain}"]
    if server.smtp_address:
        host, port = server.smtp_address
        auth = (f"AUTH as {config.user}, password in {server.credentials.path.resolve()}"
                if config.smtp.auth_required else "no AUTH required")
        lines.append(f"  SMTP  {host}:{port}  ({auth})")
    if server.imap_address:
        host, port = server.imap_address
        lines.append(f"  IMAP  {host}:{port}  (login as for SMTP)")
    else:
        lines.append("  IMAP  not yet available")
    lines.append(f"  data  {config.data_dir.resolve()}  (trace, <address>.mbox, index.sqlite)")
    agents = ", ".join(a.address for a in config.agents) or "none configured"
    robots = ", ".join(f"{address} ({robot.summary})"
                       for address, robot in server.engine.robots.items()) or "none"
    lines.append(f"  agents {agents}; new local addresses "
                 + ("become agents" if config.auto_create_agents else "are refused"))
    lines.append(f"  robots {robots}")
    for model in sorted(config.models_in_use()):
        for variable in missing_key_variables(model):
            provider = model.split("/", 1)[0]
            lines.append(f"  {variable} is not set: agents on {provider}/… will answer "
                         "with an error")
    note = price_note(config)
    if note:
        lines.append(note)
    if config.budget is not None:
        lines.append(f"  budget ${config.budget:.2f} for all agents")
    if config.budget_tokens is not None:
        lines.append(f"  budget {config.budget_tokens} tokens for all agents")
    lines.append("ready (Ctrl+C or SIGTERM stops)")
    return "\n".join(lines)


def price_note(config: Config) -> str | None:
    """One banner line when configured models have no known price, or None."""
    prices = {name: ModelPrice(i, o) for name, (i, o) in config.prices.items()}
    unpriced = sorted(m for m in config.models_in_use() if find_price(m, prices) is None)
    if not unpriced:
        return None
    names = ", ".join(unpriced)
    if config.default_price is None:
        return (f"  no price for {names}: it costs 0, so only budget_tokens stops it "
                "(set prices: or default_price: in the config)")
    per_input, per_output = config.default_price
    return (f"  no price for {names}: priced at the default ${per_input:g} in, "
            f"${per_output:g} out per million tokens (prices:, default_price: in the config)")


async def _serve(config: Config, out: TextIO, queue: Path | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running(config) as server, contextlib.AsyncExitStack() as stack:
        # server.json: `mailcoach health` checks the ports bound here, not the config's
        stack.enter_context(advertised_addresses(
            config.data_dir, smtp=server.smtp_address, imap=server.imap_address))
        print(banner(server), file=out, flush=True)
        # What starting made lives as long as the server: out of the collector's sight,
        # so the full collections a big FETCH or ingest triggers do not walk it each time.
        gc.freeze()
        if queue is not None:
            from .queuefile import submit_queue

            report = await submit_queue(server.engine, queue, origin="sendmail")
            print(f"  queue {queue}: {report}", file=out, flush=True)
        await stop.wait()
        print("mailcoach: shutting down", file=out, flush=True)
    return 0


def serve(config: Config, out: TextIO = sys.stdout, *, queue: Path | None = None) -> int:
    return asyncio.run(_serve(config, out, queue))
