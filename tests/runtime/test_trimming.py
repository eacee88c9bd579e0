"""Memories longer than the model's window: the policy, and the worker that applies it."""

from __future__ import annotations

from mailcoach_server.errors import ModelError
from mailcoach_server.runtime.party import AgentProfile
from mailcoach_server.runtime.trimming import estimate_tokens, fit, shrunk_limit, trim_note
from mailcoach_server.runtime.workers import AgentWorker
from tests.runtime.memory_mailbox import MemoryBudget, MemoryMailbox, ScriptedModel
from tests.runtime.test_party_steps import AGENT, SHELL, mail, stop, until

USER = "user@localdomain"


def turn(sender: str, to: str, words: int, tag: str) -> tuple[str, str]:
    return sender, f"From: {sender}\nTo: {to}\nSubject: {tag}\n\n" + "word " * words


def sizes(memory) -> int:
    return sum(estimate_tokens(text) for _, text in memory)


MEMORY = [
    turn(USER, AGENT, 50, "training 1"), turn(AGENT, USER, 50, "training 2"),
    turn(USER, AGENT, 50, "old question"),
    turn(AGENT, SHELL, 50, "ls"), turn(SHELL, AGENT, 400, "Exit Code: 0"),
    turn(AGENT, USER, 50, "old answer"),
    turn(USER, AGENT, 50, "question now"),
]


def test_a_memory_that_fits_is_left_alone():
    assert fit(MEMORY, system="sys", limit=sizes(MEMORY) + 10, keep_first=2, agent=AGENT,
               robots={SHELL}) is None


def test_robot_exchanges_go_first_then_the_oldest_after_the_head_never_the_last():
    total = sizes(MEMORY) + estimate_tokens("sys")
    # Room for all but the shell output: the robot exchange alone goes, oldest first.
    trim = fit(MEMORY, system="sys", limit=total - estimate_tokens(MEMORY[4][1]),
               keep_first=2, agent=AGENT, robots={SHELL}, low_water=1.0)
    assert trim is not None and trim.drop == (3, 4) and trim.robot_messages == 2
    # Less room: then the oldest message after the two kept first ones.
    trim = fit(MEMORY, system="sys", limit=total - sizes(MEMORY[3:5]) - 10, keep_first=2,
               agent=AGENT, robots={SHELL}, low_water=1.0)
    assert trim.drop == (2, 3, 4)
    # No room at all: everything movable goes, the head and the question stay.
    trim = fit(MEMORY, system="sys", limit=1, keep_first=2, agent=AGENT, robots={SHELL})
    assert trim.drop == (2, 3, 4, 5) and trim.after > trim.limit
    subject, body = trim_note(trim, "openai/small")
    assert subject == "Memory trimmed"
    assert "removed 4 older messages" in body and "2 of them exchanges with robots" in body


def test_once_over_the_limit_it_trims_to_the_low_water_mark():
    total = sizes(MEMORY) + estimate_tokens("sys")
    limit = total - 10
    just_enough = fit(MEMORY, system="sys", limit=limit, keep_first=2, agent=AGENT,
                      robots={SHELL}, low_water=1.0)
    room = fit(MEMORY, system="sys", limit=limit, keep_first=2, agent=AGENT, robots={SHELL})
    assert just_enough.after <= limit and room.after <= limit * 0.75
    assert len(room.drop) > len(just_enough.drop)


def test_a_provider_that_says_too_long_gets_less_than_was_sent():
    sent = sizes(MEMORY) + estimate_tokens("sys")
    assert shrunk_limit(MEMORY, "sys", ()) < sent


def profile(window: int | None) -> AgentProfile:
    return AgentProfile(address=AGENT, system="You are swe1.", model="openai/small",
                        robots=frozenset({SHELL}), window_of=lambda spec: window, keep_first=2)


def long_conversation(mailbox: MemoryMailbox) -> None:
    for number in range(6):
        mailbox.remembered.append(turn(USER, AGENT, 60, f"q{number}"))
        mailbox.remembered.append(turn(AGENT, SHELL, 10, f"cmd{number}"))
        mailbox.remembered.append(turn(SHELL, AGENT, 200, f"Exit Code: {number}"))


async def test_the_worker_trims_to_the_known_window_and_the_note_is_in_memory():
    mailbox = MemoryMailbox(AGENT)
    long_conversation(mailbox)
    mailbox.deliver(mail("the question", body="What now?\n"))
    model = ScriptedModel("Subject: done\n\nok")
    worker = AgentWorker(mailbox, profile(1500), model=model, budget=MemoryBudget()).start()
    await until(lambda: mailbox.sent, "the reply")
    await stop(worker)
    (turns, _), = model.calls
    assert sum(estimate_tokens(t.content) for t in turns) <= 1500
    assert "What now?" in turns[-1].content  # the question itself is never cut
    assert "Subject: q0" in turns[1].content  # the head is kept
    texts = [text for _, text in mailbox.remembered]
    note = next(t for t in texts if "Memory trimmed" in t)
    # The note ends the memory (after the question, as a shell reply would come), so
    # this call does not see it; the next one does.
    assert texts.index(note) == len(texts) - 2  # then the reply
    assert not any("Memory trimmed" in t.content for t in turns)
    assert not any("Exit Code: 0" in t for t in texts)  # shell output went first
    assert any("Subject: q5" in t for t in texts)  # and the latest question stayed


async def test_without_a_known_window_the_providers_refusal_makes_it_trim_and_retry():
    mailbox = MemoryMailbox(AGENT)
    long_conversation(mailbox)
    mailbox.deliver(mail("the question"))
    too_long = ModelError("model call failed: maximum context length is 800 tokens",
                          context_exceeded=True)
    model = ScriptedModel(too_long, "Subject: done\n\nok")
    worker = AgentWorker(mailbox, profile(None), model=model, budget=MemoryBudget()).start()
    await until(lambda: mailbox.sent, "the reply")
    await stop(worker)
    first, second = (sum(estimate_tokens(t.content) for t in turns) for turns, _ in model.calls)
    assert second < first * 0.75
    assert mailbox.sent[0][0]["Subject"] == "done" and len(mailbox.trims) == 1


async def test_a_refusal_that_trimming_cannot_fix_ends_in_an_error_note_not_a_loop():
    mailbox = MemoryMailbox(AGENT)
    mailbox.deliver(mail("alone", body="word " * 2000))
    too_long = ModelError("prompt is too long", context_exceeded=True)
    model = ScriptedModel(too_long, too_long, too_long, too_long)
    worker = AgentWorker(mailbox, profile(None), model=model, budget=MemoryBudget()).start()
    await until(lambda: mailbox.sent, "the error note")
    await stop(worker)
    assert len(model.calls) == 3
    assert "prompt is too long" in mailbox.sent[0][0]["X-Mailcoach-Error"]
