"""aioimaplib sessions: IDLE pushes, the agent's answer end to end, and the commands again."""

from __future__ import annotations

import asyncio
import re
import smtplib
import time

import aioimaplib

from tests.support import make_config, serve_in_process, wait_for

USER = "user@localdomain"


async def connect(server) -> aioimaplib.IMAP4:
    host, port = server.imap_address
    client = aioimaplib.IMAP4(host=host, port=port, timeout=10)
    await client.wait_hello_from_server()
    response = await client.login(USER, server.credentials.password)
    assert response.result == "OK", response
    return client


def smtp_send(server, raw: bytes, to: list[str]) -> float:
    """Send with the stdlib client; returns when the server said 250 (time.monotonic)."""
    with smtplib.SMTP(*server.smtp_address, timeout=20) as smtp:
        smtp.login(USER, server.credentials.password)
        smtp.sendmail(USER, to, raw)
        return time.monotonic()


async def pushes_until(client: aioimaplib.IMAP4, pattern: bytes,
                       timeout: float = 10) -> bytes:  # noqa: ASYNC109
    """Collect IDLE pushes until one line matches ``pattern``; returns that line."""
    deadline = time.monotonic() + timeout
    while True:
        lines = await client.wait_server_push(max(0.01, deadline - time.monotonic()))
        for line in lines if isinstance(lines, list) else [lines]:
            if isinstance(line, bytes) and re.search(pattern, line):
                return line


async def test_agent_answer_arrives_in_idle_as_exists_threaded_under_the_question(
        tmp_path, model_server):
    model_server.enqueue("To: user@localdomain\nSubject: Re: a question\n\nForty-two.")
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        client = await connect(server)
        assert (await client.select("INBOX")).result == "OK"
        idle = await client.idle_start(timeout=20)
        question = (b"From: user@localdomain\r\nTo: swe1@localdomain\r\n"
                    b"Subject: a question\r\nMessage-ID: <question-1@localdomain>\r\n\r\n"
                    b"What is six times seven?\r\n")
        await asyncio.to_thread(smtp_send, server, question, ["swe1@localdomain"])
        assert await pushes_until(client, rb"^1 EXISTS$") == b"1 EXISTS"
        client.idle_done()
        assert (await asyncio.wait_for(idle, 5)).result == "OK"
        response = await client.fetch(
            "1", "(ENVELOPE BODY.PEEK[HEADER.FIELDS (IN-REPLY-TO REFERENCES FROM)] BODY.PEEK[1])")
        assert response.result == "OK"
        text = b"".join(line for line in response.lines if isinstance(line, bytes | bytearray))
        assert b"In-Reply-To: <question-1@localdomain>" in text
        assert b"References: <question-1@localdomain>" in text
        assert b"From: swe1@localdomain" in text
        assert b"Forty-two." in text
        assert b'"<question-1@localdomain>"' in text  # ENVELOPE in-reply-to
        # the question itself is in Sent, where threading clients find it
        sent = await client.status("Sent", "(MESSAGES)")
        assert b'"Sent" (MESSAGES 1)' in sent.lines[0]
        await client.logout()


async def test_new_mail_reaches_idle_within_100_ms_of_smtp_250(tmp_path):
    config = make_config(tmp_path)
    async with serve_in_process(config) as server:
        client = await connect(server)
        await client.select("INBOX")
        delays = []
        for n in range(1, 6):
            idle = await client.idle_start(timeout=20)
            raw = b"From: user@localdomain\r\nTo: user@localdomain\r\nSubject: %d\r\n\r\nx\r\n" % n
            accepted = await asyncio.to_thread(smtp_send, server, raw, [USER])
            await pushes_until(client, rb"^%d EXISTS$" % n)
            delays.append(time.monotonic() - accepted)
            client.idle_done()
            await asyncio.wait_for(idle, 5)
        assert sorted(delays)[2] < 0.1, delays  # the median; the push comes before the 250 often
        await client.logout()


async def test_flags_and_expunges_of_another_session_are_pushed_in_idle(tmp_path):
    config = make_config(tmp_path)
    async with serve_in_process(config) as server:
        watcher, actor = await connect(server), await connect(server)
        for n in range(3):
            await actor.append(b"Subject: %d\r\n\r\nx\r\n" % n, mailbox="INBOX")
        await watcher.select("INBOX")
        await actor.select("INBOX")
        idle = await watcher.idle_start(timeout=20)
        await actor.store("2", "+FLAGS", r"(\Flagged)")
        # the watcher selected first: the messages are \Recent there
        assert await pushes_until(watcher, rb"FETCH") == \
            b"2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))"
        await actor.store("1", "+FLAGS", r"(\Deleted)")
        await actor.expunge()
        assert await pushes_until(watcher, rb"EXPUNGE") == b"1 EXPUNGE"
        await actor.append(b"Subject: new\r\n\r\nx\r\n", mailbox="INBOX", flags=r"(\Seen)")
        assert await pushes_until(watcher, rb"EXISTS") == b"3 EXISTS"
        watcher.idle_done()
        assert (await asyncio.wait_for(idle, 5)).result == "OK"
        response = await watcher.fetch("1:*", "(UID FLAGS)")
        assert [line for line in response.lines if b" FETCH (" in line] == [
            b"1 FETCH (UID 2 FLAGS (\\Flagged \\Recent))", b"2 FETCH (UID 3 FLAGS (\\Recent))",
            b"3 FETCH (UID 4 FLAGS (\\Seen))"]  # the actor's APPEND told the actor first
        await watcher.logout()
        await actor.logout()


