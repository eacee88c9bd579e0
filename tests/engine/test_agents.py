"""Agent behaviour: control headers, cloning, budgets, the auto-round limit."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.test_flow import mail, replies_to_user, send
from tests.support import make_config, mbox_messages, serve_in_process, wait_for


def memory_subjects(server, address):
    return [m["Subject"] for m in mbox_messages(server.config.data_dir / f"{address}.mbox")]


def echo_responder(request):
    """Answer each call with the subject of the last message the model saw."""
    last = request["messages"][-1]["content"]
    subject = next(line for line in last.splitlines() if line.startswith("Subject: "))
    return f"To: user@localdomain\nSubject: answer to {subject[9:]}\n\nok"


async def test_x_hint_model_switches_and_empty_goes_back(tmp_path, model_server):
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    other = model_server.spec("other")
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "one", X_Hint_Model=other))
        await wait_for(lambda: len(replies_to_user(server)) == 1)
        await send(server, mail("swe1@localdomain", "two"))
        await wait_for(lambda: len(replies_to_user(server)) == 2)
        await send(server, mail("swe1@localdomain", "three", X_Hint_Model=""))
        await wait_for(lambda: len(replies_to_user(server)) == 3)
    models = [r["model"] for r in model_server.requests]
    assert models == ["other", "other", "scripted"]
    assert [m["M-Model"] for m in replies_to_user(server)] == [other, other,
                                                                model_server.spec()]


async def test_x_rollback_and_x_drop(tmp_path, model_server):
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "first"))
        await wait_for(lambda: len(replies_to_user(server)) == 1)
        before = memory_subjects(server, "swe1@localdomain")
        # Keep messages 0..3 (the shipped memory), drop "first" and its answer.
        await send(server, mail("swe1@localdomain", "again", X_Rollback="3"))
        await wait_for(lambda: len(replies_to_user(server)) == 2)
        after = memory_subjects(server, "swe1@localdomain")
        assert before[-2:] == ["first", "answer to first"]
        assert after == before[:4] + ["again", "answer to again"]
        # The model saw the rolled-back memory.
        seen = [m["content"] for m in model_server.requests[-1]["messages"]]
        assert not any("Subject: first" in c for c in seen)
        # X-Drop: headers apply, the message is not remembered, nobody answers.
        await send(server, mail("swe1@localdomain", "dropped", X_Drop="yes",
                                X_Hint_Model=model_server.spec("switched")))
        await send(server, mail("swe1@localdomain", "after drop"))
        await wait_for(lambda: len(replies_to_user(server)) == 3)
        assert "dropped" not in memory_subjects(server, "swe1@localdomain")
        assert model_server.requests[-1]["model"] == "switched"
        assert len(model_server.requests) == 3


async def test_x_pop_shell_drops_the_trailing_shell_exchange(tmp_path, model_server):
    model_server.enqueue("To: shell@localdomain\nSubject: echo one\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: done\n\nran it")
    model_server.enqueue("To: user@localdomain\nSubject: popped\n\nok")
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "run echo"))
        await wait_for(lambda: len(replies_to_user(server)) == 1)
        # The agent's last message went to the user, so nothing trails: first send
        # one more shell exchange by hand, then pop it.
        await send(server, mail("shell@localdomain", "echo two", Cc="swe1@localdomain"))
        await wait_for(lambda: len(replies_to_user(server)) == 2)
        memory = memory_subjects(server, "swe1@localdomain")
        assert memory[-1] == "echo two"
        await send(server, mail("swe1@localdomain", "pop", X_Pop_Shell="yes"))
        await wait_for(lambda: len(replies_to_user(server)) == 3)
        memory = memory_subjects(server, "swe1@localdomain")
        assert memory[-3:] == ["done", "pop", "popped"]
        assert "echo two" not in memory


async def test_x_expect_waits_for_every_expected_sender(tmp_path, model_server):
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "wait for the shell",
                                X_Expect="shell@localdomain"))
        await asyncio.sleep(0.3)
        assert model_server.requests == []
        await send(server, mail("shell@localdomain", "echo from-shell", Cc="user@localdomain"))
        # The shell's reply goes to the user only: swe1 is not a recipient, still waits.
        await wait_for(lambda: len(replies_to_user(server)) == 1)
        assert model_server.requests == []
        await send(server, mail("swe1@localdomain", "shell says hi",
                                sender="shell@localdomain"))
        await wait_for(lambda: len(model_server.requests) == 1)
        assert "Subject: shell says hi" in model_server.requests[0]["messages"][-1]["content"]


async def test_new_agent_clones_its_ancestor_with_addresses_rewritten(tmp_path, model_server):
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "teach swe1", "swe1@localdomain knows; "
                                "swe10@localdomain and b.swe1@localdomain are others"))
        await wait_for(lambda: len(replies_to_user(server)) == 1)
        await send(server, mail("a.swe1@localdomain", "hello clone"))
        await wait_for(lambda: len(replies_to_user(server)) == 2)
        clone = mbox_messages(server.config.data_dir / "a.swe1@localdomain.mbox")
        original = mbox_messages(server.config.data_dir / "swe1@localdomain.mbox")
        assert len(clone) == len(original) + 2
        taught = next(m for m in clone if m["Subject"] == "teach swe1")
        assert taught["To"] == "a.swe1@localdomain"
        body = taught.get_payload()
        assert "a.swe1@localdomain knows" in body
        assert "swe10@localdomain" in body and "b.swe1@localdomain" in body
        # The clone's model call showed the copied memory as its own.
        turns = model_server.requests[-1]["messages"]
        assert any(t["role"] == "assistant" and "From: a.swe1@localdomain" in t["content"]
                   for t in turns)
        assert replies_to_user(server)[-1]["From"] == "a.swe1@localdomain"
        # The original is untouched.
        assert all("a.swe1" not in (m["To"] or "") for m in original)


async def test_budget_spent_mail_waits_then_goes_on(tmp_path, model_server):
    model_server.responder = echo_responder
    # Each call costs 10*1 + 5*2 = 20 USD per million tokens = 0.00002 USD.
    config = make_config(tmp_path, model_server.spec(), budget=0.00003)
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "one"))
        await send(server, mail("swe1@localdomain", "two"))
        await send(server, mail("swe1@localdomain", "three"))
        await wait_for(lambda: any("budget" in (m["Subject"] or "")
                                   for m in replies_to_user(server)), what="budget note")
        await asyncio.sleep(0.3)
        answered = [m for m in replies_to_user(server) if m["From"] == "swe1@localdomain"]
        assert len(answered) == 2 and len(model_server.requests) == 2
        assert len(server.store.pending_deliveries("swe1@localdomain")) == 1
        server.engine.set_budget(1.0)
        await wait_for(lambda: len([m for m in replies_to_user(server)
                                    if m["From"] == "swe1@localdomain"]) == 3)
        assert server.store.spent() == pytest.approx(3 * 0.00002)


async def test_per_agent_budget(tmp_path, model_server):
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec(),
                         agents={"parties": {"swe1@localdomain": {"budget": 0.00001}}})
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "one"))
        await send(server, mail("swe2@localdomain", "two"))
        await send(server, mail("swe1@localdomain", "three"))
        await wait_for(lambda: len(model_server.requests) == 2)
        await wait_for(lambda: any("swe1@localdomain waits" in (m["Subject"] or "")
                                   for m in replies_to_user(server)))
        senders = sorted(m["From"] for m in replies_to_user(server)
                         if not m["X-Mailcoach-Error"])
        assert senders == ["swe1@localdomain", "swe2@localdomain"]


async def test_two_agents_stop_at_the_round_limit(tmp_path, model_server):
    def ping_pong(request):
        system = request["messages"][0]["content"]
        me = system.split()[2].rstrip(",")
        other = "bob@localdomain" if me == "alice@localdomain" else "alice@localdomain"
        return f"To: {other}\nSubject: ping\n\nyour turn"
    model_server.responder = ping_pong
    config = make_config(tmp_path, model_server.spec(), limits={"max_auto_rounds": 6})
    async with serve_in_process(config) as server:
        await send(server, mail("alice@localdomain", "start", Cc="bob@localdomain"))
        note = await wait_for(lambda: [m for m in replies_to_user(server)
                                       if (m["Subject"] or "").startswith("Stopped")],
                              what="the stop note")
        await asyncio.sleep(0.3)
        assert len(model_server.requests) == 6
        for request in model_server.requests:  # each agent sees its own mail as its own
            me = request["messages"][0]["content"].split()[2].rstrip(",")
            for turn in request["messages"][1:]:
                assert (turn["role"] == "assistant") == turn["content"].startswith(f"From: {me}")
        assert "6 automatic messages" in note[0].get_payload()
        assert note[0]["From"] == "Mail Delivery System <postmaster@localdomain>"
        # A word from the user lets the thread go on.
        trace = mbox_messages(server.config.data_dir / "trace")
        last = [m for m in trace if m["Subject"] == "ping"][-1]
        await send(server, mail("alice@localdomain", "Re: ping", "go on",
                                In_Reply_To=last["Message-ID"]))
        await wait_for(lambda: len(model_server.requests) > 6)


async def test_rollback_in_the_first_message_to_a_clone(tmp_path, model_server):
    """The clone's copied memory and the rewrite are committed together."""
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("b.swe1@localdomain", "fresh start", X_Rollback="1"))
        await wait_for(lambda: len(replies_to_user(server)) == 1)
        subjects = memory_subjects(server, "b.swe1@localdomain")
        shipped = memory_subjects(server, "swe1@localdomain")
        assert subjects == shipped[:2] + ["fresh start", "answer to fresh start"]
