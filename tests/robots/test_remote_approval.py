"""Approval by mail for the remote shell: the command waits, then runs on a real stub process.

As ``test_approval.py`` does for the local shell: the agent is the scripted
model server reached through litellm, the user speaks SMTP (smtplib) and
reads INBOX over IMAP (or answers the console's prompt, in a pseudo-terminal);
the robot is ``kind: remote-shell`` and every command
that runs, runs in a ``mailcoach shell-stub`` subprocess on 127.0.0.1, so a
file in the stub's work directory is the proof it ran (and its absence that
it did not).
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import sys
from collections.abc import Iterator
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pexpect
import pytest
from mailcoach_robots import RobotContext
from mailcoach_robots.remote_shell import RemoteShellRobot

from mailcoach_server.errors import ConfigError
from mailcoach_server.runtime.plugins import load_robot
from tests.robots.test_approval import inbox_requests, mail, submit, text_of, to_user
from tests.robots.test_remote_shell import TOKEN, Stub, start_stub
from tests.support import (
    ServerProcess,
    config_data,
    make_config,
    mbox_messages,
    serve_in_process,
    wait_for,
    wait_until,
    write_config,
)

__all__: list[str] = []

USER, AGENT, REMOTE = "user@localdomain", "swe1@localdomain", "remote@localdomain"


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Stub]:
    started = start_stub(tmp_path, TOKEN)
    try:
        yield started
    finally:
        started.stop()


def remote_options(stub: Stub, **options: Any) -> dict[str, Any]:
    return {REMOTE: {"kind": "remote-shell", "url": stub.url, "token": TOKEN, **options}}


def box(server: Any, address: str) -> list[Message]:
    return mbox_messages(server.config.data_dir / f"{address}.mbox")


def remote_to_agent(server: Any) -> list[Message]:
    return [m for m in box(server, AGENT) if m["From"] == REMOTE]


def agent_command(server: Any, subject: str) -> Message:
    return next(m for m in box(server, AGENT)
                if m["From"] == AGENT and m["To"] == REMOTE and m["Subject"] == subject)


def states(data_dir: Path) -> dict[str, str]:
    """The robot's approval state file, on this side: token -> state."""
    path = data_dir / "robots" / REMOTE / "approvals.json"
    return {r["token"]: r["state"] for r in json.loads(path.read_text())["requests"]}


async def requests_over_imap(server: Any) -> list[Message]:
    """The Approve mails in INBOX, once IMAP shows them.

    The store appends a party's mbox before its index transaction commits,
    so the mbox may show a message a moment before IMAP does: poll (bounded).
    """
    for _ in range(200):
        found = await asyncio.to_thread(inbox_requests, server)
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("the Approve mail never showed in INBOX over IMAP")


# --- options --------------------------------------------------------------------


def test_the_approval_options_are_known(tmp_path: Path) -> None:
    from mailcoach_server.config import RobotSpec

    spec = RobotSpec(REMOTE, "remote-shell", {"url": "http://127.0.0.1:9", "approval": "always",
                                              "approver": USER, "approval_timeout": 60,
                                              "attach_max_bytes": 1000})
    robot = load_robot(spec, tmp_path, user=USER)
    assert robot.summary == "remote-shell, http://127.0.0.1:9, approval"
    plain = load_robot(RobotSpec(REMOTE, "remote-shell", {"url": "http://127.0.0.1:9"}),
                       tmp_path, user=USER)
    assert plain.summary == "remote-shell, http://127.0.0.1:9"


@pytest.mark.parametrize(("options", "key"), [
    ({"approval": "sometimes"}, "approval"),
    ({"approval": [{"allow": "ls"}]}, "approval"),
    ({"approval_timeout": 0}, "approval_timeout"),
    ({"approver": 3}, "approver"),
    ({"attach_max_bytes": -1}, "attach_max_bytes"),
])
def test_bad_approval_options_name_the_key(tmp_path: Path, options: dict[str, Any],
                                           key: str) -> None:
    with pytest.raises(ConfigError, match=rf"robots\.remote@localdomain\.{key}"):
        RemoteShellRobot(RobotContext(REMOTE, tmp_path, options, user=USER))


