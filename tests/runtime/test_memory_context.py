"""A call's context kept between calls is what a fresh build makes, after appends and rewrites.

``MemoryTurns`` keeps each party's turns and ``thread_to_turns`` its last
chat; both compare the memory with what they kept. These tests hold them to
a from-scratch build (every message read again, every chat turn made
again): property tests over random appends, rollbacks, pops, trims and
edits, and the model requests of a real server (SMTP in, litellm over HTTP
to the scripted model) through a rollback, a pop and a trim.
"""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from mailcoach_server.mailtext import read_message
from mailcoach_server.runtime.context import (
    TurnText,
    _plain_turn_text,
    stored_turn_text,
    thread_to_turns,
    turn_text,
)
from mailcoach_server.runtime.llm import ChatTurn
from mailcoach_server.runtime.memory_turns import MemoryTurns
from tests.engine.test_flow import mail, send
from tests.support import make_config, serve_in_process, wait_for

AGENT = "tutor@localdomain"
USER = "user@localdomain"


def stored_turn(number: int) -> tuple[str, str | None]:
    """What reading message ``number`` gives: some have no text, some carry images."""
    sender = AGENT if number % 3 == 0 else USER
    if number % 7 == 0:
        return sender, None  # an error note: no turn
    text = f"From: {sender}\nSubject: m{number}\n\nbody {number % 5}\n"
    if number % 11 == 0:
        return sender, TurnText.with_images(text, (f"data:image/png;base64,{number}",))
    return sender, text


def fresh_chat(agent, memory, system, images):
    """thread_to_turns as it was before anything was kept: every turn made again."""
    turns = [ChatTurn("system", system)]
    for sender, text in memory:
        if text is not None:
            shown = getattr(text, "images", ()) if images else ()
            turns.append(ChatTurn("assistant" if sender == agent else "user", str(text),
                                  tuple(shown)))
    return turns


#: what happens to a memory between two calls
operations = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 6)),
    st.tuples(st.just("rollback"), st.integers(0, 40)),   # keep the first N
    st.tuples(st.just("pop"), st.integers(1, 3)),         # drop the last ones
    st.tuples(st.just("trim"), st.integers(0, 40), st.integers(1, 10)),  # drop a middle run
    st.tuples(st.just("edit"), st.integers(0, 40)),       # a client puts an old message in
)


def apply(memory: list[int], operation, next_number: int) -> int:
    kind, *args = operation
    if kind == "append":
        memory.extend(range(next_number, next_number + args[0]))
        return next_number + args[0]
    if kind == "rollback":
        del memory[args[0]:]
    elif kind == "pop":
        del memory[max(0, len(memory) - args[0]):]
    elif kind == "trim":
        del memory[args[0]:args[0] + args[1]]
    else:
        memory.insert(min(args[0], len(memory)), args[0] + 1)
    return next_number


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(operations, max_size=25), images=st.booleans(),
       max_chars=st.sampled_from([10**9, 300]))
def test_kept_turns_and_chats_equal_a_fresh_build(steps, images, max_chars):
    reads: list[int] = []

    def read(number):
        reads.append(number)
        return stored_turn(number)

    kept = MemoryTurns(read, max_chars=max_chars)
    memory, other = list(range(1, 30)), list(range(1, 30, 2))
    next_number = 30
    before: set[int] = set()
    for step in [("append", 0), *steps]:
        next_number = apply(memory, step, next_number)
        reads.clear()
        ahead = kept.missing(AGENT, memory)
        turns = kept.turns(AGENT, memory)
        assert turns == [stored_turn(n) for n in memory]
        assert sorted(reads) == sorted(ahead)  # missing names what turns reads, once each
        if max_chars == 10**9:  # nothing dropped: only new messages and images are read
            assert {n for n in memory if n not in before} <= set(reads)
            assert all(n not in before or getattr(stored_turn(n)[1], "images", ())
                       or memory.count(n) > 1 for n in reads)
        before = set(memory)
        chat = thread_to_turns(AGENT, turns, "primer", images=images)
        assert chat == fresh_chat(AGENT, turns, "primer", images)
        # Another party in between changes nothing of this one's.
        assert kept.turns(USER, other) == [stored_turn(n) for n in other]
        assert thread_to_turns(USER, kept.turns(USER, other), "other", images=images) == \
            fresh_chat(USER, [stored_turn(n) for n in other], "other", images)
    assert kept.kept_chars <= max_chars