async def test_aioimaplib_commands(tmp_path):
    config = make_config(tmp_path)
    async with serve_in_process(config) as server:
        client = await connect(server)
        assert "IDLE" in client.protocol.capabilities
        assert (await client.id(name="aioimaplib")).result == "OK"
        assert (await client.namespace()).lines[0] == b'(("" "/")) NIL NIL'
        listing = await client.list('""', "*")
        assert b'(\\HasNoChildren \\Sent) "/" "Sent"' in listing.lines
        assert (await client.create("Box")).result == "OK"
        assert (await client.subscribe("Box")).result == "OK"
        assert any(b'"Box"' in line for line in (await client.lsub('""', "*")).lines)
        assert (await client.unsubscribe("Box")).result == "OK"
        response = await client.append(b"Subject: hi\r\nMessage-ID: <a@b>\r\n\r\nhello\r\n",
                                       mailbox="Box", flags=r"(\Seen)")
        assert response.result == "OK" and b"[APPENDUID " in response.lines[-1]
        assert (await client.examine("Box")).result == "OK"
        assert (await client.select("Box")).result == "OK"
        assert (await client.search("SEEN")).lines[0] == b"1"
        assert (await client.uid_search("ALL")).lines[0] == b"1"
        fetched = await client.uid("fetch", "1", "(BODY.PEEK[TEXT])")
        assert fetched.lines[1] == bytearray(b"hello\r\n")
        assert (await client.store("1", "+FLAGS", "(Old)")).lines[0] == \
            b"1 FETCH (FLAGS (\\Seen Old \\Recent))"  # EXAMINE left it recent for SELECT
        assert (await client.copy("1", "INBOX")).result == "OK"
        assert (await client.move("1", "Trash")).result == "OK"
        assert (await client.check()).result == "OK"
        assert (await client.noop()).result == "OK"
        assert (await client.close()).result == "OK"
        assert (await client.rename("Box", "Box2")).result == "OK"
        assert (await client.delete("Box2")).result == "OK"
        status = await client.status("Trash", "(MESSAGES)")
        assert status.lines[0] == b'"Trash" (MESSAGES 1)'
        assert (await client.enable("UTF8=ACCEPT")).result == "OK"
        assert (await client.logout()).result == "OK"


async def test_rolled_back_memory_leaves_the_agents_folder(tmp_path, model_server):
    model_server.enqueue("To: user@localdomain\nSubject: one\n\nfirst answer")
    model_server.enqueue("To: user@localdomain\nSubject: two\n\nsecond answer")
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        client = await connect(server)
        await asyncio.to_thread(smtp_send, server, b"From: user@localdomain\r\n"
                                b"To: swe1@localdomain\r\nSubject: q1\r\n\r\nfirst\r\n",
                                ["swe1@localdomain"])
        await wait_for(lambda: len(model_server.requests) == 1, what="first answer")
        before = await client.select("Agents/swe1@localdomain")
        assert before.result == "OK"
        count = int(next(line.split()[0] for line in before.lines if line.endswith(b"EXISTS")))
        await wait_for(lambda: server.store.parties["swe1@localdomain"].memory[-1] > 7,
                       what="answer in memory")  # after 6 shipped + q1
        idle = await client.idle_start(timeout=20)
        # X-Rollback: 2 drops the last question and answer before this one is remembered
        await asyncio.to_thread(smtp_send, server, b"From: user@localdomain\r\n"
                                b"To: swe1@localdomain\r\nSubject: q2\r\nX-Rollback: 2\r\n\r\n"
                                b"again\r\n", ["swe1@localdomain"])
        line = await pushes_until(client, rb"EXPUNGE")
        assert line.endswith(b"EXPUNGE")
        client.idle_done()
        await asyncio.wait_for(idle, 5)
        await wait_for(lambda: len(model_server.requests) == 2, what="second answer")
        await client.noop()
        response = await client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [bytes(line).strip() for line in response.lines
                    if isinstance(line, bytearray)]
        assert b"Subject: q1" not in subjects and b"Subject: q2" in subjects
        assert count >= 5
        await client.logout()


async def test_five_idle_connections_like_thunderbird_each_hear_about_their_folder(tmp_path):
    config = make_config(tmp_path)  # no model key: swe1 answers with an error mail
    async with serve_in_process(config) as server:
        folders = ("INBOX", "Sent", "Trace", "Agents/swe1@localdomain", "Drafts")
        clients = {folder: await connect(server) for folder in folders}
        idles = {}
        counts = {}
        for folder, client in clients.items():
            response = await client.select(folder)
            counts[folder] = int(next(line.split()[0] for line in response.lines
                                      if line.endswith(b"EXISTS")))
            idles[folder] = await client.idle_start(timeout=20)
        await asyncio.to_thread(smtp_send, server, b"From: user@localdomain\r\n"
                                b"To: swe1@localdomain\r\nSubject: hello\r\n\r\nhi\r\n",
                                ["swe1@localdomain"])
        for folder in ("INBOX", "Sent", "Trace", "Agents/swe1@localdomain"):
            line = await pushes_until(clients[folder], rb"EXISTS$")
            assert int(line.split()[0]) > counts[folder], folder
        for folder, client in clients.items():
            client.idle_done()
            assert (await asyncio.wait_for(idles[folder], 5)).result == "OK"
        status = await clients["Drafts"].status("Drafts", "(MESSAGES)")
        assert status.lines[0] == b'"Drafts" (MESSAGES 0)'
        for client in clients.values():
            await client.logout()
