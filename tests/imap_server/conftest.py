"""Fixtures for the IMAP server tests: a whole server in a thread, for blocking stdlib clients."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import smtplib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from mailcoach_server.app import Server
from mailcoach_server.config import Config
from tests.support import make_config, serve_in_process


class ThreadedServer:
    """``serve_in_process`` on an event loop of its own thread, so imaplib may block."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.config = config
        self._kwargs = kwargs
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailcoach-test-server")
        self._error: BaseException | None = None
        self.server: Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._clients: list[imaplib.IMAP4] = []

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        async with serve_in_process(self.config, **self._kwargs) as server:
            self.server = server
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def start(self) -> ThreadedServer:
        self._thread.start()
        assert self._ready.wait(30), "server did not start"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        for client in self._clients:  # a failed test may leave some open
            with contextlib.suppress(Exception):
                client.shutdown()
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "server thread did not stop"
        if self._error is not None:
            raise self._error

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    @property
    def password(self) -> str:
        assert self.server is not None
        return self.server.credentials.password

    def imap(self, *, login: bool = True) -> imaplib.IMAP4:
        assert self.server is not None and self.server.imap_address is not None
        host, port = self.server.imap_address
        client = imaplib.IMAP4(host, port, timeout=20)
        self._clients.append(client)
        if login:
            client.login("user@localdomain", self.password)
        return client

    def send(self, raw: bytes, to: list[str], sender: str = "user@localdomain") -> None:
        assert self.server is not None and self.server.smtp_address is not None
        with smtplib.SMTP(*self.server.smtp_address, timeout=20) as smtp:
            smtp.login("user@localdomain", self.password)
            smtp.sendmail(sender, to, raw)


@pytest.fixture
def threaded(tmp_path) -> Iterator[ThreadedServer]:
    """A server (no model configured: agents answer with an error mail) in a thread."""
    server = ThreadedServer(make_config(tmp_path)).start()
    try:
        yield server
    finally:
        server.stop()
