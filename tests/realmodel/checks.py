"""What must hold whatever a real model writes, checked on the stored mail with the stdlib.

The model's raw words come from the :class:`RecordingProxy`; the mail from the trace
and the agent's mbox, read by ``mailbox.mbox`` and ``email`` (not by mailcoach), so a
file no mail reader could open fails here too.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import mailbox
import re
from email.message import EmailMessage
from pathlib import Path

from tests.realmodel.recorder import Exchange, model_headers

__all__ = ["DEBRIS", "RUNTIME_OWNED", "agent_mail", "check_agent_mail", "heard_back",
           "read_mbox", "shell_runs"]

#: Headers only the runtime writes on an agent's mail, whatever the model put in its text.
RUNTIME_OWNED = ("Message-ID", "Date", "In-Reply-To", "References", "Received",
                 "Return-Path", "M-Model", "M-Tokens-Input", "M-Tokens-Output", "M-Cost",
                 "X-Mailcoach-Error")
#: Chat-template markup that must never reach a body (llama.cpp's Llama-2 fallback did).
DEBRIS = ("<start_of_turn>", "<end_of_turn>", "[INST]", "[/INST]", "<bos>", "<eos>")
_SINGLE = ("From", "To", "Subject", "Message-ID", "Date", "M-Model", "M-Tokens-Input",
           "M-Tokens-Output", "M-Cost")


def read_mbox(path: Path) -> list[EmailMessage]:
    """Every message of an mbox file, parsed by the stdlib with the modern policy."""
    if not path.exists():
        return []
    box = mailbox.mbox(path, create=False)
    try:
        return [email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
                for key in box.keys()]
    finally:
        box.close()


def agent_mail(messages: list[EmailMessage], agent: str) -> list[EmailMessage]:
    """The messages a model wrote for ``agent`` (they carry ``M-Model``), in order."""
    return [m for m in messages if m["M-Model"] is not None
            and email.utils.parseaddr(str(m["From"]))[1] == agent]


def _check_one(message: EmailMessage, agent: str, domain: str, spec: str) -> None:
    assert not message.defects, f"stdlib parse defects {message.defects}:\n{message}"
    for name in _SINGLE:
        assert len(message.get_all(name) or []) == 1, f"{name} not exactly once:\n{message}"
    assert email.utils.parseaddr(str(message["From"]))[1] == agent
    recipients = email.utils.getaddresses([str(v) for v in
                                           message.get_all("To", []) + message.get_all("Cc", [])])
    assert recipients, f"no recipient:\n{message}"
    for _, address in recipients:
        assert address.endswith("@" + domain), f"{address!r} outside {domain}:\n{message}"
    assert re.fullmatch(r"<[^<>@\s]+@[^<>\s]+>", str(message["Message-ID"]).strip())
    assert email.utils.parsedate_to_datetime(str(message["Date"])) is not None
    assert message["M-Model"] == spec, message["M-Model"]
    assert float(str(message["M-Cost"])) >= 0
    assert message["X-Mailcoach-Error"] is None
    body = message.get_body(("plain",))
    assert body is not None, f"no text body:\n{message}"
    text = body.get_content()
    for junk in DEBRIS:
        assert junk not in text and junk not in str(message["Subject"]), \
            f"chat-template debris {junk!r} in:\n{message}"


def check_agent_mail(stored: list[EmailMessage], exchanges: list[Exchange], *, agent: str,
                     spec: str, domain: str = "localdomain") -> None:
    """Every model answer is one well-formed stored message from ``agent``, in order.

    Its token counts are the server's for that answer, and no header the runtime owns
    carries what the model wrote for it.
    """
    answered = [x for x in exchanges if x.status == 200 and x.text is not None]
    assert len(stored) == len(answered), (
        f"{len(answered)} model answers but {len(stored)} stored messages from {agent}:\n"
        + "\n---\n".join(x.text or "" for x in answered))
    ids = [str(m["Message-ID"]) for m in stored]
    assert len(set(ids)) == len(ids), ids
    for message, exchange in zip(stored, answered, strict=True):
        _check_one(message, agent, domain, spec)
        prompt, completion = exchange.tokens
        assert (int(str(message["M-Tokens-Input"])), int(str(message["M-Tokens-Output"]))) \
            == (prompt, completion)
        written = model_headers(exchange.text or "")
        for name in RUNTIME_OWNED:
            if name.lower() in written:
                stored_values = [str(v).strip() for v in message.get_all(name, [])]
                assert written[name.lower()] not in stored_values, \
                    f"the model set {name}: {written[name.lower()]!r}\n{message}"


def heard_back(messages: list[EmailMessage], user: str) -> list[EmailMessage]:
    """What reached the user from someone else: an agent's reply or a runtime note."""
    return [m for m in messages if email.utils.parseaddr(str(m["From"]))[1] != user]


def shell_runs(trace: list[EmailMessage], agent: str, shell: str,
               exchanges: list[Exchange]) -> list[tuple[str, dict[str, str], EmailMessage]]:
    """(stored Subject, the model's raw headers, stored message) of each agent mail to the shell."""
    answered = [x for x in exchanges if x.status == 200 and x.text is not None]
    runs = []
    for message, exchange in zip(agent_mail(trace, agent), answered, strict=False):
        to = [a for _, a in email.utils.getaddresses([str(v) for v in message.get_all("To", [])])]
        if shell in to:
            runs.append((str(message["Subject"] or ""), model_headers(exchange.text or ""),
                         message))
    return runs
