"""Agent behaviour: control headers, cloning, budgets, the auto-round limit."""

from __future__ import annotations

import asyncio
import imaplib
from pathlib import Path

import pytest

from mailcoach_server.runtime.engine import memory_plans
from mailcoach_server.runtime.headers import AgentState, apply_control_headers, rollback_keeps
from tests.engine.test_flow import mail, replies_to_user, send
from tests.support import make_config, mbox_messages, serve_in_process, wait_for

#: a trace directory in the original tool's format: memories begin with its primer
ORIGINAL_TRACE = Path(__file__).resolve().parent.parent / "fixtures" / "original_rollback"


#: bound for waits on model answers: the first call of a process imports litellm,
#: seconds on an idle machine and tens of seconds on a loaded one
MODEL_WAIT = 90.0


async def settled(predicate, what="condition"):
    return await wait_for(predicate, timeout=MODEL_WAIT, what=what)


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
        await settled(lambda: len(replies_to_user(server)) == 1)
        await send(server, mail("swe1@localdomain", "two"))
        await settled(lambda: len(replies_to_user(server)) == 2)
        await send(server, mail("swe1@localdomain", "three", X_Hint_Model=""))
        await settled(lambda: len(replies_to_user(server)) == 3)
    models = [r["model"] for r in model_server.requests]
    assert models == ["other", "other", "scripted"]
    assert [m["M-Model"] for m in replies_to_user(server)] == [other, other,
                                                                model_server.spec()]


async def agent_folder(server, address):
    """(number, Subject) of each message in the IMAP folder Agents/<address>."""
    host, port = server.imap_address

    def fetch():
        with imaplib.IMAP4(host, port) as client:
            client.login(server.config.user, server.credentials.password)
            typ, _ = client.select(f'"Agents/{address}"', readonly=True)
            assert typ == "OK"
            typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert typ == "OK"
            rows = []
            for item in data:
                if isinstance(item, tuple):
                    number = int(item[0].split()[0])
                    subject = item[1].decode().partition(":")[2].strip()
                    rows.append((number, subject))
            return rows
    return await asyncio.to_thread(fetch)


@pytest.mark.parametrize(("position", "primer_stored", "kept"), [
    (0, False, 0), (1, False, 0), (2, False, 1), (5, False, 4),
    (0, True, 1), (1, True, 2), (5, True, 6),
])
def test_rollback_keeps_the_originals_context_positions(position, primer_stored, kept):
    assert rollback_keeps(position, primer_stored=primer_stored) == kept


@pytest.mark.parametrize("value", ["-1", "two", "1_0", "\u0663", "", "3.0"])
def test_a_rollback_that_is_not_a_position_is_ignored_with_a_warning(value):
    message = mail("swe1@localdomain", "x", X_Rollback=value)
    effect = apply_control_headers(message, "user@localdomain", AgentState(), [1, 2, 3],
                                   lambda _: False)
    assert effect.memory is None and effect.store
    assert len(effect.warnings) == 1 and "X-Rollback" in effect.warnings[0]


async def test_x_rollback_n_forgets_message_n_of_the_agents_folder(tmp_path, model_server):
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "first"))
        await settled(lambda: len(replies_to_user(server)) == 1)
        folder = await agent_folder(server, "swe1@localdomain")
        assert [s for _, s in folder] == memory_subjects(server, "swe1@localdomain")
        number = next(n for n, subject in folder if subject == "first")
        assert number == 7  # after the 6 shipped messages
        # As documented: message k is the original's position k + 1, so N = 7
        # keeps positions 0..7, messages 1..6, and forgets "first" and its answer.
        await send(server, mail("swe1@localdomain", "again", X_Rollback=str(number)))
        await settled(lambda: len(replies_to_user(server)) == 2)
        after = await agent_folder(server, "swe1@localdomain")
        assert [s for _, s in after] == ([s for _, s in folder[:number - 1]]
                                         + ["again", "answer to again"])
        # The model saw the rolled-back memory.
        seen = [m["content"] for m in model_server.requests[-1]["messages"]]
        assert not any("Subject: first" in c for c in seen)
        assert "Subject: again" in seen[-1]


