"""Mail ⇄ model turns: the two pure conversions at the heart of an agent.

``thread_to_turns`` shows a model its memory (one chat turn per message,
its own messages as ``assistant``); ``message_from_model`` reads what the
model wrote back as an RFC 5322 message, forgiving the usual slips (code
fences, no headers at all). ``reply_headers`` threads any reply to the
message it answers. No I/O here.

A message reads as the original tool showed it (From, To, Subject,
Content-Type without parameters, X-Pop-Shell, a blank line, the body), plus
Cc, and with the body of a multipart message as text.
"""

from __future__ import annotations

import base64
import re
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message

from ..addresses import address_problem, parse_address_list
from ..mailtext import images_of, read_message, text_of
from ..postmaster import decoded_header
from .llm import ChatTurn

__all__ = [
    "ATTACHMENT_TEXT",
    "CONTEXT_CHARS",
    "IMAGES_PER_MESSAGE",
    "IMAGE_BYTES",
    "TurnText",
    "ERROR_HEADER",
    "message_from_model",
    "primer",
    "re_subject",
    "reply_headers",
    "starts_with_original_primer",
    "stored_turn_text",
    "thread_to_turns",
    "turn_text",
]

#: Marks a reply the runtime wrote about a failure; kept out of model context.
ERROR_HEADER = "X-Mailcoach-Error"

# The original's format_message_for_AI shows From, To, Subject, Content-Type and
# X-Pop-Shell; agents learn X-Pop-Shell from their memory, so it stays visible.
_SHOWN_HEADERS = ("From", "To", "Cc", "Subject", "Content-Type", "X-Pop-Shell")
#: Subjects of the original tool's primer (make_primer): system → agent, agent → system.
_ORIGINAL_PRIMER = ("welcome to the system!", "re: welcome to the system")
#: References kept in a reply (the root, the answered message and the latest ones)
_MAX_REFERENCES = 40
_FENCE = re.compile(r"^\s*```[\w-]*\n(.*?)\n```\s*$", re.DOTALL)
_MODEL_HEADER = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
#: headers only the runtime writes
_RUNTIME_PREFIX = "x-mailcoach-"
# Headers a model may set; everything else (Message-ID, Date, threading) is ours.
_MODEL_MAY_SET = {"to", "cc", "bcc", "subject"}


def primer(agent: str, *, domain: str, user: str, robots: Sequence[tuple[str, str]],
           system: str | None = None) -> str:
    """The system turn: who the agent is and how mail works here."""
    if agent == user:  # auto pilot: a model plays the user
        return "\n".join([
            f"You play {user}, the human who asked AI agents on the mail domain {domain} for "
            "help. Read their mail, judge their work as a demanding user would, and answer: "
            "ask for fixes, more detail or the next step, so the work keeps improving.",
            "Write exactly one email each time: To: and Subject: headers, a blank line, "
            "the body.",
            *([system.strip()] if system else []),
        ])
    lines = [
        f"You are {agent}, an AI agent with a mailbox on a mail server for the domain {domain}.",
        "Each message you received or sent is shown with its From, To, Cc, Subject and "
        "Content-Type headers.",
        "You act by writing exactly one email: the headers To: (and Cc: if needed) and "
        "Subject:, then a blank line, then the body. Only addresses @" + domain + " exist.",
        f"The human user is {user}. Mail to any other local address reaches an agent like you.",
    ]
    for address, kind in robots:
        if kind in ("shell", "remote-shell"):
            lines.append(
                f"{address} is a shell: the Subject is run as a /bin/sh command line and the body "
                "is its standard input. Its reply has the Subject 'Exit Code: N' and the output "
                "as body. Run one command per message and wait for its reply."
            )
        else:
            lines.append(f"{address} is a robot of kind {kind}.")
    lines.append("When the work is done, mail the result to whoever asked for it.")
    if system:
        lines.append(system.strip())
    return "\n".join(lines)


