"""A memory longer than the model's window, end to end: serve, SMTP, litellm over HTTP.

The scripted model server answers vLLM's 400 "maximum context length" above
``context_limit``; the agent must go on answering, its memory trimmed by the
documented policy with a note in it, and the trace keeping every message.
"""

from __future__ import annotations

from tests.engine.test_flow import mail, replies_to_user, send
from tests.support import make_config, mbox_messages, serve_in_process, wait_for

AGENT = "tutor@localdomain"
QUESTIONS = 8
#: the body of each question: ~250 tokens as the scripted server counts (4 characters)
BODY = "This is a long question with many words in it. " * 20


def answer(request):
    return "To: user@localdomain\nSubject: answer\n\n" + "A long answer. " * 30


async def ask_all(server):
    for number in range(QUESTIONS):
        await send(server, mail(AGENT, f"question {number}", BODY))
        await wait_for(lambda n=number: len(replies_to_user(server)) > n, timeout=120,
                       what=f"the answer to question {number}")


async def test_a_memory_past_the_window_is_trimmed_when_the_provider_refuses(tmp_path,
                                                                              model_server):
    model_server.responder = answer
    model_server.context_limit = 1500
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await ask_all(server)
    replies = replies_to_user(server)
    assert len(replies) == QUESTIONS
    assert [r["X-Mailcoach-Error"] for r in replies] == [None] * QUESTIONS  # never stuck
    assert model_server.rejected, "the memory never outgrew the window: the test proves nothing"
    memory = mbox_messages(config.data_dir / f"{AGENT}.mbox")
    notes = [m for m in memory if m["Subject"] == "Memory trimmed"]
    assert notes and "older message" in notes[-1].get_payload()
    assert memory[-1]["Subject"] == "answer"  # the newest exchange stays
    trace = mbox_messages(config.data_dir / "trace")
    asked = {m["Subject"] for m in trace if m["From"] == "user@localdomain"}
    assert asked == {f"question {n}" for n in range(QUESTIONS)}  # the trace keeps all


async def test_a_configured_window_trims_before_the_call_so_nothing_is_refused(tmp_path,
                                                                             model_server):
    model_server.responder = answer
    model_server.context_limit = 1500
    config = make_config(tmp_path, model_server.spec(),
                         models={"context_windows": {"openai/scripted": 1500}})
    async with serve_in_process(config) as server:
        await ask_all(server)
    assert model_server.rejected == []
    assert len(model_server.requests) == QUESTIONS
    memory = mbox_messages(config.data_dir / f"{AGENT}.mbox")
    assert any(m["Subject"] == "Memory trimmed" for m in memory)
    # The first messages (the kept head, limits.keep_first) are still there.
    assert memory[0]["Subject"] == "question 0"
