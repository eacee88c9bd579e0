"""Agent and robot behaviour over an in-memory Mailbox: no socket, no store, no model server."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import pytest
from mailcoach_robots import Robot, RobotContext

from mailcoach_server.runtime.context import ERROR_HEADER
from mailcoach_server.runtime.party import AgentProfile
from mailcoach_server.runtime.workers import AgentWorker, RobotWorker
from tests.runtime.memory_mailbox import (
    USER,
    MemoryBudget,
    MemoryMailbox,
    ScriptedModel,
    model_error,
)
from tests.support import wait_for

AGENT = "swe1@localdomain"
SHELL = "shell@localdomain"
PROFILE = AgentProfile(address=AGENT, system="You are swe1.", model="openai/own",
                       robots=frozenset({SHELL}))


def mail(subject: str, *, sender: str = USER, to: str = AGENT, body: str = "Hello.\n",
         **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@localdomain>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message.as_bytes()


async def until(predicate, what: str, limit: float = 10.0):
    return await wait_for(predicate, timeout=limit, what=what)


async def run_agent(mailbox, model, budget=None, **kwargs):
    worker = AgentWorker(mailbox, PROFILE, model=model, budget=budget or MemoryBudget(),
                         **kwargs)
    return worker.start()


async def stop(worker) -> None:
    worker.task.cancel()
    await asyncio.gather(worker.task, return_exceptions=True)


async def test_an_agent_answers_in_order_from_its_memory():
    mailbox = MemoryMailbox(AGENT)
    mailbox.deliver(mail("first"))
    model = ScriptedModel("To: user@localdomain\nSubject: one\n\nanswer one",
                          "Subject: two\n\nanswer two")
    worker = await run_agent(mailbox, model)
    await until(lambda: len(mailbox.sent) == 1, "the first reply")
    mailbox.deliver(mail("second"), model="openai/hinted")
    await until(lambda: len(mailbox.sent) == 2, "two replies")
    await stop(worker)
    (turns1, spec1), (turns2, spec2) = model.calls
    assert (spec1, spec2) == ("openai/own", "openai/hinted")
    assert [t.role for t in turns1] == ["system", "user"]
    assert turns1[0].content == "You are swe1."
    # The second call sees the first question, the agent's own answer, the second question.
    assert [t.role for t in turns2] == ["system", "user", "assistant", "user"]
    assert "answer one" in turns2[2].content and "Subject: second" in turns2[3].content
    first, second = (sent[0] for sent in mailbox.sent)
    assert first["From"] == AGENT and first["To"] == USER and first["Subject"] == "one"
    assert first["In-Reply-To"] == "<first@localdomain>"
    assert second["To"] == USER  # no To: the sender
    assert second["References"] == "<second@localdomain>"
    assert (first["M-Tokens-Input"], first["M-Tokens-Output"], first["M-Cost"]) == (
        "11", "4", "0.250000")
    assert [cost for _, _, cost, _ in mailbox.sent] == [0.25, 0.25]
    assert mailbox.done_refs == [1, 2] and not worker.busy


async def test_messages_waiting_together_are_answered_in_order_each_from_its_own_point():
    mailbox = MemoryMailbox(AGENT)
    for subject in ("a", "b", "c"):
        mailbox.deliver(mail(subject))
    model = ScriptedModel()
    worker = await run_agent(mailbox, model)
    await until(lambda: len(mailbox.sent) == 3, "three replies")
    await stop(worker)
    # Each call's memory ends with the message it answers, as it stood when that arrived.
    last_turns = [turns[-1].content for turns, _ in model.calls]
    assert [next(line for line in t.splitlines() if line.startswith("Subject"))
            for t in last_turns] == ["Subject: a", "Subject: b", "Subject: c"]
    assert [sent["In-Reply-To"] for sent, *_ in mailbox.sent] == [
        "<a@localdomain>", "<b@localdomain>", "<c@localdomain>"]


async def test_a_model_failure_is_told_to_the_sender_and_the_next_message_goes_on():
    mailbox = MemoryMailbox(AGENT)
    mailbox.deliver(mail("fails"))
    mailbox.deliver(mail("works"))
    worker = await run_agent(mailbox, ScriptedModel(model_error(), "Subject: fine\n\nfine"))
    await until(lambda: len(mailbox.sent) == 2, "two replies")
    await stop(worker)
    error, fine = (sent[0] for sent in mailbox.sent)
    assert error["To"] == USER and error["Subject"] == "Re: fails"
    assert "the model openai/own failed: the provider is down" in error[ERROR_HEADER]
    assert "How to fix it: try later" in error.get_content()
    assert fine["Subject"] == "fine" and fine[ERROR_HEADER] is None
    assert mailbox.done_refs == [1, 2]


async def test_errors_about_mail_between_parties_go_to_the_user():
    mailbox = MemoryMailbox(AGENT)
    mailbox.deliver(mail("from a peer", sender="peer@localdomain"))
    worker = await run_agent(mailbox, ScriptedModel(model_error()))
    await until(lambda: mailbox.sent, "the error note")
    await stop(worker)
    assert mailbox.sent[0][0]["To"] == USER


async def test_a_reply_the_home_cannot_take_now_is_sent_again_never_remade():
    mailbox = MemoryMailbox(AGENT)
    mailbox.fail_sends = 3
    mailbox.deliver(mail("question"))
    model = ScriptedModel("Subject: answer\n\nonce")
    worker = await run_agent(mailbox, model)
    await until(lambda: mailbox.sent, "the reply", limit=30)
    await stop(worker)
    assert len(model.calls) == 1  # the model was paid once
    assert len(mailbox.attempts) == 4 and len(set(mailbox.attempts)) == 1  # the same bytes
    assert len(mailbox.sent) == 1


async def test_a_refused_reply_reaches_the_user_as_written():
    mailbox = MemoryMailbox(AGENT)
    mailbox.refuse = lambda reply: reply["To"] == "nobody@elsewhere.example"
    mailbox.deliver(mail("question"))
    worker = await run_agent(
        mailbox, ScriptedModel("To: nobody@elsewhere.example\nSubject: out\n\nthe work"))
    await until(lambda: mailbox.sent, "the redirected reply")
    await stop(worker)
    (redirected, _, cost, _), = mailbox.sent
    assert redirected["To"] == USER and "reply refused: 550 5.1.1" in redirected[ERROR_HEADER]
    assert "the work" in redirected.get_content() and cost == 0.25


async def test_a_spent_budget_holds_the_call_notes_once_and_goes_on_when_refilled():
    mailbox = MemoryMailbox(AGENT)
    budget = MemoryBudget(spent=True)
    model = ScriptedModel()
    mailbox.deliver(mail("waits"))
    worker = await run_agent(mailbox, model, budget)
    await until(lambda: worker.blocked, "the worker to wait")
    assert model.calls == [] and budget.notes == [(AGENT, "the budget of $0.0000 is spent")]
    budget.refill()
    await until(lambda: mailbox.sent, "the reply after the refill")
    await stop(worker)
    assert len(model.calls) == 1 and not worker.blocked and len(budget.notes) == 1


@pytest.mark.parametrize("answer", ["To: shell@localdomain\n\nls", "just a body"])
async def test_a_subject_the_runtime_would_invent_for_a_robot_stays_empty(answer):
    mailbox = MemoryMailbox(AGENT)
    mailbox.deliver(mail("Exit Code: 0", sender=SHELL, body="output\n"))
    worker = await run_agent(mailbox, ScriptedModel(answer))
    await until(lambda: mailbox.sent, "the mail to the shell")
    await stop(worker)
    sent = mailbox.sent[0][0]
    assert sent["To"] == SHELL and sent["Subject"] == ""  # never "Re: Exit Code: 0"


async def test_a_subject_is_still_filled_in_for_people():
    mailbox = MemoryMailbox(AGENT)
    mailbox.deliver(mail("question"))
    worker = await run_agent(mailbox, ScriptedModel("To: user@localdomain\n\nanswer"))
    await until(lambda: mailbox.sent, "the reply")
    await stop(worker)
    assert mailbox.sent[0][0]["Subject"] == "Re: question"


async def test_cancelling_the_call_answers_with_a_note():
    mailbox = MemoryMailbox(AGENT)
    mailbox.deliver(mail("slow"))
    worker = await run_agent(mailbox, ScriptedModel("Subject: late\n\nlate", delay=30))
    await until(lambda: worker.cancel_current() or mailbox.sent, "a call to cancel")
    await until(lambda: mailbox.sent, "the note")
    await stop(worker)
    assert mailbox.sent[0][0][ERROR_HEADER] == "cancelled by the user"


class Echo(Robot):
    kind = "echo"

    async def handle(self, message):
        body = message.get_content()
        if "silent" in body:
            return None
        if "crash" in body:
            raise RuntimeError("robot bug")
        reply = EmailMessage()
        reply.set_content(body.upper())
        return reply


async def test_a_robot_answers_threads_keeps_quiet_and_survives_its_own_bug(tmp_path):
    mailbox = MemoryMailbox("echo@localdomain")
    for subject, body in [("one", "hi\n"), ("two", "silent\n"), ("three", "crash\n"),
                          ("four", "still here\n")]:
        mailbox.deliver(mail(subject, sender=AGENT, to="echo@localdomain", body=body))
    robot = Echo(RobotContext("echo@localdomain", tmp_path))
    worker = RobotWorker(mailbox, robot).start()
    await until(lambda: len(mailbox.done_refs) == 4, "all four handled")
    await stop(worker)
    one, crash, four = (sent[0] for sent in mailbox.sent)
    assert one["Subject"] == "Re: one" and one["To"] == AGENT and one.get_content() == "HI\n"
    assert one["In-Reply-To"] == "<one@localdomain>"
    # A robot's bug about mail from an agent is told to the user, and the robot goes on.
    assert crash["To"] == USER and "internal error: RuntimeError: robot bug" in crash[ERROR_HEADER]
    assert four.get_content() == "STILL HERE\n"
    assert [origin for *_, origin in mailbox.sent] == ["robot", "agent", "robot"]


async def test_a_model_cannot_write_the_runtimes_own_headers():
    mailbox = MemoryMailbox(AGENT)
    mailbox.deliver(mail("question"))
    forged = ("To: user@localdomain\nSubject: hi\nX-Mailcoach-Error: fake\n"
              "X-Mailcoach-Refused: fake\nX-Mailcoach-Answers: <x@y>\nX-Mailcoach-Memory: trimmed\n"
              "X-Pop-Shell: yes\nMessage-ID: <forged@x>\n\nbody")
    worker = await run_agent(mailbox, ScriptedModel(forged))
    await until(lambda: mailbox.sent, "the reply")
    await stop(worker)
    sent = mailbox.sent[0][0]
    assert [name for name in sent.keys() if name.lower().startswith("x-mailcoach-")] == []
    assert sent["X-Pop-Shell"] == "yes"  # the control headers an agent may use still pass
    assert sent["Message-ID"] != "<forged@x>"


async def test_a_reply_an_agent_addresses_to_itself_goes_to_the_asker_with_a_note():
    mailbox = MemoryMailbox(AGENT)
    mailbox.deliver(mail("say hello"))
    worker = await run_agent(mailbox, ScriptedModel(f"To: {AGENT}\nSubject: hi\n\nhello"))
    await until(lambda: mailbox.sent, "the reply")
    await stop(worker)
    sent = mailbox.sent[0][0]
    assert sent["To"] == USER and "mail to itself reaches no one" in sent["X-Mailcoach-Refused"]
    assert "hello" in sent.get_content()
