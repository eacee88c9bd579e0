"""Exactly once across kill -9: the worker killed at each step of its protocol, restarted.

The kill point is injected (``MAILCOACH_WORKER_CRASH_AT``): the worker sends
itself SIGKILL there. After a restart every message is answered once: one
reply in Sent, one reply Message-ID in the human's INBOX, the question flagged
done. Killed between the SMTP 250 and the keyword (``after-send``) the reply is
submitted again with the same bytes: a human's mailbox may hold that copy
twice, under one Message-ID, and a receiving worker remembers it once.
"""

from __future__ import annotations

import pytest

from mailcoach_server.worker.mailbox import CRASH_ENV
from tests.support import wait_until
from tests.worker.support import (
    SWE1,
    USER,
    WorkerProcess,
    messages,
    question,
    write_worker_config,
)


def answer_each(body):
    asked = body["messages"][-1]["content"]
    subject = next(line for line in asked.splitlines() if line.startswith("Subject:"))
    return f"To: {USER}\nSubject: Re: {subject[9:]}\n\nanswered"


def inbox_flags(mail, address):
    client = mail.imap(address)
    try:
        client.select("INBOX", readonly=True)
        _, data = client.uid("FETCH", "1:*", "(FLAGS)")
        return [item.decode() for item in data if item]
    finally:
        client.logout()


@pytest.mark.parametrize("step", ["after-model", "after-save", "after-send"])
def test_killed_at_each_step_answers_once(mail, model_server, tmp_path, step):
    model_server.responder = answer_each
    config = write_worker_config(tmp_path, mail, model_server, [SWE1])
    crashing = WorkerProcess(config, env={CRASH_ENV: step}).start()
    mail.submit(USER, [SWE1], question("first question"))
    assert crashing.wait(60) == -9, crashing.stderr()[-2000:]
    assert f"killed at {step}" in crashing.stderr()
    with WorkerProcess(config):
        mail.submit(USER, [SWE1], question("second question"))
        got = wait_until(lambda: (lambda m: m if {"Re: first question", "Re: second question"}
                                  <= {x["Subject"] for x in m} else None)(messages(mail, USER)),
                         60, "both answers", interval=0.2)
        wait_until(lambda: all("$MCDone" in f for f in inbox_flags(mail, SWE1)), 30,
                   "both questions flagged done", interval=0.2)
    replies = {}
    for reply in got:
        replies.setdefault(reply["Subject"], set()).add(reply["Message-ID"])
    assert replies == {"Re: first question": replies["Re: first question"],
                       "Re: second question": replies["Re: second question"]}
    assert all(len(ids) == 1 for ids in replies.values())  # one reply each, by Message-ID
    copies = [m for m in got if m["Subject"] == "Re: first question"]
    assert len(copies) in ((1, 2) if step == "after-send" else (1,))
    sent = messages(mail, SWE1, "Sent")
    assert sorted(m["Subject"] for m in sent) == ["Re: first question", "Re: second question"]
    flags = inbox_flags(mail, SWE1)
    assert all("\\Answered" in f and "$MCUnsent" not in f for f in flags), flags
    # The model is called again only when nothing was saved yet.
    assert len(model_server.requests) == (3 if step == "after-model" else 2)
