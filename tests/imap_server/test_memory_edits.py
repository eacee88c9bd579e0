"""Teaching from a mail client: an agent's ``Agents/<address>`` folder is its memory.

A real server in a thread, imaplib as the client, the scripted model over HTTP:
what a client does to the folder is what the model sees on its next call, and
every edit is recorded (a message in Trace, a version in ``mailcoach memory``).
"""

from __future__ import annotations

import imaplib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mailcoach_server.health import advertised_addresses
from tests.imap_server.conftest import ThreadedServer
from tests.support import make_config, wait_until

USER = "user@localdomain"
SWE1 = "swe1@localdomain"
FOLDER = '"Agents/swe1@localdomain"'


@pytest.fixture
def teaching(tmp_path, model_server):
    server = ThreadedServer(make_config(tmp_path, model_server.spec())).start()
    try:
        yield server, model_server
    finally:
        server.stop()


def lesson(subject: str, body: str = "a fact worth knowing", sender: str = USER,
           to: str = SWE1) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@test>\r\n\r\n{body}\r\n").encode()


def seen_by_model(model_server, index: int = -1) -> str:
    """Everything the model was sent in one request, as one text."""
    return "\n".join(str(m["content"]) for m in model_server.requests[index]["messages"])


def ask(server: ThreadedServer, model_server, subject: str) -> str:
    """Mail swe1 a question; the text of the model request that answers it."""
    before = len(model_server.requests)
    model_server.enqueue(f"To: {USER}\nSubject: Re: {subject}\n\nanswered")
    server.send(lesson(subject, "a question"), [SWE1])
    wait_until(lambda: len(model_server.requests) > before, what="the model call")
    return seen_by_model(model_server)


def subjects(client: imaplib.IMAP4) -> list[str]:
    typ, data = client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    return [part[1].decode().strip().removeprefix("Subject: ")
            for part in data if isinstance(part, tuple)]


def memory_subjects(server: ThreadedServer, address: str = SWE1) -> list[str]:
    store = server.server.store
    return [store.meta(n).subject for n in store.parties[address].memory]


