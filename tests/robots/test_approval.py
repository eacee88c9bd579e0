"""Approval by mail: an agent's command waits for the user's yes.

End to end through ``serve_in_process``: the agent is the scripted model
server reached through litellm, the user speaks SMTP (smtplib) and reads
INBOX over IMAP (imaplib) or the mbox files; the console test drives the
real ``mailcoach`` process in a pseudo-terminal (pexpect). The rules and
the reading of answers are tested as pure functions first.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import smtplib
import sys
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pexpect
import pytest
from mailcoach_robots import RobotContext
from mailcoach_robots.approval_mail import answer_of
from mailcoach_robots.approval_rules import ApprovalPolicy
from mailcoach_robots.shell import ShellRobot

from mailcoach_server.errors import ConfigError
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

USER, AGENT, SHELL = "user@localdomain", "swe1@localdomain", "shell@localdomain"
#: the shell robot in tests: no sandbox (the tests may run as root), approval as given
def shell_options(**options: Any) -> dict[str, Any]:
    return {SHELL: {"sandbox": "none", "allow_unsandboxed_root": True, **options}}


# --- the rules ------------------------------------------------------------------


@pytest.mark.parametrize(("value", "command", "action"), [
    ("never", "rm -rf /", "run"),
    ("always", "ls", "ask"),
    ([{"run": ["ls", "ls *"]}, {"ask": "*"}], "ls  -la", "run"),
    ([{"run": ["ls", "ls *"]}, {"ask": "*"}], "ls; rm -rf ~", "ask"),
    ([{"run": ["cat *"]}], "cat a | sh", "ask"),
    ([{"run": ["cat *"]}], "cat $(rm x)", "ask"),
    ([{"run": ["cat *"]}], "cat > poem.txt", "ask"),
    ([{"run": ["cat *"]}], "rm x", "ask"),  # no rule matched: ask
    ([{"ask": "rm *"}, {"run": "*"}], "rm x", "ask"),
    ([{"ask": "rm *"}, {"run": "*"}], "touch x", "run"),
    ({"run": ["ls*", "cat *"], "ask": ["*"]}, "cat notes.txt", "run"),
    ({"run": ["ls*", "cat *"], "ask": ["*"]}, "git push", "ask"),
], ids=["never", "always", "run-rule", "operator-never-runs", "pipe", "substitution",
        "redirect", "no-match-asks", "first-match-ask", "first-match-run", "mapping-run",
        "mapping-ask"])
def test_which_commands_wait(value: Any, command: str, action: str) -> None:
    assert ApprovalPolicy.parse(value, "robots.shell.approval").decide(command)[0] == action


@pytest.mark.parametrize("value", [
    "sometimes", [], [{"run": "ls", "ask": "*"}], [{"allow": "ls"}], [{"run": []}],
    {"run": ["ls"], "deny": ["*"]}, [{"run": [3]}],
])
def test_bad_rules_name_the_key(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"robots\.shell@localdomain\.approval"):
        ShellRobot(RobotContext(SHELL, Path("/nonexistent"), {
            "approval": value, "sandbox": "none", "allow_unsandboxed_root": True},
            user=USER))


@pytest.mark.parametrize(("text", "verdict", "reason"), [
    ("yes\n", "yes", ""),
    ("Yes, go ahead.\n", "yes", ""),
    ("ok\n", "yes", ""),
    ("no: too risky\n", "no", "too risky"),
    ("No\nit deletes my notes\n", "no", "it deletes my notes"),
    ("\n\nno\n\nOn Mon, shell wrote:\n> Approve\n", "no", ""),
    ("yes\n\nOn Mon, 1 Jan 2024, shell@localdomain wrote:\n> no\n", "yes", ""),
    ("On Mon, shell wrote:\n> swe1 asks ...\n> yes or no\n\nno, not today\n", "no",
     "not today"),
    ("yesterday I said so\n", None, ""),
    ("maybe\n", None, ""),
    ("\n\n", None, ""),
    ("> yes\n", None, ""),
], ids=["yes", "yes-words", "ok", "no-reason-same-line", "no-reason-next-line",
        "no-top-posted", "yes-top-posted", "bottom-posted", "yesterday", "maybe", "empty",
        "only-quoted"])
def test_reading_the_answer(text: str, verdict: str | None, reason: str) -> None:
    answer = answer_of(text)
    assert (answer.verdict, answer.reason) == (verdict, reason) if verdict else answer is None


async def test_rules_on_the_robot(tmp_path: Path) -> None:
    robot = ShellRobot(RobotContext(SHELL, tmp_path, {
        "approval": [{"run": "echo *"}], "sandbox": "none", "allow_unsandboxed_root": True},
        user=USER))

    def command(sender: str, subject: str) -> EmailMessage:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, SHELL, subject
        message["Message-ID"] = f"<{len(subject)}.{sender}>"
        return message

    ran = await robot.handle(command(AGENT, "echo hi"))
    assert (ran["Subject"], ran["To"]) == ("Exit Code: 0", None)
    held = await robot.handle(command(AGENT, "echo hi > made.txt"))
    assert held["To"] == USER and held["Subject"].startswith("Approve: echo hi > made.txt [")
    assert "no rule lets it run" in held.get_content()
    mine = await robot.handle(command(USER, "echo mine > mine.txt"))  # the user's own: runs
    assert mine["Subject"] == "Exit Code: 0"
    assert sorted(p.name for p in robot.workdir.iterdir()) == ["mine.txt"]


def approving_robot(tmp_path: Path, **options: Any) -> ShellRobot:
    return ShellRobot(RobotContext(SHELL, tmp_path, {
        "approval": "always", "sandbox": "none", "allow_unsandboxed_root": True, **options},
        user=USER))


def robot_mail(sender: str, subject: str, body: str = "", number: int = 1) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, SHELL, subject
    message["Message-ID"] = f"<{number}@localdomain>"
    message.set_content(body)
    return message


async def test_a_yes_without_subject_answers_the_only_pending_request(tmp_path: Path) -> None:
    robot = approving_robot(tmp_path)
    await robot.handle(robot_mail(AGENT, "echo one > one.txt", number=1))
    ran = await robot.handle(robot_mail(USER, "", "yes\n", number=2))
    assert (ran["Subject"], ran["To"], ran["In-Reply-To"]) == (
        "Exit Code: 0", AGENT, "<1@localdomain>")
    await robot.handle(robot_mail(AGENT, "echo two > two.txt", number=3))
    await robot.handle(robot_mail(AGENT, "echo three > three.txt", number=4))
    which = await robot.handle(robot_mail(USER, "", "yes\n", number=5))
    assert which["Subject"] == "Which one?"
    listed = which.get_content()
    assert "2 commands wait" in listed
    assert "echo two > two.txt" in listed and "echo three > three.txt" in listed
    assert sorted(p.name for p in robot.workdir.iterdir()) == ["one.txt"]
    # Without a yes or no an empty Subject is what it always was.
    nothing = await robot.handle(robot_mail(USER, "", "hello\n", number=6))
    assert nothing["Subject"] == "Exit Code: 2"


def test_the_state_stays_out_of_the_work_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds the approval state"):
        approving_robot(tmp_path, workdir="robots")


def test_an_unreadable_state_file_is_named(tmp_path: Path) -> None:
    state = tmp_path / "robots" / SHELL / "approvals.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"requests": [{"token": "x"}]}')
    with pytest.raises(ConfigError, match=r"approvals\.json: the approval requests cannot be"):
        approving_robot(tmp_path)
    assert state.read_text() == '{"requests": [{"token": "x"}]}'  # nothing thrown away


def test_approval_needs_an_approver(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="approval needs an approver"):
        ShellRobot(RobotContext(SHELL, tmp_path, {"approval": "always", "sandbox": "none",
                                                  "allow_unsandboxed_root": True}))


# --- end to end -------------------------------------------------------------------


def submit(server: Any, message: EmailMessage) -> None:
    host, port = server.smtp_address
    with smtplib.SMTP(host, port) as smtp:
        smtp.login(server.config.user, server.credentials.password)
        smtp.send_message(message)


def mail(to: str, subject: str, body: str, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = USER, to, subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


def box(server: Any, address: str) -> list[Message]:
    return mbox_messages(server.config.data_dir / f"{address}.mbox")


def to_user(server: Any, sender: str, subject_start: str = "") -> list[Message]:
    return [m for m in box(server, USER) if m["From"] == sender
            and str(m["Subject"]).startswith(subject_start)]


def shell_to_agent(server: Any) -> list[Message]:
    return [m for m in box(server, AGENT) if m["From"] == SHELL]


def agent_command(server: Any, subject: str) -> Message:
    return next(m for m in box(server, AGENT)
                if m["From"] == AGENT and m["To"] == SHELL and m["Subject"] == subject)


def text_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def inbox_requests(server: Any) -> list[Message]:
    """The Approve mails in the user's INBOX, read over IMAP."""
    host, port = server.imap_address
    with imaplib.IMAP4(host, port) as client:
        client.login(server.config.user, server.credentials.password)
        client.select("INBOX", readonly=True)
        _, found = client.search(None, "SUBJECT", '"Approve:"')
        messages = []
        for number in found[0].split():
            _, data = client.fetch(number, "(BODY.PEEK[])")
            messages.append(message_from_bytes(data[0][1], policy=policy.default))
        return messages


