"""Replies thread under the user's question: user → swe1 → shell → swe1 → user.

The shell's output never reaches the user's mailbox, so an answer threaded
to it would show as a new thread root in every client. Sent over SMTP with
smtplib, read back over IMAP with imaplib, the thread shape computed from the
headers as clients do (the last known References entry, else In-Reply-To).
"""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
from email.message import EmailMessage
from email.utils import make_msgid

from mailcoach_server.runtime.context import reply_headers
from tests.engine.test_flow import mail, replies_to_user
from tests.support import make_config, mbox_messages, serve_in_process, wait_for

_FIELDS = ("Message-ID", "In-Reply-To", "References", "Subject", "From")


#: bound for waits on model answers: the first call of a process imports litellm,
#: seconds on an idle machine and tens of seconds on a loaded one
MODEL_WAIT = 90.0


async def settled(predicate, what="condition"):
    return await wait_for(predicate, timeout=MODEL_WAIT, what=what)


def smtp_send(server, message: EmailMessage) -> None:
    host, port = server.smtp_address
    with smtplib.SMTP(host, port) as client:
        client.login(server.config.user, server.credentials.password)
        client.send_message(message)


def imap_headers(server, folders) -> dict[str, list[dict[str, str]]]:
    """Folder → the threading headers of each message, in folder order."""
    host, port = server.imap_address
    found: dict[str, list[dict[str, str]]] = {}
    with imaplib.IMAP4(host, port) as client:
        client.login(server.config.user, server.credentials.password)
        for folder in folders:
            typ, _ = client.select(folder, readonly=True)
            assert typ == "OK", folder
            typ, data = client.fetch(
                "1:*", f"(BODY.PEEK[HEADER.FIELDS ({' '.join(_FIELDS).upper()})])")
            assert typ == "OK", data
            found[folder] = [_header_fields(item[1]) for item in data
                             if isinstance(item, tuple)]
    return found


