"""End to end in one process: SMTP in, agents through litellm to the scripted server, robots."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from email.message import EmailMessage

import aiosmtplib
import pytest

from tests.support import make_config, mbox_messages, serve_in_process, wait_for


async def send(server, message: EmailMessage | bytes, *, to=None, login=True) -> None:
    host, port = server.smtp_address
    kwargs = {"username": server.config.user, "password": server.credentials.password} \
        if login else {}
    if isinstance(message, bytes):
        await aiosmtplib.send(message, sender=server.config.user, recipients=to,
                              hostname=host, port=port, start_tls=False, use_tls=False,
                              **kwargs)
    else:
        await aiosmtplib.send(message, hostname=host, port=port, start_tls=False,
                              use_tls=False, **kwargs)


def mail(to: str, subject: str, body: str = "", sender: str = "user@localdomain",
         **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


def user_box(server):
    return mbox_messages(server.config.data_dir / "user@localdomain.mbox")


def replies_to_user(server):
    return [m for m in user_box(server) if m["From"] != "user@localdomain"]


async def test_shell_reply_is_threaded_to_the_request(tmp_path):
    config = make_config(tmp_path)
    async with serve_in_process(config) as server:
        request = mail("shell@localdomain", "echo hello; exit 3")
        await send(server, request)
        replies = await wait_for(lambda: replies_to_user(server), what="shell reply")
        reply = replies[0]
        assert reply["Subject"] == "Exit Code: 3"
        assert "hello" in reply.get_payload()
        sent = [m for m in user_box(server) if m["From"] == "user@localdomain"][0]
        assert reply["In-Reply-To"] == sent["Message-ID"]
        assert sent["Message-ID"] in reply["References"]
        assert reply["Auto-Submitted"] == "auto-replied"
        trace = mbox_messages(config.data_dir / "trace")
        assert [m["Subject"] for m in trace] == ["echo hello; exit 3", "Exit Code: 3"]
        shell = mbox_messages(config.data_dir / "shell@localdomain.mbox")
        assert len(shell) == 2


async def test_agent_uses_the_shell_then_answers_the_user(tmp_path, model_server):
    model_server.enqueue("To: shell@localdomain\nSubject: echo $((6*7))\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: the answer\n\nIt is 42.")
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "compute", "What is 6*7? Use the shell."))
        replies = await wait_for(lambda: replies_to_user(server), what="agent answer")
        answer = replies[0]
        assert answer["From"] == "swe1@localdomain"
        assert answer["Subject"] == "the answer"
        assert "It is 42." in answer.get_payload()
        assert answer["M-Model"] == model_server.spec()
        assert int(answer["M-Tokens-Input"]) == 10 and int(answer["M-Tokens-Output"]) == 5
        assert float(answer["M-Cost"]) == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)
        # The second model call saw the shell's output, as a user turn.
        second = model_server.requests[1]["messages"]
        assert second[0]["role"] == "system"
        assert second[-1]["role"] == "user"
        assert "From: shell@localdomain" in second[-1]["content"]
        assert "42" in second[-1]["content"]
        assert second[-2]["role"] == "assistant"
        memory = mbox_messages(config.data_dir / "swe1@localdomain.mbox")
        # shipped primer memory (6) + request + command + output + answer
        assert [m["From"] for m in memory][-4:] == [
            "user@localdomain", "swe1@localdomain", "shell@localdomain", "swe1@localdomain"]


async def test_what_the_model_sees_of_recipients_multipart_and_attachments(
        tmp_path, model_server):
    model_server.enqueue("Thanks, noted.")  # not a message: becomes a plain body to the sender
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        message = mail('"Swe One" <SWE1@localdomain>', "report", "plain text part",
                       Cc="Shell Robot <shell@localdomain>")
        message.add_alternative("<p>html <b>part</b></p>", subtype="html")
        message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                               filename="report.pdf")
        host, port = server.smtp_address
        await aiosmtplib.send(message, hostname=host, port=port,
                              recipients=["swe1@localdomain", "shell@localdomain",
                                          "a.swe1@localdomain"],
                              username=config.user, password=server.credentials.password)
        reply = (await wait_for(lambda: replies_to_user(server), what="reply"))[0]
        assert reply["To"] == "user@localdomain"
        assert reply["Subject"] == "Re: report"
        assert "Thanks, noted." in reply.get_payload()
        seen = model_server.requests[0]["messages"][-1]["content"]
        assert "plain text part" in seen and "<p>" not in seen
        assert "[attachment: report.pdf, application/pdf" in seen
        assert "Cc: Shell Robot <shell@localdomain>" in seen
        # Cc'd shell only remembers; Bcc'd a.swe1 remembers and sees no Bcc header.
        shell = mbox_messages(config.data_dir / "shell@localdomain.mbox")
        assert [m["Subject"] for m in shell] == ["report"]
        bcc = mbox_messages(config.data_dir / "a.swe1@localdomain.mbox")
        assert bcc[-1]["Subject"] == "report" and bcc[-1]["Bcc"] is None
        assert len(model_server.requests) == 1  # neither Cc nor Bcc made anyone act


async def test_failed_model_twice_then_success(tmp_path, model_server):
    model_server.enqueue_error(500, "overloaded")
    model_server.enqueue_error(500, "overloaded")
    model_server.enqueue("To: user@localdomain\nSubject: ok\n\nfine")
    config = make_config(tmp_path, model_server.spec(), models={"retries": 2, "backoff": 0.01})
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "hi"))
        reply = (await wait_for(lambda: replies_to_user(server), what="reply"))[0]
        assert reply["Subject"] == "ok"
        assert reply["X-Mailcoach-Error"] is None
        assert len(model_server.requests) == 3


async def test_model_that_always_fails_gets_an_error_reply(tmp_path, model_server):
    model_server.responder = None  # empty queue: the server answers 500 every time
    config = make_config(tmp_path, model_server.spec(), models={"retries": 1, "backoff": 0.01})
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "hi"))
        reply = (await wait_for(lambda: replies_to_user(server), what="error reply"))[0]
        assert reply["From"] == "swe1@localdomain"
        assert reply["X-Mailcoach-Error"]
        body = reply.get_payload()
        assert "What failed" in body and "How to fix it" in body
        # The mbox is written just before the index marks the delivery done.
        await wait_for(lambda: server.store.pending_deliveries("swe1@localdomain") == [])


async def test_unreachable_model_names_the_api_base(tmp_path):
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = make_config(tmp_path, f"openai/nothing@http://127.0.0.1:{port}/v1",
                         models={"retries": 0})
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "hi"))
        reply = (await wait_for(lambda: replies_to_user(server), what="error reply"))[0]
        assert f"127.0.0.1:{port}" in reply.get_payload()


def test_smtplib_session_refusals(tmp_path):
    """Relay, unknown mailbox, size, malformed mail and AUTH, with the stdlib client."""
    import asyncio
    import threading

    config = make_config(tmp_path, smtp={"max_message_size": 2000},
                         agents={"auto_create": False})
    ready = threading.Event()
    stop: list = []
    holder: dict = {}

    async def run():
        async with serve_in_process(config) as server:
            holder["server"] = server
            holder["loop"] = asyncio.get_running_loop()
            event = asyncio.Event()
            stop.append(event)
            ready.set()
            await event.wait()

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    try:
        assert ready.wait(20)
        server = holder["server"]
        host, port = server.smtp_address
        with smtplib.SMTP(host, port) as client:
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail("user@localdomain", ["shell@localdomain"], b"Subject: x\n\n")
            assert refused.value.smtp_code == 530  # AUTH first
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("user@localdomain", "wrong")
            client.login("user@localdomain", server.credentials.password)
            with pytest.raises(smtplib.SMTPRecipientsRefused) as relay:
                client.sendmail("user@localdomain", ["someone@example.com"], b"Subject: x\n\n")
            assert relay.value.recipients["someone@example.com"][0] == 550
            assert b"5.7.1" in relay.value.recipients["someone@example.com"][1]
            with pytest.raises(smtplib.SMTPRecipientsRefused) as unknown:
                client.sendmail("user@localdomain", ["nobody@localdomain"], b"Subject: x\n\n")
            assert b"5.1.1" in unknown.value.recipients["nobody@localdomain"][1]
            big = b"From: user@localdomain\nTo: shell@localdomain\nSubject: big\n\n" + b"x" * 5000
            with pytest.raises(smtplib.SMTPException) as oversize:
                client.sendmail("user@localdomain", ["shell@localdomain"], big)
            assert "552" in str(oversize.value)
        with smtplib.SMTP(host, port) as client:
            client.login("user", server.credentials.password)  # local part alone works too
            with pytest.raises(smtplib.SMTPDataError) as malformed:
                client.sendmail("user@localdomain", ["shell@localdomain"], b"no header here\n")
            assert malformed.value.smtp_code == 554
            with pytest.raises(smtplib.SMTPDataError) as foreign:
                client.sendmail("user@localdomain", ["shell@localdomain"],
                                b"From: evil@example.com\nSubject: id\n\n")
            assert foreign.value.smtp_code == 553
        # Nothing of that was stored.
        assert server.store.message_count() == 6  # the shipped memory of swe1 only
    finally:
        holder["loop"].call_soon_threadsafe(stop[0].set)
        thread.join(20)


async def test_a_hanging_command_is_killed_and_answered(tmp_path):
    config = make_config(tmp_path, robots={"shell@localdomain": {"kind": "shell",
                                                                 "timeout": 1}})
    async with serve_in_process(config) as server:
        await send(server, mail("shell@localdomain", "sleep 30 & sleep 30; echo never"))
        reply = (await wait_for(lambda: replies_to_user(server), what="timeout reply"))[0]
        assert reply["Subject"] == "Exit Code: 124"
        assert "never" not in reply.get_payload()
        assert "timeout" in reply.get_payload()


def start_stub(workdir, token):
    env = {**os.environ, "MAILCOACH_STUB_TOKEN": token}
    stub = subprocess.Popen(
        [sys.executable, "-m", "mailcoach_server", "shell-stub", "--port", "0",
         "--workdir", str(workdir)],
        stdout=subprocess.PIPE, text=True, env=env)
    line = stub.stdout.readline()
    return stub, line.split("listening on ")[1].split()[0]


async def test_remote_shell_robot_through_the_stub(tmp_path):
    stub, url = start_stub(tmp_path / "remote", "s3cret")
    try:
        config = make_config(tmp_path, robots={
            "shell@localdomain": False,
            "remote@localdomain": {"kind": "remote-shell", "url": url, "token": "s3cret"}})
        async with serve_in_process(config) as server:
            await send(server, mail("remote@localdomain", "pwd; echo hi >&2"))
            reply = (await wait_for(lambda: replies_to_user(server), what="remote reply"))[0]
            assert reply["Subject"] == "Exit Code: 0"
            assert str(tmp_path / "remote") in reply.get_payload()
            assert "hi" in reply.get_payload()
    finally:
        stub.terminate()
        stub.wait(10)
        stub.stdout.close()