#: characters of turn text kept between calls over all agents (``MemoryTurns``, the chats
#: ``thread_to_turns`` made last): about as many bytes, since mail is mostly ASCII
CONTEXT_CHARS = 64 * 1024 * 1024

#: characters of a text attachment a model sees inline (``limits.attachment_text``)
ATTACHMENT_TEXT = 20_000
#: images of one message shown to a model that takes images, and the largest one
IMAGES_PER_MESSAGE, IMAGE_BYTES = 4, 5 * 1024 * 1024


class TurnText(str):
    """A turn's text that also carries its message's images (``data:`` URLs).

    A plain ``str`` everywhere else (memories, trimming, logs): only the chat
    sent to a model that takes images shows them.
    """

    images: tuple[str, ...] = ()

    @classmethod
    def with_images(cls, text: str, images: tuple[str, ...]) -> TurnText:
        made = cls(text)
        made.images = images
        return made


def turn_text(message: Message, *, attachment_text: int = ATTACHMENT_TEXT,
              image_bytes: int = IMAGE_BYTES) -> str | None:
    """How a message reads in a model's context; None for the runtime's error notes.

    Text attachments follow their ``[attachment: ...]`` line, cut to about
    ``attachment_text`` characters (first and last lines kept, the rest counted).
    Images up to ``image_bytes`` ride along as a ``TurnText``'s ``images``.
    """
    if message[ERROR_HEADER] is not None:
        return None
    shown = []
    for name in _SHOWN_HEADERS:
        if message[name] is None:
            continue
        value = decoded_header(str(message[name]))
        if name == "Content-Type":
            value = value.split(";")[0].strip()  # the type only, as the original showed it
        shown.append(f"{name}: {value}")
    body = text_of(message, inline_limit=attachment_text)
    text = "\n".join(shown) + "\n\n" + body.strip("\n") + "\n"
    if not message.is_multipart() or image_bytes <= 0:
        return text
    images = images_of(message, max_bytes=image_bytes, max_count=IMAGES_PER_MESSAGE)
    if not images:
        return text
    return TurnText.with_images(text, tuple(
        f"data:{kind};base64,{base64.b64encode(data).decode()}" for kind, data in images))


def stored_turn_text(raw: bytes, *, attachment_text: int = ATTACHMENT_TEXT,
                     image_bytes: int = IMAGE_BYTES) -> str | None:
    """``turn_text`` of a stored message's bytes, without the MIME parser for plain mail.

    Most of a long memory is one-part text/plain mail with plain ASCII
    headers; for those the text is cut straight from the bytes, exactly as
    the parser would read it (``tests/runtime/test_memory_context.py`` holds
    the two to the same result). Anything else goes through the parser.
    """
    text = _plain_turn_text(raw)
    if text is not None:
        return text or None
    return turn_text(read_message(raw), attachment_text=attachment_text,
                     image_bytes=image_bytes)


# A header block as the stdlib's feedparser reads it: lines of a name and a colon (no
# continuation lines, no envelope "From " line, no control characters: those go through
# the parser), and each field's name and value as it takes them (first colon, value
# without its leading blanks).
_PLAIN_HEAD = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[\x20-\x7e\t]*\n)*"
                         rb"[\x21-\x39\x3b-\x7e]+:[\x20-\x7e\t]*")
_FIELD = re.compile(r"^([^:\n]+):[ \t]*(.*)$", re.MULTILINE)
# One-part text in a charset the parser would name the same way.
_PLAIN_TYPE = re.compile(r'text/plain(?:;[ \t]*charset=("?)(utf-8|us-ascii)\1)?[ \t]*',
                         re.IGNORECASE)
_PLAIN_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_SHOWN_LOWER = tuple(name.lower() for name in _SHOWN_HEADERS)


