"""Faults: two workers for one party, Dovecot restarting, a bad login, no server at all,
a server that refuses or drops the connection at its greeting."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from mailcoach_server.worker.connection import ImapConnection, ServerAway
from mailcoach_server.worker.settings import MailServer
from tests.mailservers import free_port
from tests.support import wait_until
from tests.worker.support import (
    SWE1,
    USER,
    WorkerProcess,
    messages,
    question,
    write_worker_config,
)


def answer_each(body):
    asked = body["messages"][-1]["content"]
    subject = next(line for line in asked.splitlines() if line.startswith("Subject:"))
    return f"To: {USER}\nSubject: Re: {subject[9:]}\n\nanswered"


def answers(mail, *subjects):
    wanted = {f"Re: {s}" for s in subjects}
    return wait_until(lambda: (lambda got: got if wanted <= {m["Subject"] for m in got}
                               else None)(messages(mail, USER)), 90, f"answers to {subjects}",
                      interval=0.2)


def test_two_workers_for_one_party_one_killed(mail, model_server, tmp_path):
    model_server.responder = answer_each
    first = WorkerProcess(write_worker_config(tmp_path / "a", mail, model_server, [SWE1]))
    second = WorkerProcess(write_worker_config(tmp_path / "b", mail, model_server, [SWE1]))
    with first:
        wait_until(lambda: "serving (lease held)" in first.stderr(), 30, "the first lease")
        with second:
            mail.submit(USER, [SWE1], question("before the kill"))
            answers(mail, "before the kill")
            assert "serving" not in second.stderr()  # it waited: the lease was held
            first.kill9()
            mail.submit(USER, [SWE1], question("after the kill"))
            got = answers(mail, "before the kill", "after the kill")
            log = second.stderr()
    assert "lease taken from a worker that went quiet" in log
    subjects = sorted(m["Subject"] for m in got)
    assert subjects == ["Re: after the kill", "Re: before the kill"]  # once each
    assert len(model_server.requests) == 2


def test_dovecot_restarted_mid_conversation(mail, model_server, tmp_path):
    model_server.responder = answer_each
    model_server.delay = 2.0  # the restart happens while the model thinks
    with WorkerProcess(write_worker_config(tmp_path, mail, model_server, [SWE1])) as worker:
        mail.submit(USER, [SWE1], question("during the restart"))
        assert model_server.wait_for_requests(1, timeout=60)
        mail.restart_dovecot()
        answers(mail, "during the restart")
        mail.submit(USER, [SWE1], question("after the restart"))
        got = answers(mail, "during the restart", "after the restart")
        log = worker.stderr()
    assert "reconnecting" in log or "cannot reach" in log or "dropped" in log, log[-2000:]
    assert sorted(m["Subject"] for m in got) == ["Re: after the restart",
                                                 "Re: during the restart"]
    assert len(model_server.requests) == 2


def test_a_refused_login_stops_the_worker_with_a_clear_error(mail, model_server, tmp_path):
    config = write_worker_config(tmp_path, mail, model_server, [SWE1])
    (tmp_path / f"{SWE1}.password").write_text("not the password\n")
    worker = WorkerProcess(config).start(wait_ready=False)
    assert worker.wait(60) == 2
    assert f"refused the login '{SWE1}'" in worker.stderr()
    assert "not the password" not in worker.stderr()


def test_an_unreachable_server_is_named_and_retried(mail, model_server, tmp_path):
    config = write_worker_config(tmp_path, mail, model_server, [SWE1])
    data = yaml.safe_load(config.read_text())
    port = free_port()
    data["imap"]["port"] = port
    config.write_text(yaml.safe_dump(data))
    with WorkerProcess(config) as worker:
        wait_until(lambda: worker.stderr().count(f"cannot reach the IMAP server 127.0.0.1:{port}")
                   >= 2, 60, "two logged tries")
        assert worker.proc.poll() is None  # still trying, as a mail client would


@pytest.mark.parametrize(("greeting", "said"), [
    (None, "closed the connection before its greeting"),
    (b"* BYE Too many connections from your IP\r\n",
     "greeted with '\\* BYE Too many connections from your IP'"),
    (b"220 an SMTP server on the IMAP port\r\n", "greeted with '220 an SMTP server"),
])
async def test_a_greeting_refused_or_cut_is_a_server_away_at_once(greeting, said):
    """Not the minute of aioimaplib's timeout (a server shutting down says BYE and closes),
    and the socket is closed, not left open until the garbage collector finds it."""
    client_closed = asyncio.Event()

    async def serve(reader, writer):
        if greeting is not None:  # say it and keep the connection open: the client ends it
            writer.write(greeting)
            await writer.drain()
            while await reader.read(1024):
                pass
            client_closed.set()
        writer.close()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ServerAway, match=f"cannot reach the IMAP server 127.0.0.1:{port}: "
                                             f".*{said}"):
            # the bound only keeps a regression from hanging the suite (the timeout is 60 s)
            await asyncio.wait_for(ImapConnection.open(MailServer("127.0.0.1", port, "none"),
                                                       SWE1, "secret"), 30)
        if greeting is not None:
            await asyncio.wait_for(client_closed.wait(), 10)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_caller_that_stops_waiting_for_the_greeting_leaves_no_socket():
    """The worker gives up on a connect when it stops (a cancel): the socket closes then,
    not a minute later when aioimaplib's own wait for a greeting would end."""
    client_closed = asyncio.Event()

    async def serve(reader, writer):  # accepts and never greets
        while await reader.read(1024):
            pass
        client_closed.set()
        writer.close()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ImapConnection.open(MailServer("127.0.0.1", port, "none"),
                                                       SWE1, "secret"), 0.5)
        await asyncio.wait_for(client_closed.wait(), 10)
    finally:
        server.close()
        await server.wait_closed()
