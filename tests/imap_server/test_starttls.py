"""STARTTLS with a configured certificate (``imap.tls_cert`` / ``imap.tls_key``)."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
import subprocess
from dataclasses import asdict, replace
from types import SimpleNamespace

import pytest

from mailcoach_server.config import load_config
from mailcoach_server.credentials import Credentials
from mailcoach_server.imap.commands import greeting
from mailcoach_server.imap.server import start_imap
from mailcoach_server.imap.session import Backend, Session
from mailcoach_server.login_throttle import LoginThrottle
from mailcoach_server.store.store import Store
from tests.conftest import require_tool


@pytest.fixture
def certificate(tmp_path):
    openssl = require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
async def tls_server(tmp_path, certificate):
    cert, key = certificate
    store = Store.open(tmp_path / "data")
    store.ensure_folder("INBOX")
    credentials = Credentials.load_or_create(tmp_path / "data", "user@localdomain")
    imap = SimpleNamespace(**{**asdict(load_config().imap), "port": 0, "tls_cert": str(cert),
                              "tls_key": str(key)})
    server = SimpleNamespace(config=SimpleNamespace(imap=imap), store=store, engine=None,
                             credentials=credentials, login_throttle=LoginThrottle(delay=0))
    listener = await start_imap(server)
    try:
        yield listener.sockets[0].getsockname()[:2], credentials, cert
    finally:
        listener.close()
        await listener.wait_closed()
        await store.aclose()


async def test_starttls_then_login_with_imaplib(tls_server):
    (host, port), credentials, cert = tls_server

    def client() -> list:
        context = ssl.create_default_context(cafile=str(cert))
        imap = imaplib.IMAP4(host, port, timeout=20)
        before = imap.capabilities
        imap.starttls(ssl_context=context)
        after = imap.capabilities
        imap.login("user@localdomain", credentials.password)
        typ, data = imap.select("INBOX")
        imap.logout()
        return [before, after, typ, data]

    before, after, typ, data = await asyncio.to_thread(client)
    assert "STARTTLS" in before and "STARTTLS" not in after
    assert (typ, data) == ("OK", [b"0"])


async def test_commands_pipelined_before_tls_are_dropped(tls_server):
    (host, port), credentials, cert = tls_server
    reader, writer = await asyncio.open_connection(host, port)
    try:
        assert b"STARTTLS" in await reader.readline()
        # RFC 3501 §6.2.1: nothing sent in the clear after STARTTLS may be acted on
        writer.write(b"a STARTTLS\r\nb LOGIN user@localdomain %s\r\n"
                     % credentials.password.encode())
        assert await reader.readline() == b"a OK begin TLS negotiation now\r\n"
        await writer.start_tls(ssl.create_default_context(cafile=str(cert)))
        writer.write(b"c NOOP\r\nd STARTTLS\r\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"c OK NOOP completed\r\n"
        assert await asyncio.wait_for(reader.readline(), 5) == b"d BAD TLS is already on\r\n"
        writer.write(b"e SELECT INBOX\r\n")  # b's LOGIN never happened
        assert await asyncio.wait_for(reader.readline(), 5) == (
            b"e BAD command not allowed in this state\r\n")
    finally:
        writer.close()


async def test_logindisabled_until_tls_off_loopback(tmp_path, certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    store = Store.open(tmp_path)
    try:
        credentials = Credentials.load_or_create(tmp_path, "user@localdomain")
        config = replace(load_config().imap, host="192.0.2.7")
        backend = Backend(store, config, credentials, login_delay=0, tls=context)

        class Out(list):
            def write(self, data: bytes) -> None:
                self.append(data)

            def flush(self) -> None:
                pass

            async def drain(self) -> None:
                pass

        session = Session(backend, Out())
        assert b"STARTTLS" in greeting(session) and b"LOGINDISABLED" in greeting(session)
        session.tls_started()  # what the adapter does after the handshake
        assert b"STARTTLS" not in greeting(session)
        assert b"LOGINDISABLED" not in greeting(session) and b"AUTH=PLAIN" in greeting(session)
        assert not session.conn.login_disabled
        await session.close()
        backend.close()
    finally:
        await store.aclose()
