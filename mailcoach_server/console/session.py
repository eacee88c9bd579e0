"""A console session: the engine in a background event loop, the chat in the main thread.

The main thread keeps ``input()`` (readline editing, Ctrl+C and Ctrl+D work
as in any terminal program); the engine, and with ``--serve`` the SMTP and
IMAP listeners, run in an asyncio loop in a second thread. Messages are
printed as they are stored, from a store listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import sys
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TextIO, TypeVar

from ..app import Server, running
from ..config import Config
from ..errors import SubmitError
from ..mailtext import read_message
from ..queuefile import message_id_of
from ..runtime.engine import memory_plans
from ..runtime.llm import ChatTurn
from ..store.store import WritePlan
from .display import Palette, format_message
from .inputs import ConsoleError

__all__ = ["Session"]

T = TypeVar("T")


class Session:
    """Start with ``Session(config, ...).open()``; ``close()`` when done."""

    def __init__(self, config: Config, *, out: TextIO = sys.stdout, serve: bool = False,
                 debug: bool = False, auto: bool = False, shipped_memory: bool = True,
                 color: bool | None = None) -> None:
        self.config = config
        self.out = out
        self.serve = serve
        self.debug = debug
        self.auto = auto
        self.shipped_memory = shipped_memory
        self.tty = out.isatty() if color is None else color
        self.palette = Palette(self.tty)
        self.quiet = False  # while loading history
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="engine",
                                        daemon=True)
        self._stop: asyncio.Event | None = None
        self._started: Future[Server] = Future()
        self._finished: Future[None] = Future()
        self._debug_requests: queue.Queue[tuple[str, Future[None]]] = queue.Queue()
        #: robots' "Approve:" requests to the user, shown as a prompt by the chat
        self.approvals: queue.Queue[ApprovalRequest] = queue.Queue()
        self.server: Server | None = None

    # -- life cycle ----------------------------------------------------------

    def open(self) -> Session:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._main(), self._loop)
        self.server = self._started.result()
        return self

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with running(self.config, smtp=self.serve, imap=self.serve,
                               shipped_memory=self.shipped_memory,
                               user_is_agent=self.auto) as server:
                server.store.listeners.append(self._show)
                if self.debug:
                    server.engine.before_model_call = self._confirm_call
                self._started.set_result(server)
                await self._stop.wait()
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            self._finished.set_exception(exc)
            return
        self._finished.set_result(None)

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        with contextlib.suppress(Exception):
            self._finished.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in the engine's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def engine(self) -> Any:
        assert self.server is not None
        return self.server.engine

    # -- showing mail --------------------------------------------------------

    def _show(self, plans: list[WritePlan]) -> None:
        if self.quiet:
            return
        for plan in plans:
            if plan.raw and plan.file == "trace":
                message = read_message(plan.raw)
                request = self._approval_request(plan, message)
                if request is not None:
                    self.approvals.put(request)
                text = format_message(message, self.palette)
                self.out.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.out.flush()

    def _approval_request(self, plan: WritePlan, message: Any) -> ApprovalRequest | None:
        """A robot asking the user to approve a command, from its ``Approve:`` mail."""
        meta = plan.meta
        subject = meta.subject or ""
        if (self.config.user not in meta.recipients or not subject.startswith("Approve: ")
                or self.engine.router.kind_of(meta.sender) != "robot"
                or not _APPROVAL_TOKEN.search(subject)):
            return None
        return ApprovalRequest(robot=meta.sender, subject=subject,
                               message_id=meta.message_id or "")

    async def _confirm_call(self, agent: str, model: str, turns: list[ChatTurn]) -> None:
        last = turns[-1].content.strip().splitlines()[:3] if turns else []
        prompt = (f"--debug: {agent} is about to call {model} with {len(turns)} turns; "
                  f"last: {' / '.join(last)[:120]}\nPress Enter to continue...")
        done: Future[None] = Future()
        self._debug_requests.put((prompt, done))
        await asyncio.wrap_future(done)

    # -- loading ------------------------------------------------------------

    def load_history(self, raws: list[bytes]) -> int:
        """Remember messages (nothing acts on them); returns how many were new."""
        async def load() -> int:
            count = 0
            for raw in raws:
                if self.engine.store.find_by_message_id(message_id_of(raw)) is not None:
                    continue
                try:
                    await self.engine.submit(raw, origin="memory", act=False)
                except SubmitError as exc:
                    raise ConsoleError(f"memory message {count + 1}: {exc.reason}") from None
                count += 1
            return count
        self.quiet = True
        try:
            return self.call(load())
        finally:
            self.quiet = False

    def load_party_files(self, files: dict[str, Path]) -> int:
        """Give agents the memory in their ``<address>.mbox`` files (a trace directory)."""
        async def load() -> int:
            engine = self.engine
            count = 0
            for address, path in files.items():
                kind = engine.router.kind_of(address)
                if kind not in (None, "agent") or address in engine.store.parties:
                    continue
                plans = memory_plans(engine.store, address, path)
                if plans:
                    await engine.store.commit_many(plans)
                    count += len(plans)
            return count
        return self.call(load())

    # -- acting --------------------------------------------------------------

    def submit(self, raw: bytes, *, act: bool = True) -> None:
        self.call(self.engine.submit(raw, origin="console", act=act))

    def wait(self) -> list[str]:
        """Wait until agents and robots are done; Ctrl+C cancels running model calls.

        Returns the agents left waiting for budget.
        """
        future = asyncio.run_coroutine_threadsafe(self.engine.wait_idle(), self._loop)
        started = time.monotonic()
        shown = False
        while True:
            try:
                future.result(timeout=0.1)
                break
            except TimeoutError:
                pass
            except KeyboardInterrupt:
                cancelled = self.call(self._cancel())
                self.out.write(f"\n^C: cancelled {cancelled} model call(s)\n")
                continue
            try:
                prompt, done = self._debug_requests.get_nowait()
            except queue.Empty:
                pass
            else:
                self._clear_status(shown)
                try:
                    input(prompt)
                except EOFError:
                    pass
                finally:
                    self._loop.call_soon_threadsafe(done.set_result, None)
                continue
            if self.tty:
                busy = [a for a, w in self.engine.workers.items() if w.busy and not w.blocked]
                if busy:
                    shown = True
                    self.out.write(f"\r\033[K{_SPIN[int(time.monotonic() * 8) % len(_SPIN)]} "
                                   f"{', '.join(busy[:3])} working "
                                   f"({time.monotonic() - started:.1f} s)")
                    self.out.flush()
        self._clear_status(shown)
        return list(self.engine.blocked())

    def _clear_status(self, shown: bool) -> None:
        if shown and self.tty:
            self.out.write("\r\033[K")
            self.out.flush()

    async def _cancel(self) -> int:
        return self.engine.cancel_model_calls()

    def spent(self) -> float:
        return float(self.engine.store.spent())

    def parties(self) -> list[str]:
        """Addresses to offer in the menu: every known party but the postmaster."""
        engine = self.engine
        known = [self.config.user, *(a.address for a in self.config.agents),
                 *(r.address for r in self.config.robots), *engine.store.parties]
        return [a for a in dict.fromkeys(known) if engine.router.kind_of(a) != "system"]

    def agent_model(self, address: str) -> str:
        party = self.engine.store.parties.get(address)
        model = party.state.get("model") if party is not None else None
        return str(model or self.config.party_settings(address).model)


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A robot's "Approve: <command> [approval TOKEN]" mail to the user."""

    robot: str
    subject: str
    message_id: str


#: the token a robot puts in an approval request's Subject
_APPROVAL_TOKEN = re.compile(r"\[approval [0-9a-f]{8,32}\]")


def user_message(*, sender: str, to: str, subject: str, body: str,
                 model: str | None, in_reply_to: str = "") -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    if model:
        message["X-Hint-Model"] = model
    message.set_content(body)
    return message.as_bytes()


_SPIN = "|/-\\"