def _plain_turn_text(raw: bytes) -> str | None:
    """The turn text of a plain message ("" for the runtime's error notes), None if not plain."""
    head, blank, body = raw.partition(b"\n\n")
    if (not blank or b"\r" in raw or b"=?" in head
            or _PLAIN_HEAD.fullmatch(head) is None):
        return None
    fields: dict[str, str] = {}
    for name, value in _FIELD.findall(head.decode("ascii")):
        fields.setdefault(name.lower(), value)  # the first one counts, as message[name]
    kind = fields.get("content-type")
    plain = _PLAIN_TYPE.fullmatch(kind.strip()) if kind is not None else None
    if (kind is not None and plain is None) or fields.get(
            "content-transfer-encoding", "").lower() not in _PLAIN_ENCODINGS:
        return None
    if ERROR_HEADER.lower() in fields:
        return ""
    charset = plain.group(2).lower() if plain is not None and plain.group(2) else "utf-8"
    shown = []
    for name, key in zip(_SHOWN_HEADERS, _SHOWN_LOWER, strict=True):
        value = fields.get(key)
        if value is None:
            continue
        value = " ".join(value.split())
        if name == "Content-Type":
            value = value.split(";")[0].strip()
        shown.append(f"{name}: {value}")
    return "\n".join(shown) + "\n\n" + body.decode(charset, "replace").strip("\n") + "\n"


def starts_with_original_primer(first: Sequence[tuple[str, str]], agent: str) -> bool:
    """Whether a memory begins with the original tool's two primer messages.

    Every memory the original wrote does (its ``<address>.mbox`` files);
    ours never do (the system turn stands for them).

    Args:
        first: (sender, subject) of the memory's first two messages.
        agent: whose memory it is.
    """
    if len(first) < 2:
        return False
    (welcome_from, welcome), (ready_from, ready) = first[0], first[1]
    return (welcome_from.partition("@")[0] == "system"
            and " ".join(welcome.split()).lower() == _ORIGINAL_PRIMER[0]
            and ready_from == agent
            and " ".join(ready.split()).lower() == _ORIGINAL_PRIMER[1])


def thread_to_turns(
    agent: str, memory: Iterable[tuple[str, str | None]], system_text: str, *,
    images: bool = False,
) -> list[ChatTurn]:
    """The chat a model sees: the primer, then one turn per message in memory.

    Args:
        memory: (normalised sender, ``turn_text`` of the message) pairs, oldest first.
        images: the model takes images: a message's images go with its turn.

    Returns a new list. The last chat made for each agent is kept (``_CHATS``):
    when ``memory`` is that chat's memory with turns appended, only the new
    turns are made; after a rewrite (rollback, pop, trim) the unchanged head
    is kept and the turns of messages still there are found again, so a long
    memory costs little more than its new mail.
    """
    memory = list(memory)
    key = (agent, system_text, images)
    last = _CHATS.take(key) or _Chat([], [ChatTurn("system", system_text)], 0)
    # Usually turns were appended since the last call; after a rewrite the head that
    # did not change is kept, and the chat turns of the rest are found by their turn.
    start = _common_head(memory, last.memory, images)
    made: dict[tuple[str, str | None], ChatTurn] = {}
    if start < len(last.memory):
        head = last.memory[:start]
        kept_chats = 1 + sum(1 for _, text in head if text is not None)  # and the system's
        made = last.made(images, start, kept_chats)
        del last.turns[kept_chats:]
        last.memory, last.chars = head, sum(_chars(text) for _, text in head)
    last.memory.extend(memory[start:])
    turns, chars = last.turns, last.chars
    for sender, text in memory[start:]:
        if text is None:
            continue
        chat = made.get((sender, text)) if made else None
        if chat is None:
            shown = text.images if images and isinstance(text, TurnText) else ()
            chat = ChatTurn("assistant" if sender == agent else "user", str(text), tuple(shown))
        turns.append(chat)
        chars += _chars(text)
    last.chars = chars
    _CHATS.keep(key, last)
    return list(turns)