def _header_fields(raw: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    name = None
    for line in raw.decode().splitlines():
        if line[:1] in (" ", "\t") and name:
            fields[name] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            fields[name] = value.strip()
    return fields


def thread_parents(messages: list[dict[str, str]]) -> dict[str, str | None]:
    """Message-ID → its parent among ``messages``: the last References entry that is
    there (Thunderbird, RFC 5256 after pruning missing parents), else In-Reply-To."""
    present = {m["message-id"] for m in messages}
    parents: dict[str, str | None] = {}
    for m in messages:
        known = [r for r in m.get("references", "").split() if r in present]
        reply_to = m.get("in-reply-to")
        parents[m["message-id"]] = known[-1] if known else (
            reply_to if reply_to in present else None)
    return parents


def ask(question_id: str, subject: str, body: str, **headers: str) -> EmailMessage:
    message = mail("swe1@localdomain", subject, body, **headers)
    message["Message-ID"] = question_id
    return message


async def test_the_answer_threads_under_the_question_and_references_keep_the_chain(
        tmp_path, model_server):
    model_server.enqueue("To: shell@localdomain\nSubject: echo $((6*7))\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: the answer\n\nIt is 42.")
    model_server.enqueue("To: shell@localdomain\nSubject: echo $((6*8))\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: the next answer\n\nIt is 48.")
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        question = make_msgid(domain="localdomain")
        await asyncio.to_thread(smtp_send, server, ask(question, "compute", "6*7?"))
        await settled(lambda: replies_to_user(server), what="the answer")
        trace = mbox_messages(config.data_dir / "trace")
        assert [m["From"] for m in trace] == ["user@localdomain", "swe1@localdomain",
                                              "shell@localdomain", "swe1@localdomain"]
        command, output, answer = (m["Message-ID"] for m in trace[1:])

        boxes = await asyncio.to_thread(imap_headers, server, ["INBOX", "Sent"])
        assert [m["message-id"] for m in boxes["Sent"]] == [question]
        (got,) = boxes["INBOX"]
        assert got["message-id"] == answer
        assert got["in-reply-to"] == question
        assert got["references"].split() == [question, command, output]
        # The user's mailbox holds a thread of two, rooted at the question.
        parents = thread_parents(boxes["Sent"] + boxes["INBOX"])
        assert parents == {question: None, answer: question}
        # The answer still counts as one more automatic round after the shell's output.
        rounds = {m: server.store.find_by_message_id(m).auto_round
                  for m in (question, command, output, answer)}
        assert rounds == {question: 0, command: 1, output: 2, answer: 3}

        # The user follows up in the thread; the next answer threads under that.
        follow_up = make_msgid(domain="localdomain")
        await asyncio.to_thread(smtp_send, server, ask(
            follow_up, "Re: the answer", "and 6*8?", In_Reply_To=answer,
            References=f"{question} {answer}"))
        await settled(lambda: len(replies_to_user(server)) == 2, what="the next answer")
        trace = mbox_messages(config.data_dir / "trace")
        command2, output2, answer2 = (m["Message-ID"] for m in trace[5:])
        boxes = await asyncio.to_thread(imap_headers, server, ["INBOX", "Sent"])
        latest = boxes["INBOX"][-1]
        assert latest["message-id"] == answer2
        assert latest["in-reply-to"] == follow_up
        assert latest["references"].split() == [question, answer, follow_up, command2,
                                                output2]
        parents = thread_parents(boxes["Sent"] + boxes["INBOX"])
        assert parents == {question: None, answer: question, follow_up: answer,
                           answer2: follow_up}


async def test_an_error_note_about_the_shells_output_threads_under_the_question(
        tmp_path, model_server):
    model_server.enqueue("To: shell@localdomain\nSubject: true\n\n")
    model_server.enqueue_error(400, "the scripted model refuses")
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        question = make_msgid(domain="localdomain")
        await asyncio.to_thread(smtp_send, server, ask(question, "run true", "please"))
        (note,) = await settled(lambda: replies_to_user(server), what="the error note")
        assert note["X-Mailcoach-Error"]
        assert note["In-Reply-To"] == question
        output = mbox_messages(config.data_dir / "trace")[2]
        assert output["From"] == "shell@localdomain"
        assert note["References"].split()[-1] == output["Message-ID"]


async def test_mail_between_agents_still_threads_to_what_it_answers(tmp_path, model_server):
    model_server.enqueue("To: shell@localdomain\nSubject: true\n\n")
    model_server.enqueue("To: swe2@localdomain\nSubject: over to you\n\ncheck it")
    model_server.enqueue("To: user@localdomain\nSubject: checked\n\nfine")
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        question = make_msgid(domain="localdomain")
        await asyncio.to_thread(smtp_send, server, ask(question, "run true", "then ask swe2"))
        (reply,) = await settled(lambda: replies_to_user(server), what="swe2's answer")
        trace = mbox_messages(config.data_dir / "trace")
        handover = next(m for m in trace if m["Subject"] == "over to you")
        output = next(m for m in trace if m["From"] == "shell@localdomain")
        assert handover["In-Reply-To"] == output["Message-ID"]  # not to the user: no rethread
        assert reply["From"] == "swe2@localdomain"
        assert reply["In-Reply-To"] == question  # two agents away, still the question
        assert reply["References"].split()[-1] == handover["Message-ID"]


def test_a_long_chain_keeps_its_root_the_answered_message_and_its_tail():
    chain = [f"<m{i}@localdomain>" for i in range(100)]
    incoming = EmailMessage()
    incoming["Message-ID"] = "<last@localdomain>"
    incoming["References"] = " ".join(chain)
    incoming["Subject"] = "Exit Code: 0"
    reply = EmailMessage()
    reply["To"] = "user@localdomain"
    reply_headers(reply, author="swe1@localdomain", incoming=incoming,
                  default_to="user@localdomain", answers="<m50@localdomain>")
    references = reply["References"].split()
    assert reply["In-Reply-To"] == "<m50@localdomain>"
    assert len(references) == 40
    assert references[0] == "<m0@localdomain>" and references[-1] == "<last@localdomain>"
    assert "<m50@localdomain>" in references
    assert references == sorted(references, key=(chain + ["<last@localdomain>"]).index)