def mailcoach(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailcoach_server", "memory", "--config",
                           str(config_path), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONSAFEPATH": "1"})


# -- APPEND, EXPUNGE, MOVE: the next call sees exactly the folder ---------------------------


def test_appended_and_expunged_messages_are_what_the_model_sees(teaching):
    server, model = teaching
    client = server.imap()
    typ, data = client.append(FOLDER, None, None, lesson("lesson-alpha", "alpha is 17"))
    assert typ == "OK" and b"APPENDUID" in data[0], data
    client.append(FOLDER, None, None, lesson("lesson-beta", "beta is 23"))
    typ, _ = client.select(FOLDER)
    assert typ == "OK"
    in_folder = subjects(client)
    assert in_folder[-2:] == ["lesson-alpha", "lesson-beta"]
    assert in_folder == memory_subjects(server)

    seen = ask(server, model, "q1")
    assert seen.index("alpha is 17") < seen.index("beta is 23") < seen.index("a question")

    # delete lesson-alpha as claws-mail does: \Deleted, then EXPUNGE
    uid = client.uid("SEARCH", "HEADER", "Subject", "lesson-alpha")[1][0]
    assert client.uid("STORE", uid, "+FLAGS", r"(\Deleted)")[0] == "OK"
    typ, data = client.expunge()
    assert typ == "OK" and data and data[0] is not None, data
    assert "lesson-alpha" not in subjects(client)
    assert "lesson-alpha" not in memory_subjects(server)
    seen = ask(server, model, "q2")
    assert "alpha is 17" not in seen and "beta is 23" in seen

    # MOVE to Trash (Thunderbird's delete): out of the memory, kept in Trash
    uid = client.uid("SEARCH", "HEADER", "Subject", "lesson-beta")[1][0]
    assert client.uid("MOVE", uid, "Trash")[0] == "OK"
    assert "lesson-beta" not in memory_subjects(server)
    assert b"MESSAGES 1" in client.status("Trash", "(MESSAGES)")[1][0]
    seen = ask(server, model, "q3")
    assert "beta is 23" not in seen
    # the records of the two edits are in Trace, from the user to swe1
    client.select("Trace", readonly=True)
    typ, data = client.uid("SEARCH", "HEADER", "X-Mailcoach-Memory-Edit", "expunge")
    assert typ == "OK" and len(data[0].split()) == 2, data


def test_flags_in_an_agents_folder_stick_and_start_seen(teaching):
    server, _ = teaching
    client = server.imap()
    client.append(FOLDER, None, None, lesson("flagged"))
    client.select(FOLDER)
    uid = client.uid("SEARCH", "HEADER", "Subject", "flagged")[1][0]
    typ, data = client.uid("FETCH", uid, "(FLAGS)")
    assert rb"\Seen" in data[0]  # a memory is an archive: nothing in it is new mail
    client.uid("STORE", uid, "+FLAGS", r"(\Flagged important)")
    client.uid("STORE", uid, "-FLAGS", r"(\Seen)")
    client.logout()
    other = server.imap()
    other.select(FOLDER)
    typ, data = other.uid("FETCH", uid, "(FLAGS)")
    assert rb"\Flagged" in data[0] and b"important" in data[0] and rb"\Seen" not in data[0]
    assert b"UNSEEN 1" in other.status(FOLDER, "(UNSEEN)")[1][0]


def test_an_edit_reaches_another_clients_idle_at_once(teaching):
    server, _ = teaching
    watcher = server.imap()
    watcher.select(FOLDER)
    exists = int(watcher.untagged_responses["EXISTS"][-1])
    tag = watcher._new_tag().decode()
    watcher.send(f"{tag} IDLE\r\n".encode())
    assert watcher.readline().startswith(b"+")
    editor = server.imap()
    editor.append(FOLDER, None, None, lesson("seen-in-idle"))
    assert watcher.readline().strip() == f"* {exists + 1} EXISTS".encode()
    editor.select(FOLDER)
    editor.store(b"1", "+FLAGS", r"(\Deleted)")
    editor.expunge()
    lines = []
    for _ in range(6):  # RECENT, the flag change, then the expunge
        lines.append(watcher.readline().strip())
        if lines[-1] == b"* 1 EXPUNGE":
            break
    assert lines[-1] == b"* 1 EXPUNGE", lines
    watcher.send(b"DONE\r\n")
    while not watcher.readline().startswith(tag.encode()):
        pass


# -- CREATE and COPY: a new agent with a cloned memory -------------------------------------


def test_copying_a_folder_into_a_new_agents_folder_makes_that_agent(teaching):
    server, model = teaching
    client = server.imap()
    client.append(FOLDER, None, None, lesson("how-we-work", "always test first"))
    source = memory_subjects(server)
    assert client.create('"Agents/reviewer@localdomain"')[0] == "OK"
    assert "reviewer@localdomain" in server.server.store.parties
    client.select(FOLDER, readonly=True)
    typ, data = client.uid("COPY", "1:*", '"Agents/reviewer@localdomain"')
    assert typ == "OK", data
    assert client.untagged_responses.get("COPYUID"), "COPY answers with the new UIDs"
    assert memory_subjects(server, "reviewer@localdomain") == source
    client.select('"Agents/reviewer@localdomain"')
    typ, data = client.fetch(b"1:*", "(BODY.PEEK[HEADER.FIELDS (FROM TO)])")
    headers = b"".join(part[1] for part in data if isinstance(part, tuple))
    assert b"reviewer@localdomain" in headers and SWE1.encode() not in headers

    model.enqueue(f"To: {USER}\nSubject: Re: review\n\nlooks fine")
    server.send(lesson("review", "please review", to="reviewer@localdomain"),
                ["reviewer@localdomain"])
    wait_until(lambda: model.requests, what="the new agent's call")
    seen = seen_by_model(model)
    assert "always test first" in seen and "please review" in seen
    roles = [m["role"] for m in model.requests[-1]["messages"]]
    assert "assistant" in roles  # swe1's own messages are the new agent's own


@pytest.mark.parametrize("name, reason", [
    ('"Agents/shell@localdomain"', b"robot"),
    ('"Agents/user@localdomain"', b"user"),
    ('"Agents/swe1@localdomain"', b"exists"),
    ('"Agents/not an address"', b"NOPERM"),
    ('"Agents/a/b@localdomain"', b"NOPERM"),
    ('"Agents/x@elsewhere.example"', b"NOPERM"),
])
def test_a_new_agents_folder_must_name_a_new_local_agent(teaching, name, reason):
    server, _ = teaching
    client = server.imap()
    client.append(FOLDER, None, None, lesson("make the robot a party first",
                                             to="shell@localdomain"))
    parties = set(server.server.store.parties)
    typ, data = client.create(name)
    assert typ == "NO" and reason in data[0], data
    assert set(server.server.store.parties) == parties


@pytest.mark.parametrize("raw, reason", [
    (lesson("foreign", sender="someone@elsewhere.example"), b"sender"),
    (b"not a header line\r\n\r\nbody\r\n", b"header"),
    (b"From: user@localdomain\r\nSubject: deep\r\nContent-Type: multipart/mixed; "
     b"boundary=b\r\n\r\n" + b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" * 120,
     b"MIME"),
])
def test_a_hostile_append_is_refused_and_changes_nothing(teaching, raw, reason):
    server, _ = teaching
    client = server.imap()
    before = memory_subjects(server)
    typ, data = client.append(FOLDER, None, None, raw)
    assert typ == "NO" and b"[CANNOT]" in data[0] and reason in data[0], data
    assert memory_subjects(server) == before


def test_trace_and_a_robots_memory_stay_read_only(teaching):
    server, _ = teaching
    client = server.imap()
    for name in ('"Trace"', '"Agents/user@localdomain"'):
        typ, data = client.append(name, None, None, lesson("nope"))
        assert typ == "NO", (name, data)
    server.send(lesson("from the user"), [SWE1])  # the user is a party now
    wait_until(lambda: USER in server.server.store.parties, what="the user's party")
    with pytest.raises(imaplib.IMAP4.readonly):  # the server answered [READ-ONLY]
        client.select('"Agents/user@localdomain"')


# -- history and restore ---------------------------------------------------------------------


def test_history_lists_edits_and_restore_brings_a_version_back(tmp_path, model_server):
    config = make_config(tmp_path, model_server.spec())
    config_path = tmp_path / "mailcoach.yaml"
    server = ThreadedServer(config).start()
    try:
        client = server.imap()
        client.append(FOLDER, None, None, lesson("keep-me", "gamma is 5"))
        client.select(FOLDER)
        validity = int(client.untagged_responses["UIDVALIDITY"][-1])
        uid = client.uid("SEARCH", "HEADER", "Subject", "keep-me")[1][0]
        client.uid("STORE", uid, "+FLAGS", r"(\Deleted)")
        client.expunge()
        # readable beside the running server
        history = mailcoach(config_path, "history", SWE1)
        assert history.returncode == 0, history.stderr
        rows = [line.split() for line in history.stdout.splitlines()
                if re.match(r"\s*\d+\s", line)]
        assert [row[4] for row in rows] == ["imap-add", "imap-expunge"], history.stdout
        added, expunged = int(rows[0][0]), int(rows[1][0])
        listed = mailcoach(config_path, "list")
        count = len(server.server.store.parties[SWE1].memory)
        assert f"{SWE1}  {count} messages" in listed.stdout.splitlines(), listed.stdout
        shown = mailcoach(config_path, "show", SWE1, "--version", str(added))
        assert "keep-me" in shown.stdout
        assert "keep-me" not in mailcoach(config_path, "show", SWE1).stdout
        # the running server restores it (XRESTORE over IMAP), nothing stops; as
        # `mailcoach serve` does, server.json names the port it bound
        with advertised_addresses(config.data_dir, smtp=None,
                                  imap=server.server.imap_address):
            restored = mailcoach(config_path, "restore", SWE1, str(added))
        assert restored.returncode == 0, restored.stderr
        assert "keep-me" in memory_subjects(server)
        client.select(FOLDER)
        assert int(client.untagged_responses["UIDVALIDITY"][-1]) > validity  # look again
        assert "keep-me" in subjects(client)
        seen = ask(server, model_server, "after restore")
        assert "gamma is 5" in seen
        assert mailcoach(config_path, "restore", "shell@localdomain", "1").returncode == 1
    finally:
        server.stop()
    # with no server, restore writes the store itself
    restored = mailcoach(config_path, "restore", SWE1, str(expunged))
    assert restored.returncode == 0, restored.stderr
    server = ThreadedServer(config).start()
    try:
        assert "keep-me" not in memory_subjects(server)
    finally:
        server.stop()
    history = mailcoach(config_path, "history", SWE1)
    assert history.stdout.count("restore") == 2, history.stdout


def test_memory_commands_explain_what_is_wrong(tmp_path):
    missing = tmp_path / "none.yaml"
    missing.write_text(f"data_dir: {tmp_path / 'no-store'}\n")
    result = mailcoach(missing, "history", SWE1)
    assert result.returncode == 1 and "no mailcoach store" in result.stderr


def test_two_clients_editing_one_memory_at_once_lose_nothing(teaching):
    server, _ = teaching
    errors: list[BaseException] = []

    def add(name: str) -> None:
        try:
            client = server.imap()
            for n in range(10):
                typ, data = client.append(FOLDER, None, None, lesson(f"{name}-{n}"))
                assert typ == "OK", data
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    memory = server.server.store.parties[SWE1].memory
    assert memory == sorted(memory)  # UID order is memory order
    got = memory_subjects(server)
    assert all(f"{name}-{n}" in got for name in "ab" for n in range(10))


@pytest.mark.parametrize("arguments, answer", [
    (b'"Trace" 1', b"NO"),
    (b'"Agents/user@localdomain" 1', b"NO"),
    (b'"Agents/nobody@localdomain" 1', b"NO"),
    (b'"Agents/swe1@localdomain" -1', b"BAD"),
    (b'"Agents/swe1@localdomain"', b"BAD"),
])
def test_xrestore_refuses_what_is_not_an_agents_memory(teaching, arguments, answer):
    server, _ = teaching
    parties = server.server.store.parties
    known = len(parties[SWE1].memory)
    # swe1 only Bcc'd: it remembers the lesson and makes no model call (whose error note
    # would land in its memory at any time during the test)
    server.send(lesson("the user is a party", to=USER), [SWE1])
    wait_until(lambda: USER in parties and len(parties[SWE1].memory) > known,
               what="the user's party and swe1's copy")
    before = list(parties[SWE1].memory)
    client = server.imap()
    tag = client._new_tag()
    client.send(tag + b" XRESTORE " + arguments + b"\r\n")
    for _ in range(10):  # the tagged answer comes after any untagged ones
        line = client.readline()
        if line.startswith(tag):
            break
    assert line.split()[1] == answer, line
    assert server.server.store.parties[SWE1].memory == before