def test_approval_needs_an_approver(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="approval needs an approver"):
        RemoteShellRobot(RobotContext(REMOTE, tmp_path, {"approval": "always"}))


async def test_rules_hold_only_what_they_say(tmp_path: Path, stub: Stub) -> None:
    robot = RemoteShellRobot(RobotContext(REMOTE, tmp_path, {
        "url": stub.url, "token": TOKEN, "approval": [{"run": "echo *"}]}, user=USER))

    def command(sender: str, subject: str) -> EmailMessage:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, REMOTE, subject
        message["Message-ID"] = f"<{len(subject)}.{sender}>"
        return message

    ran = await robot.handle(command(AGENT, "echo hi"))
    assert (ran["Subject"], ran.get_content()) == ("Exit Code: 0", "--- stdout ---\nhi\n")
    held = await robot.handle(command(AGENT, "echo hi > made.txt"))
    assert held["To"] == USER and held["Subject"].startswith("Approve: echo hi > made.txt [")
    assert not (stub.workdir / "made.txt").exists()
    mine = await robot.handle(command(USER, "echo mine > mine.txt"))  # the user's own: runs
    assert mine["Subject"] == "Exit Code: 0"
    assert sorted(p.name for p in stub.workdir.iterdir()) == ["mine.txt"]
    assert list(states(tmp_path).values()) == ["pending"]


# --- end to end -------------------------------------------------------------------


async def test_yes_runs_it_on_the_stub_once(tmp_path: Path, model_server: Any,
                                            stub: Stub) -> None:
    command = "cat >> count.txt; wc -l < count.txt"
    model_server.enqueue(f"To: {REMOTE}\nSubject: {command}\n\nran\n")
    model_server.enqueue(f"To: {USER}\nSubject: done\n\nIt ran once.")
    config = make_config(tmp_path, model_server.spec(), robots=remote_options(stub,
                                                                              approval="always"))
    count = stub.workdir / "count.txt"
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, mail(AGENT, "count", "Append to count.txt."))
        await wait_for(lambda: to_user(server, REMOTE, "Approve:"), what="the Approve mail")
        (request,) = await requests_over_imap(server)  # as a mail client sees it
        assert str(request["Subject"]).startswith(f"Approve: {command} [approval ")
        body = request.get_content().replace("\r\n", "\n")
        assert f"{AGENT} asks {REMOTE} to run this command" in body
        assert f"    {command}\n" in body and "--- stdin ---\nran\n" in body
        assert request["In-Reply-To"] == agent_command(server, command)["Message-ID"]
        assert not count.exists() and len(model_server.requests) == 1  # it waits
        await asyncio.to_thread(submit, server, mail(
            REMOTE, "Re: " + str(request["Subject"]), "yes\n\n> " + body.splitlines()[0],
            In_Reply_To=request["Message-ID"], References=request["Message-ID"]))
        await wait_for(lambda: to_user(server, AGENT, "done"), what="the agent's answer")
        output = remote_to_agent(server)[-1]
        assert output["Subject"] == "Exit Code: 0"
        assert (output["To"], output["Cc"]) == (AGENT, USER)
        assert output["In-Reply-To"] == agent_command(server, command)["Message-ID"]
        assert text_of(output) == "--- stdout ---\n1\n"
        seen = model_server.requests[1]["messages"][-1]["content"]
        assert "Exit Code: 0" in seen and f"From: {REMOTE}" in seen
        # A second yes is told, and runs nothing.
        await asyncio.to_thread(submit, server, mail(
            REMOTE, "Re: again", "yes", In_Reply_To=request["Message-ID"]))
        note = await wait_for(lambda: [m for m in to_user(server, REMOTE)
                                       if "already approved" in text_of(m)], what="the note")
        assert "it ran once and is not run again" in text_of(note[0])
        assert count.read_text() == "ran\n"
        assert list(states(config.data_dir).values()) == ["approved"]
    # The state is this side's: nothing of it reaches the stub's work directory.
    assert sorted(p.name for p in stub.workdir.iterdir()) == ["count.txt"]


