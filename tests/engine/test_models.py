"""Agents on awkward models: strict chat templates, unpriced models, budgets in tokens.

End to end in one process: SMTP in, the agent through litellm over HTTP to the
scripted server (in its strict-template mode where it says so), the shell robot.
"""

from __future__ import annotations

import pytest

from mailcoach_server.app import banner, price_note
from mailcoach_server.config import load_config
from mailcoach_server.runtime.budgets import tokens_of
from mailcoach_server.runtime.llm import MERGED_TURN_SEPARATOR
from tests.engine.test_flow import mail, replies_to_user, send
from tests.support import config_data, make_config, serve_in_process, wait_for, write_config

# The first model call of a process imports litellm: seconds, more on a busy machine.
PATIENCE = 120.0
GEMMA = "gemma-2-9b-it"


def answers(server):
    return [m for m in replies_to_user(server) if m["X-Mailcoach-Error"] is None]


def errors(server):
    return [m for m in replies_to_user(server) if m["X-Mailcoach-Error"] is not None]


def roles(request) -> list[str]:
    return [m["role"] for m in request["messages"]]


async def ask_twice_then_use_the_shell(server, model_server):
    """The first mail meets a model that is down (an error note, kept out of the
    context), the second is a retry: two user turns in a row, then a shell round trip."""
    model_server.enqueue_error(503, "loading the model")
    model_server.enqueue_error(503, "loading the model")  # make_config: 1 retry
    await send(server, mail("swe1@localdomain", "uname", "Run uname -s for me."))
    await wait_for(lambda: errors(server), timeout=PATIENCE, what="the error note")
    model_server.enqueue("To: shell@localdomain\nSubject: echo strict-ok\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: done\n\nThe shell said strict-ok.")
    await send(server, mail("swe1@localdomain", "again", "Please retry."))


async def test_agent_on_a_strict_template_answers_after_a_shell_round_trip(
        tmp_path, model_server):
    model_server.alternate_roles, model_server.system_role = True, False  # vLLM + Gemma 2
    config = make_config(tmp_path, model_server.spec(GEMMA))  # "*gemma*" is shipped strict
    async with serve_in_process(config) as server:
        await ask_twice_then_use_the_shell(server, model_server)
        done = await wait_for(lambda: answers(server), timeout=PATIENCE, what="the answer")
        assert done[0]["Subject"] == "done"
        assert "strict-ok" in done[0].get_payload()
    assert model_server.rejected == []
    last = model_server.requests[-1]
    # user (primer + shipped memory's question), assistant, ..., the merged pair, the
    # agent's shell command, the shell's output: alternating, no system turn.
    assert roles(last) == ["user", "assistant"] * (len(roles(last)) // 2) + ["user"]
    first = last["messages"][0]["content"]
    assert first.startswith("You are swe1@localdomain") and MERGED_TURN_SEPARATOR in first
    pair = last["messages"][-3]["content"]
    assert "Run uname -s for me." in pair and "Please retry." in pair
    assert pair.index("Run uname") < pair.index(MERGED_TURN_SEPARATOR) < pair.index("Please")
    output = last["messages"][-1]["content"]
    assert "From: shell@localdomain" in output and "strict-ok" in output
    assert "echo strict-ok" in last["messages"][-2]["content"]


async def test_without_the_template_switch_the_sender_is_told_how_to_fix_it(
        tmp_path, model_server):
    model_server.alternate_roles, model_server.system_role = True, False
    config = make_config(tmp_path, model_server.spec(GEMMA),
                         models={"chat_templates": {"*gemma*": None}})
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "uname", "Run uname -s for me."))
        [note] = await wait_for(lambda: errors(server), timeout=PATIENCE, what="error note")
    assert len(model_server.rejected) == 1  # a 400 is not retried
    body = note.get_payload()
    assert "System role not supported" in body
    assert "models.chat_templates" in body and GEMMA in body


# -- prices and token budgets ---------------------------------------------------------


