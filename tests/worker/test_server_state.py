"""What the worker keeps on the server: progress across a changed UIDVALIDITY, what was
spent across a restart, the memory edited by control headers as keywords."""

from __future__ import annotations

from tests.support import wait_until
from tests.worker.support import (
    SWE1,
    USER,
    WorkerProcess,
    messages,
    question,
    server_config,
    write_worker_config,
)


def answer_each(body):
    asked = body["messages"][-1]["content"]
    subject = next(line for line in asked.splitlines() if line.startswith("Subject:"))
    return f"To: {USER}\nSubject: Re: {subject[9:]}\n\nanswered"


def answered(mail, *subjects):
    wanted = {f"Re: {s}" for s in subjects}
    return wait_until(lambda: (lambda got: got if wanted <= {m["Subject"] for m in got}
                               else None)(messages(mail, USER)), 60, f"answers to {subjects}",
                      interval=0.2)


def store_flags(mail, address, flags, remove=True):
    client = mail.imap(address)
    try:
        client.select("INBOX")
        client.uid("STORE", "1:*", "-FLAGS" if remove else "+FLAGS", flags)
    finally:
        client.logout()


def test_changed_uidvalidity_is_read_again_without_duplicates(mail, model_server, tmp_path):
    model_server.responder = answer_each
    config = write_worker_config(tmp_path, mail, model_server, [SWE1])
    with WorkerProcess(config):
        mail.submit(USER, [SWE1], question("before"))
        answered(mail, "before")
    mail.set_uidvalidity(SWE1, "INBOX", 4242)
    store_flags(mail, SWE1, "(\\Answered $MCDone)")  # as if the keywords were lost too
    with WorkerProcess(config):
        mail.submit(USER, [SWE1], question("after"))
        got = answered(mail, "before", "after")
    assert sorted(m["Subject"] for m in got) == ["Re: after", "Re: before"]
    assert len(model_server.requests) == 2  # "before" was found answered in Sent
    new_reply = next(m for m in messages(mail, SWE1, "Sent") if m["Subject"] == "Re: after")
    assert ".4242." in new_reply["Message-ID"]  # made from the new UIDVALIDITY


def test_what_was_spent_is_known_after_a_restart(mail, model_server, tmp_path):
    model_server.responder = answer_each
    # One call costs 10 * $1/M + 5 * $2/M = $0.00002: the budget allows one.
    config = server_config(tmp_path, model_server,
                           agents={"parties": {"swe1@localdomain": False,
                                               SWE1: {"budget": 0.00002}}})
    path = write_worker_config(tmp_path, mail, model_server, [SWE1], config=config)
    with WorkerProcess(path):
        mail.submit(USER, [SWE1], question("paid"))
        answered(mail, "paid")
    with WorkerProcess(path):  # a new process: it reads what was spent from Sent
        mail.submit(USER, [SWE1], question("over budget"))
        note = wait_until(lambda: [m for m in messages(mail, USER)
                                   if "budget spent" in (m["Subject"] or "")], 60, "the note")
    assert "budget of $0.0000" in note[0].get_payload()
    assert len(model_server.requests) == 1
    assert "Re: over budget" not in {m["Subject"] for m in messages(mail, USER)}


def test_x_rollback_forgets_by_keyword(mail, model_server, tmp_path):
    model_server.responder = answer_each
    with WorkerProcess(write_worker_config(tmp_path, mail, model_server, [SWE1])):
        mail.submit(USER, [SWE1], question("one"))
        answered(mail, "one")
        mail.submit(USER, [SWE1], question("two"))
        answered(mail, "one", "two")
        # keep context positions 0..2: the primer and message 1 (the first question)
        mail.submit(USER, [SWE1], question("three", X_Rollback="2"))
        answered(mail, "one", "two", "three")
    turns = [t["content"] for t in model_server.requests[-1]["messages"][1:]]
    assert len(turns) == 2 and "Subject: one" in turns[0] and "Subject: three" in turns[1]
    client = mail.imap(SWE1)
    try:
        client.select("Sent", readonly=True)
        _, data = client.uid("FETCH", "1:*", "(FLAGS)")
    finally:
        client.logout()
    forgotten = [item for item in data if b"$MCForgotten" in item]
    assert len(forgotten) == 2  # the answers to "one" and "two" (still there, flagged)