def pending_tokens(server: Any) -> dict[str, str]:
    path = server.config.data_dir / "robots" / SHELL / "approvals.json"
    return {r["token"]: r["state"] for r in json.loads(path.read_text())["requests"]}


async def test_yes_runs_it_once_and_the_agent_gets_the_output(tmp_path: Path,
                                                              model_server: Any) -> None:
    command = "cat >> count.txt; wc -l < count.txt"
    model_server.enqueue(f"To: {SHELL}\nSubject: {command}\n\nran\n")
    model_server.enqueue(f"To: {USER}\nSubject: done\n\nIt ran once.")
    config = make_config(tmp_path, model_server.spec(), robots=shell_options(approval="always"))
    count = config.data_dir / "work" / "count.txt"
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, mail(AGENT, "count", "Append to count.txt."))
        await wait_for(lambda: to_user(server, SHELL, "Approve:"), what="the Approve mail")
        # as a mail client sees it; the party file may be written before the index commits
        for _ in range(200):
            found = await asyncio.to_thread(inbox_requests, server)
            if found:
                break
            await asyncio.sleep(0.05)
        (request,) = found
        assert str(request["Subject"]).startswith(f"Approve: {command} [approval ")
        body = request.get_content().replace("\r\n", "\n")
        assert f"{AGENT} asks {SHELL} to run this command" in body
        assert f"    {command}\n" in body and "--- stdin ---\nran\n" in body
        assert request["In-Reply-To"] == agent_command(server, command)["Message-ID"]
        assert not count.exists() and len(model_server.requests) == 1  # it waits
        await asyncio.to_thread(submit, server, mail(
            SHELL, "Re: " + str(request["Subject"]), "yes\n\n> " + body.splitlines()[0],
            In_Reply_To=request["Message-ID"], References=request["Message-ID"]))
        await wait_for(lambda: to_user(server, AGENT, "done"), what="the agent's answer")
        output = shell_to_agent(server)[-1]
        assert output["Subject"] == "Exit Code: 0"
        assert (output["To"], output["Cc"]) == (AGENT, USER)
        assert output["In-Reply-To"] == agent_command(server, command)["Message-ID"]
        assert text_of(output) == "--- stdout ---\n1\n"
        seen = model_server.requests[1]["messages"][-1]["content"]
        assert "Exit Code: 0" in seen and "From: shell@localdomain" in seen
        # A second yes is told, and runs nothing.
        await asyncio.to_thread(submit, server, mail(
            SHELL, "Re: again", "yes", In_Reply_To=request["Message-ID"]))
        note = await wait_for(lambda: [m for m in to_user(server, SHELL)
                                       if "already approved" in text_of(m)], what="the note")
        assert "it ran once and is not run again" in text_of(note[0])
        assert count.read_text() == "ran\n"
        assert list(pending_tokens(server).values()) == ["approved"]


