"""The same agent memory served once by ``serve`` and then by ``worker`` gives the model
the same context: the memory is the mailbox, wherever the mailbox lives."""

from __future__ import annotations

import email.utils
import smtplib
import time

import yaml

from mailcoach_server.store import mbox
from tests.support import ServerProcess, wait_until
from tests.worker.support import (
    SWE1,
    USER,
    WorkerProcess,
    messages,
    question,
    server_config,
    write_worker_config,
)


def answer_each(body):
    asked = body["messages"][-1]["content"]
    subject = next(line for line in asked.splitlines() if line.startswith("Subject:"))
    return f"To: {USER}\nSubject: Re: {subject[9:]}\n\nanswer {len(body['messages'])}"


def copy_memory_to_the_mailbox(mail, memory: list[bytes]) -> None:
    """What moving an agent onto a mail server means: its memory file, message by message,
    into INBOX (mail to it, already acted on) and Sent (its own), in order."""
    client = mail.imap(SWE1)
    try:
        start = time.time() - 3600 * len(memory)
        for number, raw in enumerate(memory):
            own = email.message_from_bytes(raw)["From"].strip() == SWE1
            folder, flags = ("Sent", "(\\Seen)") if own else ("INBOX", "(\\Seen $MCDone)")
            date = imaplib_date(start + 60 * number)
            typ, _ = client.append(folder, flags, date, raw.replace(b"\n", b"\r\n"))
            assert typ == "OK"
    finally:
        client.logout()


def imaplib_date(when: float) -> str:
    import imaplib
    return imaplib.Time2Internaldate(when)


def test_serve_then_worker_same_context(mail, model_server, tmp_path):
    model_server.responder = answer_each
    config = server_config(tmp_path / "serve", model_server, smtp={"port": 0},
                           imap={"port": 0})
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    # 1. serve: the shipped memory, a first question, then the question we compare.
    with ServerProcess(path) as server:
        password = (tmp_path / "serve" / "data" / "login").read_text().strip()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
            smtp.login(USER, password)
            smtp.sendmail(USER, [SWE1], question("first"))
            assert model_server.wait_for_requests(1, timeout=60)
            memory_file = tmp_path / "serve" / "data" / f"{SWE1}.mbox"
            wait_until(lambda: len(list(mbox.read(memory_file))) >= 8, 30,  # 6 shipped + 2
                       "the first answer")
            memory = list(mbox.read(memory_file))
            smtp.sendmail(USER, [SWE1], question("compared", body="the same words"))
            assert model_server.wait_for_requests(2, timeout=60)
    by_serve = model_server.requests[1]["messages"]
    # 2. worker: the memory serve had before that question, in swe1's mailbox on Dovecot.
    copy_memory_to_the_mailbox(mail, memory)
    with WorkerProcess(write_worker_config(tmp_path / "worker", mail, model_server, [SWE1])):
        mail.submit(USER, [SWE1], question("compared", body="the same words"))
        assert model_server.wait_for_requests(3, timeout=60)
        wait_until(lambda: messages(mail, USER), 60, "the worker's answer")
    by_worker = model_server.requests[2]["messages"]
    assert len(by_serve) == 1 + len(memory) + 1  # system, the memory, the question
    assert [t["role"] for t in by_worker] == [t["role"] for t in by_serve]
    assert by_worker == by_serve
