"""Bad clients: malformed input, limits, idle clients, failing commands, LOGINDISABLED."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from types import SimpleNamespace

import pytest

from mailcoach_server.config import ImapConfig, load_config
from mailcoach_server.credentials import Credentials
from mailcoach_server.imap import commands
from mailcoach_server.imap.commands import dispatch, greeting
from mailcoach_server.imap.connection import NEED_DATA, NeedContinuation
from mailcoach_server.imap.session import Backend, Session
from mailcoach_server.store.store import Store
from tests.support import make_config, serve_in_process


class Wire:
    """A raw IMAP connection: send bytes, read lines with a deadline."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server) -> Wire:
        wire = cls(*await asyncio.open_connection(*server.imap_address))
        assert (await wire.line()).startswith(b"* OK [CAPABILITY IMAP4rev1 ")
        return wire

    async def line(self, timeout: float = 5) -> bytes:  # noqa: ASYNC109
        return await asyncio.wait_for(self.reader.readline(), timeout)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, data: bytes, tag: bytes = b"t1") -> list[bytes]:
        """Send one command; the lines up to and including its tagged answer."""
        await self.send(data)
        lines = []
        while not (line := await self.line()).startswith(tag + b" "):
            assert line, f"connection closed; got {lines}"
            lines.append(line)
        return [*lines, line]

    async def login(self, server) -> None:
        answer = await self.command(
            b't1 LOGIN user "%s"\r\n' % server.credentials.password.encode())
        assert answer[-1].startswith(b"t1 OK")

    async def closed(self) -> bool:
        rest = await asyncio.wait_for(self.reader.read(), 5)
        return rest == b"" or rest.endswith(b"\r\n")

    def close(self) -> None:
        self.writer.close()


async def test_malformed_commands_get_bad_with_a_reason_then_bye(tmp_path):
    config = make_config(tmp_path, imap={"bad_command_limit": 3})
    async with serve_in_process(config) as server:
        wire = await Wire.open(server)
        assert await wire.command(b"t1 FETCH 1 (FLAGS)\r\n") == [
            b"t1 BAD command not allowed in this state\r\n"]
        assert await wire.command(b"t1 LOGIN\r\n") == [b"t1 BAD expected space\r\n"]
        assert (await wire.command(b"t1 NOOP\r\n"))[-1] == b"t1 OK NOOP completed\r\n"  # resets
        for _ in range(3):
            answer = await wire.command(b"t1 BOGUS\r\n")
            assert answer == [b"t1 BAD unknown command BOGUS\r\n"]
        await wire.send(b"t1 NOOP\r\n")
        assert await wire.line() == b"* BYE too many bad commands\r\n"
        assert await wire.line() == b""  # closed
        wire.close()


async def test_oversized_line_and_literal_end_the_connection_with_bye(tmp_path):
    config = make_config(tmp_path, imap={"max_line": 1000, "max_literal": 2000})
    async with serve_in_process(config) as server:
        wire = await Wire.open(server)
        await wire.send(b"t1 NOOP " + b"x" * 5000)
        assert (await wire.line()).startswith(b"t1 BAD line too long")
        assert (await wire.line()).startswith(b"* BYE ")
        assert await wire.line() == b""
        wire.close()
        for literal in (b"{5000}", b"{5000+}"):
            wire = await Wire.open(server)
            await wire.login(server)
            await wire.send(b"t2 APPEND INBOX " + literal + b"\r\n")
            assert await wire.line() == b"t2 BAD [TOOBIG] literal too big\r\n"
            assert (await wire.line()).startswith(b"* BYE ")
            assert await wire.line() == b""
            wire.close()
        # just under the limit is fine
        wire = await Wire.open(server)
        await wire.login(server)
        body = b"Subject: x\r\n\r\n" + b"y" * 1900
        await wire.send(b"t3 APPEND INBOX {%d}\r\n" % len(body))
        assert await wire.line() == b"+ Ready\r\n"
        assert (await wire.command(body + b"\r\n", b"t3"))[-1].startswith(b"t3 OK [APPENDUID ")
        wire.close()


async def test_idle_client_is_logged_out_with_bye(tmp_path):
    config = make_config(tmp_path, imap={"idle_timeout": 1})
    async with serve_in_process(config) as server:
        wire = await Wire.open(server)
        await wire.login(server)
        await wire.command(b"t1 SELECT INBOX\r\n")
        await wire.send(b"t2 IDLE\r\n")
        assert await wire.line() == b"+ idling\r\n"
        assert await wire.line(10) == b"* BYE autologout: idle for too long\r\n"
        assert await wire.line() == b""
        wire.close()


async def test_a_failing_command_is_no_serverbug_without_traceback(tmp_path, monkeypatch, caplog):
    async def broken(session, command):
        raise RuntimeError("secret internals")

    monkeypatch.setitem(commands.COMMANDS, "NAMESPACE", broken)
    config = make_config(tmp_path)
    async with serve_in_process(config) as server:
        wire = await Wire.open(server)
        await wire.login(server)
        answer = await wire.command(b"t1 NAMESPACE\r\n")
        assert answer == [b"t1 NO [SERVERBUG] NAMESPACE failed: internal server error\r\n"]
        assert (await wire.command(b"t2 NOOP\r\n", b"t2"))[-1] == b"t2 OK NOOP completed\r\n"
        wire.close()
    assert "secret internals" in caplog.text  # logged for the operator, with the traceback


