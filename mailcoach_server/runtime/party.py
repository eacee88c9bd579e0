"""What an agent or robot does with one message: pure steps, no store, no sockets.

An agent reads its memory as chat turns, calls its model and turns the
answer into a reply; a robot hands the message to its plug-in. Both only
make mail: ``runtime/workers.py`` takes it from a ``Mailbox`` and sends it
back through the same ``Mailbox``, wherever that mailbox lives.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message

from mailcoach_robots import Robot

from ..mailtext import text_of
from ..postmaster import decoded_header
from .context import (
    ERROR_HEADER,
    message_from_model,
    re_subject,
    reply_headers,
    thread_to_turns,
)
from .llm import ChatModel, ChatTurn
from .mailbox import Incoming, Turn
from .reply_bytes import plain_reply

__all__ = ["AgentProfile", "Answers", "BeforeModelCall", "agent_reply", "error_message",
           "WrittenReply", "model_reply", "refused_reply", "robot_reply"]

#: called before each model call with (agent, model, turns): the console's --debug waits there
BeforeModelCall = Callable[[str, str, list[ChatTurn]], Awaitable[None]]
#: the Message-ID a reply threads under when not the answered message's (``Mailbox.answers``)
Answers = Callable[[Message], "str | None"] | None


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """Who an agent is: its address, its system turn, its model, the robots it may mail."""

    address: str
    system: str
    model: str
    robots: Collection[str] = ()
    #: input tokens a model spec takes, when known (config, litellm's model list)
    window_of: Callable[[str], int | None] = lambda spec: None
    #: messages at the start of the memory never trimmed (the training)
    keep_first: int = 4
    #: whether a model spec takes images (config ``models.vision``, litellm's model list)
    vision_of: Callable[[str], bool] = lambda spec: False


async def agent_reply(profile: AgentProfile, incoming: Incoming, message: Message,
                      memory: Sequence[Turn], *, model: ChatModel, answers: Answers = None,
                      before_call: BeforeModelCall | None = None,
                      ) -> tuple[EmailMessage | WrittenReply, float]:
    """The agent's reply to ``incoming`` and what it cost (USD).

    A plain answer (To, Subject, a short body) comes written as bytes
    (``reply_bytes.plain_reply``), any other as an ``EmailMessage``: either
    way the bytes ``model_reply(...).as_bytes()`` gives.

    ``answers(reply)`` names the Message-ID the reply threads under when it is
    not ``incoming``'s (``Mailbox.answers``).

    Raises:
        ModelError: the model call failed (the caller answers with an error note).
    """
    spec = incoming.model or profile.model
    turns = thread_to_turns(profile.address, memory, profile.system,
                            images=profile.vision_of(spec))
    if before_call is not None:
        await before_call(profile.address, spec, turns)
    completion = await model.complete(turns, model=spec)
    stamp = [("M-Model", completion.model),
             ("M-Tokens-Input", str(completion.tokens_input)),
             ("M-Tokens-Output", str(completion.tokens_output)),
             ("M-Cost", f"{completion.cost:.6f}")]
    made = functools.partial(model_reply, completion.text, agent=profile.address,
                             default_to=incoming.sender, default_subject=incoming.subject,
                             robots=profile.robots, incoming=message, answers=answers,
                             stamp=stamp)
    raw = plain_reply(completion.text, agent=profile.address, default_to=incoming.sender,
                      incoming=message, answers=answers, stamp=stamp)
    return (made() if raw is None else WrittenReply(raw, made)), completion.cost


@dataclass(frozen=True, slots=True)
class WrittenReply:
    """A reply already written as bytes, the bytes ``message().as_bytes()`` gives.

    ``message()`` makes it as an ``EmailMessage`` again, for what needs one
    (the note that keeps a refused reply).
    """

    raw: bytes
    message: Callable[[], EmailMessage]


def model_reply(text: str, *, agent: str, default_to: str, default_subject: str,
                robots: Collection[str], incoming: Message, answers: Answers,
                stamp: Sequence[tuple[str, str]]) -> EmailMessage:
    """A model's answer ``text`` as ``agent``'s reply to ``incoming``, ``stamp`` headers last."""
    reply = message_from_model(text, agent=agent, default_to=default_to,
                               default_subject=default_subject, robots=robots)
    reply_headers(reply, author=agent, incoming=incoming, default_to=default_to,
                  answers=answers(reply) if answers else None)
    for name, value in stamp:
        reply[name] = value
    return reply


async def robot_reply(robot: Robot, address: str, incoming: Incoming,
                      message: EmailMessage) -> EmailMessage | None:
    """The robot's reply to ``incoming``, threaded; None when it has nothing to say.

    A robot may answer another message than ``incoming`` (the shell's output,
    after the user's ``yes``, answers the agent's command): its own
    In-Reply-To and References, and a Message-ID it set, are kept.
    """
    reply = await robot.handle(message)
    if reply is None:
        return None
    if reply["Subject"] is None:
        reply["Subject"] = re_subject(incoming.subject)
    own = {name: str(reply[name]) for name in ("Message-ID", "In-Reply-To", "References")
           if reply[name] is not None}
    reply_headers(reply, author=address, incoming=message, default_to=incoming.sender)
    kept = ["Message-ID"] if "Message-ID" in own else []
    if "In-Reply-To" in own:
        kept += ["In-Reply-To", "References"]
    for name in kept:
        del reply[name]
        if name in own:
            reply[name] = own[name]
    return reply


def error_message(*, author: str, to: str, message: Message, problem: str, hint: str,
                  answers: Answers = None) -> EmailMessage:
    """The mail a sender gets when its message could not be answered."""
    subject = decoded_header(str(message.get("Subject", "")))
    reply = EmailMessage()
    reply["To"] = to
    reply["Subject"] = re_subject(subject)
    reply[ERROR_HEADER] = problem.splitlines()[0][:200] if problem else "error"
    reply.set_content(
        f"{author} could not answer the message \"{subject}\".\n\n"
        f"What failed: {problem}\n"
        f"How to fix it: {hint}\n\n"
        "Nothing was lost: the message is stored. Reply to this mail to try again.\n"
    )
    reply_headers(reply, author=author, incoming=message, default_to=to,
                  answers=answers(reply) if answers else None)
    return reply


def refused_reply(reply: EmailMessage, *, to: str, problem: str) -> EmailMessage:
    """``reply`` as written, readdressed to ``to`` with a note on why it was refused."""
    shown = ", ".join(f"{name}: {reply[name]}" for name in ("To", "Cc", "Bcc") if reply[name])
    body = reply.get_content() if not reply.is_multipart() else text_of(reply)
    note = EmailMessage()
    note["From"] = str(reply["From"])
    note["To"] = to
    note["Subject"] = str(reply["Subject"] or "")
    note[ERROR_HEADER] = f"reply refused: {problem}"[:200]
    for name, value in reply.items():  # what the model call cost stays on record
        if name.lower().startswith("m-"):
            note[name] = value
    note.set_content(
        f"This reply could not be sent as written ({shown}): {problem}\n"
        "Here it is, so nothing is lost.\n\n" + str(body)
    )
    return note