def test_a_turn_whose_images_change_is_made_again():
    """Equal text, other images: the chat kept for the text must not be used again."""
    text = "From: user@localdomain\nSubject: a picture\n\nsee\n"
    first = [(USER, TurnText.with_images(text, ("data:image/png;base64,AAAA",)))]
    second = [(USER, TurnText.with_images(text, ("data:image/png;base64,BBBB",)))]
    assert thread_to_turns(AGENT, first, "p", images=True)[1].images == (
        "data:image/png;base64,AAAA",)
    assert thread_to_turns(AGENT, second, "p", images=True)[1].images == (
        "data:image/png;base64,BBBB",)
    assert thread_to_turns(AGENT, [*second, (AGENT, text)], "p", images=True) == fresh_chat(
        AGENT, [*second, (AGENT, text)], "p", True)


def test_a_memory_turn_list_returned_is_the_callers():
    kept = MemoryTurns(stored_turn)
    turns = kept.turns(AGENT, [1, 2, 4])
    turns.append(("x", "y"))
    chat = thread_to_turns(AGENT, turns, "p")
    chat.clear()
    assert kept.turns(AGENT, [1, 2, 4]) == [stored_turn(n) for n in (1, 2, 4)]
    assert thread_to_turns(AGENT, turns, "p") == fresh_chat(AGENT, turns, "p", False)


# -- a real server: the requests the model gets ---------------------------------------------

def answer(request):
    last = request["messages"][-1]["content"]
    subject = next(line for line in last.splitlines() if line.startswith("Subject: "))
    return f"To: user@localdomain\nSubject: answer to {subject[9:]}\n\n" + "words " * 40


async def test_model_requests_equal_a_fresh_build_through_rollback_pop_and_trim(
        tmp_path, model_server):
    model_server.responder = answer
    # A window that a dozen messages fill: trimming happens along the way.
    config = make_config(tmp_path, model_server.spec(),
                         models={"context_windows": {"openai/scripted": 1500}})
    expected: list[list[dict]] = []
    async with serve_in_process(config) as server:
        engine, store = server.engine, server.store

        async def fresh_request(agent, model, turns):
            # At the call: the memory up to the message answered, every message read again.
            number = store.pending_deliveries(agent)[0].message
            memory = list(store.parties[agent].memory)
            memory = memory[: memory.index(number) + 1]
            system = engine.workers[agent].profile.system
            chat = fresh_chat(agent, [engine.turn_of(n) for n in memory], system, False)
            expected.append([turn.as_dict() for turn in chat])
        engine.before_model_call = fresh_request

        async def ask(subject, **headers):
            calls = len(model_server.requests)
            await send(server, mail(AGENT, subject, "a question of some length " * 8,
                                    **headers))
            await wait_for(lambda: len(model_server.requests) > calls, timeout=60,
                           what=f"the call for {subject}")
            await wait_for(engine.idle, timeout=60, what="the agent's reply stored")

        for number in range(4):  # appends
            await ask(f"q{number}")
        # A rollback to as long a memory as the last call's: q3 and its answer go.
        length = len(store.parties[AGENT].memory)
        await ask("same length", X_Rollback=str(length - 1))  # keeps N - 1 (the primer: 2)
        assert len(expected[-1]) == len(expected[-2])
        await ask("rolled back", X_Rollback="4")
        assert [m.subject for m in store.metas(store.parties[AGENT].memory)][:3] == [
            "q0", "answer to q0", "q1"]
        await send(server, mail("shell@localdomain", "echo two", Cc=AGENT))
        await wait_for(engine.idle, timeout=60, what="the shell's answer")
        await ask("popped", X_Pop_Shell="yes")
        for number in range(4, 12):  # past the window: trimmed on the way
            await ask(f"q{number}")
        subjects = [m.subject for m in store.metas(store.parties[AGENT].memory)]
        assert "Memory trimmed" in subjects and "echo two" not in subjects
    sent = [request["messages"] for request in model_server.requests]
    assert len(sent) == len(expected) == 15
    assert sent == expected


# -- reading a stored message: plain mail without the parser, the same text ----------------