async def test_no_with_a_reason_refuses_it(tmp_path: Path, model_server: Any,
                                           stub: Stub) -> None:
    model_server.enqueue(f"To: {REMOTE}\nSubject: rm -f notes.txt\n\n")
    model_server.enqueue(f"To: {USER}\nSubject: ok\n\nYou refused.")
    config = make_config(tmp_path, model_server.spec(), robots=remote_options(stub,
                                                                              approval="always"))
    notes = stub.workdir / "notes.txt"
    notes.write_text("precious\n")
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, mail(AGENT, "tidy", "Remove notes.txt."))
        request = (await wait_for(lambda: to_user(server, REMOTE, "Approve:"),
                                  what="request"))[0]
        # No threading (sendmail, a new mail): the token in the Subject names it.
        await asyncio.to_thread(submit, server, mail(
            REMOTE, "Re: " + str(request["Subject"]), "no: I still need them\n"))
        await wait_for(lambda: to_user(server, AGENT, "ok"), what="the agent's answer")
        refused = remote_to_agent(server)[-1]
        assert refused["Subject"] == "Exit Code: 126"
        assert text_of(refused) == "--- not run ---\nrefused by the user: I still need them\n"
        assert refused["In-Reply-To"] == agent_command(server, "rm -f notes.txt")["Message-ID"]
        assert list(states(config.data_dir).values()) == ["refused"]
    assert notes.read_text() == "precious\n"


async def test_an_agent_cannot_approve_its_own_command(tmp_path: Path, model_server: Any,
                                                       stub: Stub) -> None:
    model_server.enqueue(f"To: {REMOTE}\nSubject: touch made.txt\n\n")
    config = make_config(tmp_path, model_server.spec(), robots=remote_options(stub,
                                                                              approval="always"))
    made = stub.workdir / "made.txt"
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, mail(AGENT, "make", "Create made.txt."))
        await wait_for(lambda: to_user(server, REMOTE, "Approve:"), what="request")
        (token,) = states(config.data_dir)
        # The agent learns the token and says yes itself.
        model_server.enqueue(f"To: {REMOTE}\nSubject: Re: Approve: touch made.txt "
                             f"[approval {token}]\n\nyes")
        model_server.enqueue(f"To: {USER}\nSubject: stuck\n\nI may not approve it.")
        await asyncio.to_thread(submit, server, mail(AGENT, "go", "Approve it yourself."))
        await wait_for(lambda: to_user(server, AGENT, "stuck"), what="the agent giving up")
        refused = remote_to_agent(server)[-1]
        assert refused["Subject"].startswith("Not counted")
        assert f"Only {USER} can approve or refuse commands for {REMOTE}" in text_of(refused)
        assert states(config.data_dir) == {token: "pending"}
    assert not made.exists()


async def test_an_unanswered_request_expires_with_a_note_to_both(tmp_path: Path,
                                                                 model_server: Any,
                                                                 stub: Stub) -> None:
    model_server.enqueue(f"To: {REMOTE}\nSubject: touch late.txt\n\n")
    model_server.enqueue(f"To: {USER}\nSubject: gave up\n\nNobody approved it.")
    config = make_config(tmp_path, model_server.spec(), robots=remote_options(
        stub, approval="always", approval_timeout=1))
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, mail(AGENT, "late", "Create late.txt."))
        request = (await wait_for(lambda: to_user(server, REMOTE, "Approve:"),
                                  what="request"))[0]
        expired = (await wait_for(lambda: to_user(server, REMOTE, "Expired:"),
                                  what="the user's expiry note"))[0]
        assert expired["In-Reply-To"] == request["Message-ID"]
        assert "touch late.txt" in text_of(expired)
        await wait_for(lambda: to_user(server, AGENT, "gave up"), what="the agent's answer")
        note = remote_to_agent(server)[-1]
        assert note["Subject"] == "Exit Code: 126"
        assert f"not approved: {USER} did not answer within 1 s" in text_of(note)
        assert note["In-Reply-To"] == agent_command(server, "touch late.txt")["Message-ID"]
        # A late yes is told it expired, and runs nothing.
        await asyncio.to_thread(submit, server, mail(REMOTE, "Re: late", "yes",
                                                     In_Reply_To=request["Message-ID"]))
        await wait_for(lambda: [m for m in to_user(server, REMOTE)
                                if "expired unanswered" in text_of(m)], what="the late note")
        assert list(states(config.data_dir).values()) == ["expired"]
    assert not (stub.workdir / "late.txt").exists()