async def test_random_bytes_never_crash_the_server_nor_leak_a_traceback(tmp_path):
    rng = random.Random(3501)
    pieces = [b"a1 ", b"FETCH ", b"1:* ", b"(", b")", b"BODY[", b"]", b"{5}\r\n", b"{3+}\r\n",
              b'"', b"\\", b"\r\n", b"UID ", b"SEARCH ", b"CHARSET ", b"\x00", b"\xff", b" ",
              b"LOGIN ", b"SELECT INBOX", b"APPEND ", b"IDLE\r\n", b"DONE\r\n", b"*", b"%"]
    config = make_config(tmp_path, imap={"bad_command_limit": 1000})
    async with serve_in_process(config) as server:
        for round_ in range(30):
            wire = await Wire.open(server)
            if round_ % 2:
                await wire.login(server)
            data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(5, 80)))
            await wire.send(data + b"\r\n\r\nzz LOGOUT\r\n")
            out = await asyncio.wait_for(wire.reader.read(), 10)
            assert b"Traceback" not in out and b"Error" not in out, (data, out)
            wire.close()
        # and the server still serves
        wire = await Wire.open(server)
        await wire.login(server)
        wire.close()


async def _answers(session: Session, out: list[bytes], data: bytes) -> bytes:
    """What the server loop would write for ``data`` (no sockets)."""
    conn = session.conn
    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, NeedContinuation):
            out.append(conn.send(event.continuation))
        elif hasattr(event, "to_response"):
            out.append(conn.send(event.to_response()))
        else:
            await dispatch(session, event)
    text = b"".join(out)
    out.clear()
    return text


class _ListOutput(list):
    def write(self, data: bytes) -> None:
        self.append(data)

    def flush(self) -> None:
        pass

    async def drain(self) -> None:
        pass


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7"])
async def test_plaintext_login_is_refused_off_loopback_without_tls(tmp_path, host):
    store = Store.open(tmp_path)
    try:
        credentials = Credentials.load_or_create(tmp_path, "user@localdomain")
        backend = Backend(store, replace(load_config().imap, host=host), credentials, login_delay=0)
        out = _ListOutput()
        session = Session(backend, out)
        assert b"LOGINDISABLED" in greeting(session) and b"AUTH=PLAIN" not in greeting(session)
        password = credentials.password.encode()
        assert await _answers(session, out, b"a LOGIN user %s\r\n" % password) == (
            b"a NO [PRIVACYREQUIRED] plaintext login needs TLS on this listener\r\n")
        # AUTHENTICATE is refused before the client sends a password
        assert await _answers(session, out, b"b AUTHENTICATE PLAIN\r\n") == (
            b"b NO [PRIVACYREQUIRED] plaintext authentication needs TLS on this listener\r\n")
        assert await _answers(session, out, b"c STARTTLS\r\n") == (
            b"c NO STARTTLS is not configured on this server\r\n")
        assert session.conn.user is None
        await session.close()
        backend.close()
    finally:
        await store.aclose()


async def test_allow_plaintext_auth_lets_a_container_log_in(tmp_path):
    store = Store.open(tmp_path)
    try:
        credentials = Credentials.load_or_create(tmp_path, "user@localdomain")
        fields = {f: getattr(load_config().imap, f) for f in ImapConfig.__slots__}
        config = SimpleNamespace(**{**fields, "host": "0.0.0.0", "allow_plaintext_auth": True})
        backend = Backend(store, config, credentials, login_delay=0)
        out = _ListOutput()
        session = Session(backend, out)
        assert b"LOGINDISABLED" not in greeting(session)
        password = credentials.password.encode()
        assert (await _answers(session, out, b"a LOGIN user %s\r\n" % password)).startswith(
            b"a OK ")
        await session.close()
        backend.close()
    finally:
        await store.aclose()


async def test_loopback_session_without_sockets(tmp_path):
    store = Store.open(tmp_path)
    try:
        credentials = Credentials.load_or_create(tmp_path, "user@localdomain")
        store.ensure_folder("INBOX")
        backend = Backend(store, load_config().imap, credentials, login_delay=0)
        out = _ListOutput()
        session = Session(backend, out)
        assert b"LOGINDISABLED" not in greeting(session)
        password = credentials.password.encode()
        assert (await _answers(session, out, b"a LOGIN user %s\r\n" % password)).startswith(
            b"a OK [CAPABILITY IMAP4rev1 ")
        answer = await _answers(session, out, b"b SELECT inbox\r\nc LOGOUT\r\n")
        assert b"* 0 EXISTS\r\n" in answer and b"b OK [READ-WRITE] SELECT completed\r\n" in answer
        assert answer.endswith(b"* BYE mailcoach IMAP logging out\r\nc OK LOGOUT completed\r\n")
        await session.close()
        backend.close()
    finally:
        await store.aclose()
