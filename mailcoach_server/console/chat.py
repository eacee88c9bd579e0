"""The chat prompt: type a message, an empty line for the menu, Ctrl+D to end.

Prompt line: To, Subject, Model. A line ending in ``\\`` continues on the
next. The menu numbers models from 1 (0: type one), letters addresses from
``a`` (z: type one; a new address makes a new agent) and takes ``:subject``.
"""

from __future__ import annotations

import queue
import string
from typing import TextIO

from ..addresses import normalize_address
from .session import Session, user_message

__all__ = ["chat", "default_recipient"]


def default_recipient(session: Session) -> str:
    """The first party that is neither the user nor a robot (swe1@localdomain by default)."""
    for address in session.parties():
        if session.engine.router.kind_of(address) == "agent" and address != session.config.user:
            return address
    return f"swe1@{session.config.domain}"


def _read_message(prompt: str) -> str:
    line = input(prompt)
    while line.endswith("\\"):
        line = line[:-1] + "\n" + input("")
    return line.strip()


def _menu(session: Session, out: TextIO) -> tuple[str, str] | None:
    models = list(session.config.models.choices)
    for number, model in enumerate(models, start=1):
        out.write(f"{number}: {model}\n")
    out.write("0: [type a model]\n\n")
    parties = session.parties()[:25]
    letters = string.ascii_lowercase
    for letter, address in zip(letters, parties, strict=False):
        out.write(f"{letter}: {address}\n")
    out.write("z: [type an address]\n\n:subject sets the subject of the next message\n")
    out.flush()
    choice = input("? ").strip()
    if choice.isdigit():
        index = int(choice)
        if index == 0:
            model = input("model: ").strip()
            return ("model", model) if model else None
        if 1 <= index <= len(models):
            return ("model", models[index - 1])
        out.write("no such model number\n")
        return None
    if choice == "z":
        typed = input("address: ").strip()
        if "@" not in typed:
            typed = f"{typed}@{session.config.domain}"
        checked = normalize_address(typed)
        if checked is None or not session.config.is_local(checked):
            out.write(f"not a local address: {typed}\n")
            return None
        return ("to", checked)
    if len(choice) == 1 and choice in letters[: len(parties)]:
        return ("to", parties[letters.index(choice)])
    if choice.startswith(":"):
        return ("subject", choice[1:].strip())
    out.write("invalid choice\n")
    return None


_YES = frozenset({"y", "yes", "ok", "approve"})
_NO = frozenset({"n", "no", "deny", "refuse", "reject"})


def _answer_approvals(session: Session, out: TextIO) -> list[str]:
    """Wait for the agents; each command a robot holds for approval is asked here.

    The answer goes back as mail, a reply to the request, as from any client:
    ``y``/``yes`` runs it, ``n``/``no`` refuses it (a reason may follow), an empty
    answer leaves it waiting (answer later by mail, until it expires).
    """
    while True:
        blocked = session.wait()
        try:
            request = session.approvals.get_nowait()
        except queue.Empty:
            return blocked
        command = request.subject.removeprefix("Approve: ")
        try:
            answer = input(f"{request.robot}: approve {command}? [y/n reason] ").strip()
        except EOFError:
            return blocked
        if not answer:
            out.write("(left waiting: reply to the Approve mail to decide)\n")
            continue
        word, _, reason = answer.partition(" ")
        if word.lower() in _YES:
            verdict = "yes"
        elif word.lower() in _NO:
            verdict = f"no\n{reason.strip()}".rstrip()
        else:
            out.write("answer y (run it) or n and a reason (refuse it)\n")
            session.approvals.put(request)
            continue
        raw = user_message(sender=session.config.user, to=request.robot,
                           subject=f"Re: {request.subject}", body=verdict + "\n",
                           model=None, in_reply_to=request.message_id)
        try:
            session.submit(raw)
        except Exception as exc:  # refused: say why; the request still waits
            out.write(f"not sent: {exc}\n")


def chat(session: Session, out: TextIO) -> None:
    """Run the prompt until Ctrl+D."""
    to = default_recipient(session)
    subject = ""
    model: str | None = None  # chosen in the menu; sent as X-Hint-Model
    palette = session.palette
    out.write("Type a message and Enter; an empty line opens the menu; Ctrl+D ends.\n")
    while True:
        shown_model = model or session.agent_model(to)
        out.write(f"To: {palette.name}{to}{palette.reset} "
                  f"Subject: {palette.value}{subject}{palette.reset} "
                  f"Model: {palette.body}{shown_model}{palette.reset}\n")
        out.flush()
        try:
            text = _read_message("> ")
        except EOFError:
            out.write("\n")
            return
        except KeyboardInterrupt:
            out.write("\n(Ctrl+D ends the session)\n")
            continue
        if not text:
            try:
                picked = _menu(session, out)
            except EOFError:
                out.write("\n")
                return
            except KeyboardInterrupt:
                out.write("\n")
                continue
            if picked is not None:
                what, value = picked
                if what == "model":
                    model = value
                elif what == "to":
                    to = value
                else:
                    subject = value
            continue
        raw = user_message(sender=session.config.user, to=to, subject=subject, body=text,
                           model=model)
        try:
            session.submit(raw)
        except Exception as exc:  # a refused message: say why, keep the session
            out.write(f"not sent: {exc}\n")
            continue
        subject = ""
        blocked = _answer_approvals(session, out)
        if blocked:
            out.write(f"budget reached (${session.spent():.6f}); mail waits for "
                      f"{', '.join(blocked)}\n")