async def test_no_with_a_reason_by_the_subject_token(tmp_path: Path, model_server: Any) -> None:
    model_server.enqueue(f"To: {SHELL}\nSubject: rm -f notes.txt\n\n")
    model_server.enqueue(f"To: {USER}\nSubject: ok\n\nYou refused.")
    config = make_config(tmp_path, model_server.spec(), robots=shell_options(approval="always"))
    notes = config.data_dir / "work" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("precious\n")
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, mail(AGENT, "tidy", "Remove notes.txt."))
        request = (await wait_for(lambda: to_user(server, SHELL, "Approve:"), what="request"))[0]
        # No threading at all (sendmail, a new mail): the token in the Subject names it.
        await asyncio.to_thread(submit, server, mail(
            SHELL, "Re: " + str(request["Subject"]), "no\nI still need them\n"))
        await wait_for(lambda: to_user(server, AGENT, "ok"), what="the agent's answer")
        refused = shell_to_agent(server)[-1]
        assert refused["Subject"] == "Exit Code: 126"
        assert text_of(refused) == "--- not run ---\nrefused by the user: I still need them\n"
        assert refused["In-Reply-To"] == agent_command(server, "rm -f notes.txt")["Message-ID"]
        assert "refused by the user: I still need them" in \
            model_server.requests[1]["messages"][-1]["content"]
    assert notes.read_text() == "precious\n"