def test_a_request_survives_a_restart(tmp_path: Path, model_server: Any, stub: Stub) -> None:
    # Two real server processes: a request asked by the first is answered in the second.
    model_server.enqueue(f"To: {REMOTE}\nSubject: echo survived > kept.txt\n\n")
    data_dir = tmp_path / "data"
    data = config_data(data_dir, model_server.spec(),
                       robots=remote_options(stub, approval="always"))
    path = write_config(tmp_path / "mailcoach.yaml", data)
    user_box = data_dir / f"{USER}.mbox"

    def from_remote(start: str) -> list[Message]:
        return [m for m in mbox_messages(user_box)
                if m["From"] == REMOTE and str(m["Subject"]).startswith(start)]

    def send(server: ServerProcess, message: EmailMessage) -> None:
        password = (data_dir / "login").read_text().strip()
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.login(USER, password)
            smtp.send_message(message)

    with ServerProcess(path) as server:
        assert any("remote-shell" in line and "approval" in line for line in server.banner)
        send(server, mail(AGENT, "keep", "Write kept.txt."))
        request = wait_until(lambda: from_remote("Approve:"), what="the request")[0]
    assert not (stub.workdir / "kept.txt").exists()
    assert list(states(data_dir).values()) == ["pending"]
    model_server.enqueue(f"To: {USER}\nSubject: kept\n\nIt survived.")
    with ServerProcess(path) as server:
        send(server, mail(REMOTE, "Re: Approve", "yes", In_Reply_To=request["Message-ID"]))
        wait_until(lambda: [m for m in mbox_messages(user_box) if m["Subject"] == "kept"],
                   what="the agent's answer")
        send(server, mail(REMOTE, "Re: Approve", "yes", In_Reply_To=request["Message-ID"]))
        wait_until(lambda: [m for m in from_remote("Re: Approve")
                            if "already approved" in text_of(m)], what="the second yes")
    memory = mbox_messages(data_dir / f"{AGENT}.mbox")
    command = next(m for m in memory if m["Subject"] == "echo survived > kept.txt")
    output = [m for m in memory if m["In-Reply-To"] == command["Message-ID"]]
    assert [(m["From"], m["Subject"]) for m in output] == [(REMOTE, "Exit Code: 0")]
    assert (stub.workdir / "kept.txt").read_text() == "survived\n"


# --- the console ------------------------------------------------------------------


def test_the_console_asks_and_the_stub_runs_it(tmp_path: Path, model_server: Any,
                                               stub: Stub) -> None:
    model_server.enqueue(f"To: {REMOTE}\nSubject: echo approved > console.txt; cat console.txt"
                         "\n\n")
    model_server.enqueue(f"To: {USER}\nSubject: done\n\nThe remote shell wrote console.txt.")
    data = config_data(tmp_path / "chat", model_server.spec(),
                       robots=remote_options(stub, approval="always"))
    path = write_config(tmp_path / "mailcoach.yaml", data)
    child = pexpect.spawn(sys.executable, ["-m", "mailcoach_server", "--config", str(path),
                                           "-t", "chat", "--model", model_server.spec()],
                          cwd=str(tmp_path), encoding="utf-8", timeout=30,
                          dimensions=(40, 200))
    try:
        child.expect("> ")
        child.sendline("Write console.txt on the remote machine.")
        # The request is a prompt: the answer goes back as a reply to it.
        child.expect(r"remote@localdomain: approve echo approved > console.txt; cat console.txt"
                     r".*\? \[y/n reason\] ")
        assert not (stub.workdir / "console.txt").exists()
        child.sendline("y")
        child.expect("Exit Code: 0")
        child.expect("The remote shell wrote console.txt")
        child.expect("> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert (stub.workdir / "console.txt").read_text() == "approved\n"
    output = [m for m in mbox_messages(tmp_path / "chat" / f"{AGENT}.mbox")
              if m["From"] == REMOTE][-1]
    assert text_of(output) == "--- stdout ---\napproved\n"
