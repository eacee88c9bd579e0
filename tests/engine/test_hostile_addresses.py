"""Hostile addresses: a clean refusal or a file inside the data dir, and the next mail still goes.

One real server per module, run in a thread's event loop so that
hypothesis (synchronous) can drive it over SMTP (raw RCPT TO lines through
smtplib's socket) and through ``Engine.submit`` (the path of sendmail, the
console, queue files and agent replies). After every example a walk of the
directory around the data dir shows nothing was created outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import smtplib
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcoach_server.addresses import (
    MAX_FILE_NAME,
    address_file_name,
    address_of_file_name,
    normalize_address,
)
from mailcoach_server.app import running
from mailcoach_server.errors import SubmitError
from tests.support import make_config

USER = "user@localdomain"

# Pieces that have broken mail stores: path syntax, encodings, quoting, length.
_PIECES = ["/", "..", ".", "%", "%2F", "a", "Z", "\0", "é", "☃", "~", "*", "?", "\\", '"',
           " ", "@", ",", ":", ";", "<", ">", "(", ")", "'", "+", "=", "\t", "#"]


def hostile_locals(outside: Path) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([
            "/", "..", "../..", "/etc/passwd", f"{outside}/escape", f"../{outside.name}/x",
            "a/b", "x/", ".hidden", "a%2Fb", "%", "\0", "a\0b", "é", '"quoted local"',
            '"a/b"', "a" * 64, "a" * 65, "a" * 250, "b" * 1000, "@a,@b:c", ".", "a..b", "a.",
            "%2E%2E", "CON", "nul", "-rf", "~root",
        ]),
        st.lists(st.sampled_from(_PIECES), min_size=1, max_size=80).map("".join),
        st.text(min_size=1, max_size=300),
    )


class ServerThread:
    """``running(config)`` in its own thread and event loop."""

    def __init__(self, config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop_event: asyncio.Event | None = None
        self.server = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="hostile-server", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self.stop_event = asyncio.Event()
        async with running(self.config) as server:
            self.server = server
            self.ready.set()
            await self.stop_event.wait()

    def start(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(60), "the server did not start"
        if self.error is not None:
            raise self.error
        return self

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(60)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    (base / "outside").mkdir()
    # Nobody acts on what arrives here (Bcc and Cc only), so no model is needed.
    config = make_config(base)
    server = ServerThread(config).start()
    try:
        yield server, base
    finally:
        server.stop()


def snapshot(base: Path, data_dir: Path) -> set[str]:
    """Every path under ``base`` that is not inside the data dir."""
    found = set()
    for root, dirs, files in os.walk(base):
        if Path(root) == data_dir or data_dir in Path(root).parents:
            continue
        found.update(os.path.join(root, name) for name in dirs + files)
    return found


def root_entries() -> set[str]:
    return {name for name in os.listdir("/") if "@" in name or name.endswith(".mbox")}


def check_data_dir(data_dir: Path) -> None:
    """Every party file is a plain file directly in the data dir, named by the encoding."""
    for path in data_dir.rglob("*.mbox"):
        if path.parent.name in ("work", "spool"):
            continue
        assert path.parent == data_dir, path
        assert address_of_file_name(path.name) is not None, path.name
        assert len(path.name.encode()) <= MAX_FILE_NAME


def smtp_session(server):
    host, port = server.server.smtp_address
    client = smtplib.SMTP(host, port, timeout=30)
    client.ehlo()
    client.login(USER, server.server.credentials.password)
    return client


def raw_command(client: smtplib.SMTP, line: bytes) -> tuple[int, bytes]:
    client.send(line + b"\r\n")
    return client.getreply()


def normal_message_goes(client: smtplib.SMTP) -> None:
    client.rset()
    refused = client.sendmail(USER, ["swe1@localdomain"],
                              b"From: user@localdomain\r\nTo: user@localdomain\r\n"
                              b"Subject: still fine\r\n\r\nnormal mail\r\n")
    assert refused == {}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_smtp_rcpt_is_refused_cleanly_or_stays_in_the_data_dir(hostile, data):
    server, base = hostile
    data_dir = server.config.data_dir
    local = data.draw(hostile_locals(base / "outside"))
    route = data.draw(st.sampled_from(["", "@relay.example,@b.example:"]))
    address = route + local + "@localdomain"
    before, roots = snapshot(base, data_dir), root_entries()
    client = smtp_session(server)
    try:
        code, _ = raw_command(client, b"MAIL FROM:<user@localdomain>")
        assert code == 250
        line = address.replace("\r", "").replace("\n", "").encode("utf-8", "surrogatepass")
        code, reply = raw_command(client, b"RCPT TO:<" + line + b">")
        assert code == 250 or 500 <= code < 600, (code, reply)
        if code == 250:
            code, reply = client.data(b"From: user@localdomain\r\nTo: user@localdomain\r\n"
                                      b"Subject: hostile\r\n\r\nhi\r\n")
            assert code == 250 or 500 <= code < 600, (code, reply)
            if code == 250:  # aiosmtpd unquotes what needs no quotes: ask the store
                number = int(reply.rsplit(b" ", 1)[1])
                for party in server.server.store.meta(number).recipients:
                    assert normalize_address(party) == party
                    assert (data_dir / address_file_name(party)).is_file()
        normal_message_goes(client)
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
    assert snapshot(base, data_dir) == before
    assert root_entries() == roots
    check_data_dir(data_dir)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_submitted_headers_are_refused_cleanly_or_stay_in_the_data_dir(hostile, data):
    server, base = hostile
    data_dir = server.config.data_dir
    local = data.draw(hostile_locals(base / "outside"))
    field = data.draw(st.sampled_from(["Cc", "Bcc", "From"]))
    address = local + "@localdomain"
    header = address.replace("\r", " ").replace("\n", " ")
    to = "user@localdomain" if field != "From" else "user@localdomain"
    sender = header if field == "From" else USER
    lines = [f"From: {sender}", f"To: {to}", "Subject: hostile"]
    if field != "From":
        lines.append(f"{field}: {header}")
    raw = ("\n".join(lines) + "\n\nhi\n").encode("utf-8", "surrogatepass")
    before, roots = snapshot(base, data_dir), root_entries()
    origin = data.draw(st.sampled_from(["console", "sendmail", "agent"]))
    try:
        meta = server.call(server.server.engine.submit(raw, origin=origin))
    except SubmitError as exc:
        assert 500 <= exc.code < 600
        assert "\n" not in exc.smtp_reply() and "\0" not in exc.smtp_reply()
    else:
        for party in (meta.sender, *meta.recipients):
            assert (data_dir / address_file_name(party)).is_file()
    normal = b"From: user@localdomain\nTo: user@localdomain\nSubject: next\n\nfine\n"
    assert server.call(server.server.engine.submit(normal, origin="console")).id > 0
    assert snapshot(base, data_dir) == before
    assert root_entries() == roots
    check_data_dir(data_dir)


@pytest.mark.parametrize(("address", "name"), [
    ("swe1@localdomain", "swe1@localdomain.mbox"),
    ("a.swe1@localdomain", "a.swe1@localdomain.mbox"),
    ("a+tag_x-y@localdomain", "a+tag_x-y@localdomain.mbox"),
    ("a/b@localdomain", "a%2Fb@localdomain.mbox"),
    ("/@localdomain", "%2F@localdomain.mbox"),
    ("a%2fb@localdomain", "a%252fb@localdomain.mbox"),
    ("o'neil@localdomain", "o%27neil@localdomain.mbox"),
])
def test_file_names_keep_normal_addresses_and_encode_the_rest(address, name):
    assert address_file_name(address) == name
    assert address_of_file_name(name) == address


@given(st.text(min_size=1, max_size=300))
def test_the_file_name_encoding_is_reversible_and_never_a_path(text):
    name = address_file_name(text)
    assert "/" not in name and "\0" not in name and not name.startswith(".")
    address = normalize_address(text)
    if address is not None:
        assert address_of_file_name(address_file_name(address)) == address


@pytest.mark.parametrize(("rcpt", "why"), [
    ("<" + "a" * 65 + "@localdomain>", "longer than 64"),
    ('<"a b"@localdomain>', "quoted local parts"),
    ("<.a@localdomain>", "not an address"),
    ("<a..b@localdomain>", "not an address"),
])
def test_refused_rcpt_says_why_with_553_5_1_3(hostile, rcpt, why):
    server, _ = hostile
    client = smtp_session(server)
    try:
        assert raw_command(client, b"MAIL FROM:<user@localdomain>")[0] == 250
        code, reply = raw_command(client, b"RCPT TO:" + rcpt.encode())
        assert code == 553
        assert reply.startswith(b"5.1.3 ") and why.encode() in reply
        normal_message_goes(client)
    finally:
        client.quit()


def test_an_escaping_rcpt_gets_an_encoded_file_inside(hostile):
    server, base = hostile
    data_dir = server.config.data_dir
    target = base / "outside" / "escape"
    client = smtp_session(server)
    try:
        for rcpt in (f"{target}@localdomain", "/@localdomain", "a/b@localdomain"):
            refused = client.sendmail(USER, [rcpt], b"From: user@localdomain\r\n"
                                      b"To: user@localdomain\r\nSubject: x\r\n\r\nx\r\n")
            assert refused == {}
            assert (data_dir / address_file_name(rcpt.lower())).is_file()
        normal_message_goes(client)
    finally:
        client.quit()
    assert list((base / "outside").iterdir()) == []
    assert not Path(f"{target}@localdomain.mbox").exists()
    assert not Path("/@localdomain.mbox").exists()


def test_a_model_reply_to_refused_addresses_still_reaches_the_sender_with_a_note():
    from mailcoach_server.runtime.context import message_from_model

    long = "a" * 65 + "@localdomain"
    reply = message_from_model(
        f'To: "a b"@localdomain, {long}\nCc: x\0y@localdomain\nSubject: s\n\nthe answer\n',
        agent="swe1@localdomain", default_to=USER, default_subject="question")
    assert reply["To"] == USER and reply["Cc"] is None  # nothing valid: the sender gets it
    body = reply.get_content()
    assert body.endswith("the answer\n")
    assert "not sent to '\"a b\"@localdomain': quoted local parts are not supported" in body
    assert f"not sent to {long[:80]!r}: the local part is longer than 64" in body
    assert body.count("[mailcoach: not sent to") == 3
    # A valid recipient next to a refused one still gets the reply, and the note.
    mixed = message_from_model(f"To: shell@localdomain, {long}\nSubject: ls\n\n",
                               agent="swe1@localdomain", default_to=USER,
                               default_subject="q")
    assert mixed["To"] == "shell@localdomain" and "not sent to" in mixed["X-Mailcoach-Refused"]
    assert mixed.get_content() == "\n"  # a robot's stdin is not touched


def test_a_refused_reply_is_kept_for_a_human_with_why():
    from email.message import EmailMessage

    from mailcoach_server.runtime.context import ERROR_HEADER
    from mailcoach_server.runtime.party import refused_reply

    reply = EmailMessage()
    reply["From"] = "swe1@localdomain"
    reply["To"] = "bob@example.com"
    reply["Subject"] = "report"
    reply["M-Cost"] = "0.000100"
    reply.set_content("the work\n")
    kept = refused_reply(reply, to=USER, problem="550 5.7.1 relay denied")
    assert kept["To"] == USER and kept["Subject"] == "report" and kept["M-Cost"] == "0.000100"
    assert kept[ERROR_HEADER].startswith("reply refused: 550 5.7.1")
    body = kept.get_content()
    assert "To: bob@example.com" in body and "the work" in body