async def test_x_rollback_on_an_original_trace_keeps_what_the_original_kept(
        tmp_path, model_server):
    """The original keeps context[:N+1]; its memories begin with its two primer messages."""
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    loaded = mbox_messages(ORIGINAL_TRACE / "swe1@localdomain.mbox")
    assert loaded[0]["Subject"] == "Welcome to the system!"
    async with serve_in_process(config, shipped_memory=False) as server:
        plans = memory_plans(server.store, "swe1@localdomain",
                             ORIGINAL_TRACE / "swe1@localdomain.mbox")
        await server.store.commit_many(plans)
        assert memory_subjects(server, "swe1@localdomain") == [m["Subject"] for m in loaded]
        original_context = [m["Subject"] for m in loaded]  # primer + memory, as the original
        position = 5
        await send(server, mail("swe1@localdomain", "Another one",
                                X_Rollback=str(position)))
        await settled(lambda: len(replies_to_user(server)) == 1)
        assert memory_subjects(server, "swe1@localdomain") == (
            original_context[: position + 1] + ["Another one", "answer to Another one"])
        assert original_context[position] == "Your fortune"
        seen = "\n".join(m["content"] for m in model_server.requests[-1]["messages"])
        assert "Subject: Your fortune" in seen and "Now a poem" not in seen


async def test_x_drop_regenerates_from_memory(tmp_path, model_server):
    """X-Rollback to the question + X-Drop: undo the answer and ask the model again."""
    answers = iter(["a bad answer", "a better answer"])

    def responder(request):
        last = request["messages"][-1]["content"]
        subject = next(line for line in last.splitlines() if line.startswith("Subject: "))
        return f"To: user@localdomain\nSubject: re {subject[9:]}\n\n{next(answers)}"
    model_server.responder = responder
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "question"))
        await settled(lambda: len(replies_to_user(server)) == 1)
        folder = await agent_folder(server, "swe1@localdomain")
        question = next(n for n, subject in folder if subject == "question")
        # Keep everything up to the question (its position is its number + 1).
        await send(server, mail("swe1@localdomain", "regenerate", X_Rollback=str(question + 1),
                                X_Drop="yes"))
        await settled(lambda: len(replies_to_user(server)) == 2)
        assert len(model_server.requests) == 2
        last_call = model_server.requests[-1]["messages"]
        assert "Subject: question" in last_call[-1]["content"]
        assert not any("regenerate" in t["content"] or "a bad answer" in t["content"]
                       for t in last_call)
        memory = mbox_messages(server.config.data_dir / "swe1@localdomain.mbox")
        assert [m["Subject"] for m in memory[-2:]] == ["question", "re question"]
        assert "a better answer" in memory[-1].get_payload()
        assert "regenerate" not in memory_subjects(server, "swe1@localdomain")


async def test_x_drop_with_x_expect_does_not_answer(tmp_path, model_server):
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "dropped", X_Drop="yes",
                                X_Expect="shell@localdomain",
                                X_Hint_Model=model_server.spec("switched")))
        await send(server, mail("swe1@localdomain", "shell says hi",
                                sender="shell@localdomain"))
        await settled(lambda: len(replies_to_user(server)) == 1)
        # Deliveries are answered in order: one call, for the shell's message only.
        assert len(model_server.requests) == 1
        assert model_server.requests[0]["model"] == "switched"
        assert "Subject: shell says hi" in model_server.requests[0]["messages"][-1]["content"]
        assert "dropped" not in memory_subjects(server, "swe1@localdomain")


async def test_x_pop_shell_on_mail_an_agent_sends_trims_its_own_memory(tmp_path, model_server):
    model_server.enqueue("To: shell@localdomain\nSubject: echo one\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: done\nX-Pop-Shell: yes\n\nran it")
    model_server.enqueue("To: user@localdomain\nSubject: next done\n\nok")
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "run echo"))
        await settled(lambda: len(replies_to_user(server)) == 1)
        memory = memory_subjects(server, "swe1@localdomain")
        assert memory[-2:] == ["run echo", "done"]
        assert "echo one" not in memory and "Exit Code: 0" not in memory[6:]  # after the shipped 6
        # The trace keeps everything; only the agent's memory was trimmed.
        trace = [m["Subject"] for m in mbox_messages(server.config.data_dir / "trace")]
        assert trace == ["run echo", "echo one", "Exit Code: 0", "done"]
        await send(server, mail("swe1@localdomain", "next"))
        await settled(lambda: len(replies_to_user(server)) == 2)
        # The model sees the header on its own message (that is how agents learn it),
        # and each message's Content-Type without parameters, as the original showed.
        turns = model_server.requests[-1]["messages"]
        done = next(t for t in turns if "Subject: done" in t["content"])
        assert done["role"] == "assistant"
        assert done["content"].splitlines()[:6] == [
            "From: swe1@localdomain", "To: user@localdomain", "Subject: done",
            "Content-Type: text/plain", "X-Pop-Shell: yes", ""]
        assert not any("echo one" in t["content"] for t in turns[1:])