HEADER_LINES = [
    b"From: user@localdomain", b"from: other@localdomain", b"To: tutor@localdomain",
    b"To:  a@localdomain,\tb@localdomain  ", b"Cc: c@localdomain", b"CC: d@localdomain",
    b"Subject: step 1", b"Subject:", b"Subject: =?utf-8?q?caf=C3=A9?=", b"Subject: tail \t",
    b" folded continuation", b"\tfolded tab", b"Subject: caf\xc3\xa9", b"X-Pop-Shell: yes",
    b"Content-Type: text/plain", b"Content-Type: text/plain; charset=utf-8",
    b'Content-Type: TEXT/Plain; CHARSET="US-ASCII"', b"Content-Type: text/plain; charset=latin-1",
    b"Content-Type: text/plain; format=flowed", b"Content-Type: text/html",
    b"Content-Type: text/plain;charset=utf-8  ", b"Content-Type: application/octet-stream",
    b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: plain",
    b"Content-Transfer-Encoding: 7bit", b"Content-Transfer-Encoding: 8BIT",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"X-Mailcoach-Error: budget", b"x-mailcoach-error:", b"From someone Mon Jan 1", b":empty",
    b"Bad header line", b"X-Bell: \x07", b"X-Form: a\x0cb", b"X-CR: a\rb", b"Message-ID: <a@b>",
]
BODIES = [
    b"", b"hello\n", b"\n\nspaced\n\n\n", b"caf\xc3\xa9 \xff\xfe\n", b"a\r\nb\r\n",
    b"=C3=A9 soft=\nbreak\n", b"aGVsbG8K\n", b"--b\nContent-Type: text/plain\n\npart\n--b--\n",
    b"From the start\n>From quoted\n", b"form\x0cfeed\x0bvt\x1c\n", b"<p>html</p>\n",
]


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(st.sampled_from(HEADER_LINES), min_size=0, max_size=8),
       body=st.sampled_from(BODIES), separator=st.sampled_from([b"\n\n", b"\n", b""]))
def test_a_stored_message_reads_as_the_parser_reads_it(lines, body, separator):
    raw = b"\n".join(lines) + separator + body
    assert stored_turn_text(raw) == turn_text(read_message(raw))


def test_plain_mail_is_read_without_the_parser():
    raw = (b"From: user@localdomain\nTo: tutor@localdomain\nSubject: step  2\n"
           b"Content-Type: text/plain; charset=utf-8\nMessage-ID: <x@y>\n\n\nbody \xc3\xa9\n\n")
    assert _plain_turn_text(raw) == turn_text(read_message(raw)) == (
        "From: user@localdomain\nTo: tutor@localdomain\nSubject: step 2\n"
        "Content-Type: text/plain\n\nbody \u00e9\n")
    assert _plain_turn_text(b"X-Mailcoach-Error: x\nSubject: s\n\nb\n") == ""  # an error note
    assert _plain_turn_text(b"Subject: =?utf-8?q?a?=\n\nb\n") is None  # the parser's work


async def test_a_cold_long_memory_is_read_in_a_thread_as_a_fresh_read(tmp_path):
    """Past a few hundred unread messages the mailbox reads them off the event loop."""
    from mailcoach_server.runtime.engine import Engine
    from mailcoach_server.runtime.mailbox import Incoming
    from mailcoach_server.store.store import Delivery, MessageMeta, Store, WritePlan

    config = make_config(tmp_path)
    store = Store.open(config.data_dir)
    try:
        def plan(number):
            sender, to = (USER, AGENT) if number % 2 else (AGENT, USER)
            meta = MessageMeta(id=store.allocate_message_id(), message_id=f"<m{number}@x>",
                               sender=sender, recipients=(to,), subject=f"m{number}",
                               in_reply_to="", thread="", auto_round=0, cost=0.0,
                               received_at=0.0)
            raw = (f"From: {sender}\nTo: {to}\nSubject: m{number}\n"
                   f"Content-Type: text/plain; charset=utf-8\n\nbody {number}\n").encode()
            written = WritePlan(raw=raw, meta=meta, memory_appends=[AGENT])
            if number == 0:
                written.party_states[AGENT] = ("agent", {})
            return written
        await store.commit_many([plan(n) for n in range(600)])
        engine = Engine(config, store)
        engine.notify(AGENT)  # its mailbox as the server makes it; no worker needed
        await engine.aclose()
        mailbox, turns = engine.mailboxes[AGENT], engine.memory_turns
        threads = []
        fresh_read = turns.read

        def read(number):
            threads.append(threading.get_ident())
            return fresh_read(number)
        turns.read = read

        async def memory():
            numbers = store.parties[AGENT].memory
            upto = Incoming(ref=Delivery(0, AGENT, numbers[-1], None), raw=b"", sender=USER,
                            subject="", message_id=None)
            return await mailbox.memory(upto)

        assert await memory() == [fresh_read(n) for n in store.parties[AGENT].memory]
        assert len(threads) == 600 and threading.get_ident() not in threads
        threads.clear()
        await store.commit(plan(600))
        assert await memory() == [fresh_read(n) for n in store.parties[AGENT].memory]
        assert threads == [threading.get_ident()]  # one new message: read at once
    finally:
        await store.aclose()