async def test_an_agent_cannot_approve_its_own_command(tmp_path: Path,
                                                       model_server: Any) -> None:
    model_server.enqueue(f"To: {SHELL}\nSubject: touch made.txt\n\n")
    config = make_config(tmp_path, model_server.spec(), robots=shell_options(approval="always"))
    made = config.data_dir / "work" / "made.txt"
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, mail(AGENT, "make", "Create made.txt."))
        request = (await wait_for(lambda: to_user(server, SHELL, "Approve:"), what="request"))[0]
        (token,) = pending_tokens(server)
        # The agent learns the token and says yes itself.
        model_server.enqueue(f"To: {SHELL}\nSubject: Re: Approve: touch made.txt "
                             f"[approval {token}]\n\nyes")
        model_server.enqueue(f"To: {USER}\nSubject: stuck\n\nI may not approve it.")
        await asyncio.to_thread(submit, server, mail(AGENT, "go", "Approve it yourself."))
        await wait_for(lambda: to_user(server, AGENT, "stuck"), what="the agent giving up")
        refused = shell_to_agent(server)[-1]
        assert refused["Subject"].startswith("Not counted")
        assert f"Only {USER} can approve or refuse commands" in text_of(refused)
        assert not made.exists()
        assert pending_tokens(server) == {token: "pending"}
        # The user's yes still works.
        model_server.enqueue(f"To: {USER}\nSubject: made\n\nmade.txt exists now.")
        await asyncio.to_thread(submit, server, mail(SHELL, "Re: approve", "yes",
                                                     In_Reply_To=request["Message-ID"]))
        await wait_for(lambda: to_user(server, AGENT, "made"), what="the agent's answer")
        assert made.exists()


async def test_an_unanswered_request_expires_with_a_note_to_both(tmp_path: Path,
                                                                 model_server: Any) -> None:
    model_server.enqueue(f"To: {SHELL}\nSubject: touch late.txt\n\n")
    model_server.enqueue(f"To: {USER}\nSubject: gave up\n\nNobody approved it.")
    config = make_config(tmp_path, model_server.spec(),
                         robots=shell_options(approval="always", approval_timeout=1))
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, mail(AGENT, "late", "Create late.txt."))
        request = (await wait_for(lambda: to_user(server, SHELL, "Approve:"), what="request"))[0]
        expired = (await wait_for(lambda: to_user(server, SHELL, "Expired:"),
                                  what="the user's expiry note"))[0]
        assert expired["In-Reply-To"] == request["Message-ID"]
        await wait_for(lambda: to_user(server, AGENT, "gave up"), what="the agent's answer")
        note = shell_to_agent(server)[-1]
        assert note["Subject"] == "Exit Code: 126"
        assert f"not approved: {USER} did not answer within 1 s" in text_of(note)
        assert note["In-Reply-To"] == agent_command(server, "touch late.txt")["Message-ID"]
        # A late yes is told it expired.
        await asyncio.to_thread(submit, server, mail(SHELL, "Re: late", "yes",
                                                     In_Reply_To=request["Message-ID"]))
        await wait_for(lambda: [m for m in to_user(server, SHELL)
                                if "expired unanswered" in text_of(m)], what="the late note")
    assert not (config.data_dir / "work" / "late.txt").exists()