@dataclass(slots=True)
class _Chat:
    """The memory a chat was made from, the chat, and the characters it holds."""

    memory: list[tuple[str, str | None]]
    turns: list[ChatTurn]
    chars: int

    def made(self, images: bool, start: int,
             chat_start: int) -> dict[tuple[str, str | None], ChatTurn]:
        """The chat turn made of each (sender, text) from memory position ``start`` on
        (chat position ``chat_start``).

        Turns with images are left out when they are shown (a ``TurnText``
        compares as its text alone).
        """
        shown = [(sender, text) for sender, text in self.memory[start:] if text is not None]
        return {turn: chat for turn, chat in zip(shown, self.turns[chat_start:], strict=True)
                if not (images and type(turn[1]) is TurnText)}


class _ChatMemo:
    """The last chat of each (agent, system text, images), the least recent dropped first.

    Only a cache: a kept chat is used again only for a memory that begins with
    the very turns it was made from (compared by value, never assumed).
    """

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._chats: OrderedDict[tuple[str, str, bool], _Chat] = OrderedDict()
        self._chars = 0

    def take(self, key: tuple[str, str, bool]) -> _Chat | None:
        chat = self._chats.pop(key, None)
        if chat is not None:
            self._chars -= chat.chars
        return chat

    def keep(self, key: tuple[str, str, bool], chat: _Chat) -> None:
        self._chats[key] = chat
        self._chars += chat.chars
        while self._chars > self.max_chars and self._chats:
            _, oldest = self._chats.popitem(last=False)
            self._chars -= oldest.chars

    def clear(self) -> None:
        self._chats.clear()
        self._chars = 0


#: the chats ``thread_to_turns`` made last, by agent (text bounded as ``MemoryTurns``)
_CHATS = _ChatMemo(CONTEXT_CHARS)


def _common_head(memory: list[tuple[str, str | None]], earlier: list[tuple[str, str | None]],
                 images: bool) -> int:
    """How many leading turns ``memory`` and ``earlier`` share, images included.

    One comparison when ``memory`` extends ``earlier`` (the usual case); else
    a binary search over list comparisons, each a C loop.
    """
    if len(memory) >= len(earlier) and memory[:len(earlier)] == earlier:
        same = len(earlier)
    else:
        low, high = 0, min(len(memory), len(earlier))
        while low < high:
            middle = (low + high + 1) // 2
            if memory[:middle] == earlier[:middle]:
                low = middle
            else:
                high = middle - 1
        same = low
    if images:  # equal text, so equal turns, unless images differ (TurnText == its text)
        for position in range(same):
            new, old = memory[position][1], earlier[position][1]
            if ((type(new) is TurnText or type(old) is TurnText)
                    and getattr(new, "images", ()) != getattr(old, "images", ())):
                return position
    return same


def _chars(text: str | None) -> int:
    """Characters a kept turn holds: its text and its images (shown or not)."""
    if text is None:
        return 0
    if isinstance(text, TurnText):
        return len(text) + sum(len(url) for url in text.images)
    return len(text)


def re_subject(subject: str) -> str:
    subject = subject.strip()
    return subject if subject.lower().startswith("re:") else f"Re: {subject}".rstrip()