def test_banner_names_unpriced_models_and_the_default_price(tmp_path, model_server):
    priced = make_config(tmp_path, model_server.spec())  # support gives it a price
    assert price_note(priced) is None
    spec = model_server.spec("homegrown-7b")
    data = config_data(tmp_path / "data", spec)
    data["prices"] = {}
    config = load_config(write_config(tmp_path / "c.yaml", data))
    note = price_note(config)
    assert note is not None and spec in note and "$0.15 in, $0.6 out" in note
    data["default_price"] = None
    note = price_note(load_config(write_config(tmp_path / "c.yaml", data)))
    assert note is not None and "costs 0" in note and "budget_tokens" in note


async def test_banner_line_in_the_running_server(tmp_path, model_server):
    data = config_data(tmp_path / "data", model_server.spec("homegrown-7b"), budget_tokens=500)
    data["prices"] = {}
    config = load_config(write_config(tmp_path / "c.yaml", data))
    async with serve_in_process(config) as server:
        lines = banner(server).splitlines()
    assert sum("no price for" in line for line in lines) == 1
    assert "  budget 500 tokens for all agents" in lines


async def test_per_agent_token_budget_holds_across_a_restart(tmp_path, model_server):
    model_server.responder = lambda request: "To: user@localdomain\nSubject: ok\n\nok"
    model_server.usage = (10, 5)
    # 15 tokens a call: a budget of 20 allows two calls.
    config = make_config(tmp_path, model_server.spec(),
                         agents={"parties": {"swe1@localdomain": {"budget_tokens": 20}}})
    async with serve_in_process(config) as server:
        for n in (1, 2):
            await send(server, mail("swe1@localdomain", f"question {n}"))
            await wait_for(lambda n=n: len(answers(server)) == n, timeout=PATIENCE)
        await send(server, mail("swe1@localdomain", "question 3"))
        [note] = await wait_for(lambda: errors(server), timeout=PATIENCE, what="budget note")
        assert "budget spent" in note["Subject"]
        assert "budget of 20 tokens is spent (30 tokens)" in note.get_payload()
        assert server.engine.tokens.spent("swe1@localdomain") == 30
    assert len(model_server.requests) == 2
    async with serve_in_process(config) as server:  # the tally is read back from the mail
        assert server.engine.budget_problem("swe1@localdomain") is not None
        assert server.engine.tokens.spent() == 30
    assert len(model_server.requests) == 2


async def test_forged_token_headers_do_not_spend_the_budget(tmp_path, model_server):
    model_server.responder = lambda request: "To: user@localdomain\nSubject: ok\n\nok"
    config = make_config(tmp_path, model_server.spec(), budget_tokens=40)
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "forged", M_Tokens_Input="1000000",
                                M_Tokens_Output="1000000"))
        await wait_for(lambda: answers(server), timeout=PATIENCE, what="the answer")
        assert server.engine.tokens.spent() == 15


@pytest.mark.parametrize(("raw", "tokens"), [
    (b"Received: from localhost by d (mailcoach) with local (agent);\n\tdate\n"
     b"From: swe1@d\nM-Tokens-Input: 120\nM-Tokens-Output: 30\n\nbody\n", 150),
    (b"Received: from localhost by d (mailcoach) with ESMTP;\n\tdate\n"
     b"Received: from x by d (mailcoach) with local (agent);\n"
     b"From: user@d\nM-Tokens-Input: 99\n\nbody\n", 0),
    (b"Received: from localhost by d (mailcoach) with local (memory);\n"
     b"From: swe1@d\nM-Tokens-Input: 120\n\n", 0),
    (b"Received: from localhost by d (mailcoach) with local (agent);\n"
     b"From: swe1@d\n\nM-Tokens-Input: 120\n", 0),
    (b"Received: from localhost by d (mailcoach) with local (agent);\n"
     b"M-Tokens-Input: lots\nM-Tokens-Output: 7\n\n", 7),
], ids=["agent", "forged-below-smtp", "history", "in-body", "not-a-number"])
def test_tokens_of(raw, tokens):
    assert tokens_of(raw) == tokens