def test_a_request_survives_a_restart(tmp_path: Path, model_server: Any) -> None:
    # Two real server processes: a request asked by the first is answered in the second.
    model_server.enqueue(f"To: {SHELL}\nSubject: echo survived > kept.txt\n\n")
    data = config_data(tmp_path / "data", model_server.spec(),
                       robots=shell_options(approval="always"))
    path = write_config(tmp_path / "mailcoach.yaml", data)
    user_box = tmp_path / "data" / f"{USER}.mbox"

    def from_shell(start: str) -> list[Message]:
        return [m for m in mbox_messages(user_box)
                if m["From"] == SHELL and str(m["Subject"]).startswith(start)]

    def send(server: ServerProcess, message: EmailMessage) -> None:
        password = (tmp_path / "data" / "login").read_text().strip()
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.login(USER, password)
            smtp.send_message(message)

    with ServerProcess(path) as server:
        send(server, mail(AGENT, "keep", "Write kept.txt."))
        request = wait_until(lambda: from_shell("Approve:"), what="the request")[0]
    assert not (tmp_path / "data" / "work" / "kept.txt").exists()
    model_server.enqueue(f"To: {USER}\nSubject: kept\n\nIt survived.")
    with ServerProcess(path) as server:
        send(server, mail(SHELL, "Re: Approve", "yes", In_Reply_To=request["Message-ID"]))
        wait_until(lambda: [m for m in mbox_messages(user_box) if m["Subject"] == "kept"],
                   what="the agent's answer")
        send(server, mail(SHELL, "Re: Approve", "yes", In_Reply_To=request["Message-ID"]))
        wait_until(lambda: [m for m in from_shell("Re: Approve")
                            if "already approved" in text_of(m)], what="the second yes")
    memory = mbox_messages(tmp_path / "data" / f"{AGENT}.mbox")
    command = next(m for m in memory if m["Subject"] == "echo survived > kept.txt")
    output = [m for m in memory if m["In-Reply-To"] == command["Message-ID"]]
    assert [(m["From"], m["Subject"]) for m in output] == [(SHELL, "Exit Code: 0")]
    assert (tmp_path / "data" / "work" / "kept.txt").read_text() == "survived\n"


async def test_an_answer_that_is_not_yes_or_no_keeps_it_waiting(tmp_path: Path,
                                                                model_server: Any) -> None:
    model_server.enqueue(f"To: {SHELL}\nSubject: touch maybe.txt\n\n")
    config = make_config(tmp_path, model_server.spec(), robots=shell_options(approval="always"))
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, mail(AGENT, "maybe", "Create maybe.txt."))
        request = (await wait_for(lambda: to_user(server, SHELL, "Approve:"), what="request"))[0]
        await asyncio.to_thread(submit, server, mail(SHELL, "Re: x", "what does it do?",
                                                     In_Reply_To=request["Message-ID"]))
        note = await wait_for(lambda: [m for m in to_user(server, SHELL)
                                       if "Not understood" in text_of(m)], what="the note")
        assert "The request still waits." in text_of(note[0])
        assert list(pending_tokens(server).values()) == ["pending"]


# --- the console ------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["y", "n not on my machine"])
def test_the_console_asks_the_user_and_acts_on_the_answer(tmp_path: Path, model_server: Any,
                                                          answer: str) -> None:
    model_server.enqueue(f"To: {SHELL}\nSubject: echo approved-in-console\n\n")
    model_server.enqueue(f"To: {USER}\nSubject: done\n\nThe shell said approved-in-console.")
    data = config_data(tmp_path / "chat", model_server.spec(),
                       robots=shell_options(approval="always"))
    path = write_config(tmp_path / "mailcoach.yaml", data)
    child = pexpect.spawn(sys.executable, ["-m", "mailcoach_server", "--config", str(path),
                                           "-t", "chat", "--model", model_server.spec()],
                          cwd=str(tmp_path), encoding="utf-8", timeout=30,
                          dimensions=(40, 200))
    try:
        child.expect("> ")
        child.sendline("Run the echo, please.")
        child.expect(r"Subject: .*Approve: echo approved-in-console \[approval")
        # The request is a prompt: the answer goes back as a reply to it.
        child.expect(r"shell@localdomain: approve echo approved-in-console .*\? \[y/n reason\] ")
        child.sendline("maybe")
        child.expect(r"answer y \(run it\) or n")
        child.expect(r"\[y/n reason\] ")
        child.sendline(answer)
        child.expect("Exit Code: 0" if answer == "y" else "Exit Code: 126")
        child.expect("The shell said approved-in-console")
        child.expect("> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    if answer != "y":
        refused = [m for m in mbox_messages(tmp_path / "chat" / f"{AGENT}.mbox")
                   if m["From"] == SHELL][-1]
        assert "refused by the user: not on my machine" in text_of(refused)
        return
    output = [m for m in mbox_messages(tmp_path / "chat" / f"{AGENT}.mbox")
              if m["From"] == SHELL][-1]
    assert text_of(output) == "--- stdout ---\napproved-in-console\n"