def message_from_model(text: str, *, agent: str, default_to: str, default_subject: str,
                       robots: Collection[str] = ()) -> EmailMessage:
    """Read a model's answer as a message from ``agent``.

    Text with a header block (``To:``/``Subject:`` lines, a blank line,
    the body) is a message; anything else is a plain body to ``default_to``.
    Without a Subject it gets ``Re: <default_subject>``, except mail to one of
    ``robots``: a Subject the runtime made up must never become a robot's
    command line, so it stays empty and the robot answers with its protocol.
    """
    headers, body = _split_model_text(text)
    reply = EmailMessage()
    reply["From"] = agent
    given = {name.lower(): value for name, value in headers}
    to, refused = parse_address_list([given.get("to", "")])
    # Mail to itself would answer no one (small models copy the question's To): it
    # goes to the asker instead, with a note, so a human always hears back.
    to_self = [address for address in to if address == agent]
    to = [address for address in to if address != agent]
    reply["To"] = ", ".join(to) if to else default_to
    cc, bad_cc = parse_address_list([given.get("cc", "")])
    if cc:
        reply["Cc"] = ", ".join(cc)
    bcc, bad_bcc = parse_address_list([given.get("bcc", "")])
    if bcc:
        reply["Bcc"] = ", ".join(bcc)
    subject = given.get("subject")
    if not subject:
        to_robot = any(address in robots for address in (*(to or [default_to]), *cc))
        subject = "" if to_robot else re_subject(default_subject)
    reply["Subject"] = subject
    for name, value in headers:  # the control headers an agent may pass on
        # X-Mailcoach-* is the runtime's own (error notes, refused recipients, memory
        # notes, the worker's placing of replies): a model never writes it.
        if name.lower().startswith("x-") and not name.lower().startswith(_RUNTIME_PREFIX):
            reply[name] = value
        elif name.lower() not in _MODEL_MAY_SET and name.lower() != "from":
            continue
    # Refused recipients (model output is untrusted): the reply still goes, saying so in
    # a header; in the body too when it falls back to the sender (not a robot's stdin else).
    notes = [f"[mailcoach: not sent to {a[:80]!r}: {address_problem(a)}]"
             for a in (*refused, *bad_cc, *bad_bcc)]
    notes += [f"[mailcoach: not sent to {a!r}: an agent's mail to itself reaches no one]"
              for a in to_self[:1]]
    if notes:
        reply["X-Mailcoach-Refused"] = " ".join(notes)[:900]
    reply.set_content("\n".join(notes) + "\n\n" + body if notes and not to else body)
    return reply


def _split_model_text(text: str) -> tuple[list[tuple[str, str]], str]:
    """The header block (name, value pairs; none if not a message) and the body."""
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    text = text.strip("\n")
    headers: list[tuple[str, str]] = []
    lines = text.split("\n")
    body_start = 0
    for index, line in enumerate(lines):
        if not line.strip():
            body_start = index + 1
            break
        if line[:1] in (" ", "\t") and headers:  # folded header line
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        match = _MODEL_HEADER.match(line)
        if match is None:
            headers = []
            break
        headers.append((match.group(1), match.group(2).strip()))
    else:
        body_start = len(lines)
    if not any(name.lower() in ("to", "subject") for name, _ in headers):
        headers, body_start = [], 0
    body = "\n".join(lines[body_start:]).strip("\n") + "\n"
    return headers, body


def reply_headers(reply: EmailMessage, *, author: str, incoming: Message,
                  default_to: str, answers: str | None = None) -> EmailMessage:
    """Force ``From``, default ``To`` and ``Subject``, thread to ``incoming``.

    Args:
        answers: the Message-ID the reply answers, when it is not ``incoming``'s:
            a reply to the user answers the user's last message, not the shell
            output the user never saw. ``In-Reply-To`` names it; ``References``
            still hold the whole chain through ``incoming``.
    """
    for name in ("From", "Message-ID", "Date", "In-Reply-To", "References"):
        del reply[name]
    reply["From"] = author
    if reply["To"] is None:
        reply["To"] = default_to
    if reply["Subject"] is None:
        reply["Subject"] = re_subject(decoded_header(str(incoming.get("Subject", ""))))
    parent = str(incoming.get("Message-ID", "")).strip()
    if parent:
        references = str(incoming.get("References", "")).split()
        chain = [*references, parent]
        # RFC 5322 §3.6.4 lets a long chain be cut; keep its root and its tail, and
        # the answered message wherever it is, so every client still finds both.
        if len(chain) > _MAX_REFERENCES:
            kept = {0, *range(len(chain) - _MAX_REFERENCES + 2, len(chain))}
            if answers in chain:
                kept.add(chain.index(answers))
            chain = [ref for index, ref in enumerate(chain) if index in kept]
        reply["In-Reply-To"] = answers or parent
        reply["References"] = " ".join(chain)
    elif answers:
        reply["In-Reply-To"] = answers
        reply["References"] = answers
    return reply