async def test_x_pop_shell_drops_the_trailing_shell_exchange(tmp_path, model_server):
    model_server.enqueue("To: shell@localdomain\nSubject: echo one\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: done\n\nran it")
    model_server.enqueue("To: user@localdomain\nSubject: popped\n\nok")
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "run echo"))
        await settled(lambda: len(replies_to_user(server)) == 1)
        # The agent's last message went to the user, so nothing trails: first send
        # one more shell exchange by hand, then pop it.
        await send(server, mail("shell@localdomain", "echo two", Cc="swe1@localdomain"))
        await settled(lambda: len(replies_to_user(server)) == 2)
        memory = memory_subjects(server, "swe1@localdomain")
        assert memory[-1] == "echo two"
        await send(server, mail("swe1@localdomain", "pop", X_Pop_Shell="yes"))
        await settled(lambda: len(replies_to_user(server)) == 3)
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
        await settled(lambda: len(replies_to_user(server)) == 1)
        assert model_server.requests == []
        await send(server, mail("swe1@localdomain", "shell says hi",
                                sender="shell@localdomain"))
        await settled(lambda: len(model_server.requests) == 1)
        assert "Subject: shell says hi" in model_server.requests[0]["messages"][-1]["content"]


async def test_new_agent_clones_its_ancestor_with_addresses_rewritten(tmp_path, model_server):
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "teach swe1", "swe1@localdomain knows; "
                                "swe10@localdomain and b.swe1@localdomain are others"))
        await settled(lambda: len(replies_to_user(server)) == 1)
        await send(server, mail("a.swe1@localdomain", "hello clone"))
        await settled(lambda: len(replies_to_user(server)) == 2)
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
        await settled(lambda: any("budget" in (m["Subject"] or "")
                                   for m in replies_to_user(server)), what="budget note")
        await asyncio.sleep(0.3)
        answered = [m for m in replies_to_user(server) if m["From"] == "swe1@localdomain"]
        assert len(answered) == 2 and len(model_server.requests) == 2
        assert len(server.store.pending_deliveries("swe1@localdomain")) == 1
        server.engine.set_budget(1.0)
        await settled(lambda: len([m for m in replies_to_user(server)
                                    if m["From"] == "swe1@localdomain"]) == 3)
        # The party file is appended before the index commits in the same group: the
        # third cost may be a moment behind the mbox the test polls.
        await settled(lambda: server.store.spent() > 2.5 * 0.00002, what="the third cost")
        assert server.store.spent() == pytest.approx(3 * 0.00002)


async def test_per_agent_budget(tmp_path, model_server):
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec(),
                         agents={"parties": {"swe1@localdomain": {"budget": 0.00001}}})
    async with serve_in_process(config) as server:
        await send(server, mail("swe1@localdomain", "one"))
        await send(server, mail("swe2@localdomain", "two"))
        await send(server, mail("swe1@localdomain", "three"))
        await settled(lambda: len(model_server.requests) == 2)
        await settled(lambda: any("swe1@localdomain waits" in (m["Subject"] or "")
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
        note = await settled(lambda: [m for m in replies_to_user(server)
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
        await settled(lambda: len(model_server.requests) > 6)


async def test_rollback_in_the_first_message_to_a_clone(tmp_path, model_server):
    """The clone's copied memory and the rewrite are committed together."""
    model_server.responder = echo_responder
    config = make_config(tmp_path, model_server.spec())
    async with serve_in_process(config) as server:
        # Position 3 is the copied memory's message 2: keep messages 1..2.
        await send(server, mail("b.swe1@localdomain", "fresh start", X_Rollback="3"))
        await settled(lambda: len(replies_to_user(server)) == 1)
        subjects = memory_subjects(server, "b.swe1@localdomain")
        shipped = memory_subjects(server, "swe1@localdomain")
        assert subjects == shipped[:2] + ["fresh start", "answer to fresh start"]
        # X-Rollback: 1 keeps the primer only, which our memories do not store.
        await send(server, mail("b.swe1@localdomain", "from scratch", X_Rollback="1"))
        await settled(lambda: len(replies_to_user(server)) == 2)
        assert memory_subjects(server, "b.swe1@localdomain") == [
            "from scratch", "answer to from scratch"]
