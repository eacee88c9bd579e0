"""A party's INBOX and Sent as the worker reads them: entries, keywords, memory order.

Pure: fetched bytes in, values out. An entry is one message of either folder
with what the worker needs of it (sender, recipients, Message-ID, the text a
model sees). The memory is both folders merged in the order the party lived
them: INBOX by UID; a Sent message right after the INBOX message it answers
(``X-Mailcoach-Answers``, on every worker's reply), else after the last INBOX
message received before it (INTERNALDATE), so mail a human sent from the
party's account in a client, or a memory copied in, also finds its place.

Keywords are the record of progress on the server (any client shows them):

    $MCDone       INBOX: acted on (answered, remembered only, or a duplicate)
    $MCForgotten  out of the memory (X-Rollback, X-Pop-Shell, X-Drop); unflag to restore
    $MCUnsent     Sent: saved but the submission is not confirmed yet
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from dataclasses import dataclass
from email.message import Message

from ..addresses import normalize_address, parse_address_list
from ..mailtext import read_message
from ..postmaster import decoded_header
from ..runtime.context import turn_text

__all__ = ["ANSWERS_HEADER", "DONE", "FORGOTTEN", "ROUND_HEADER", "UNSENT", "Entry",
           "answer_key", "make_entry", "memory_order", "reply_message_id"]

DONE, FORGOTTEN, UNSENT = "$MCDone", "$MCForgotten", "$MCUnsent"
#: on a worker's reply: the key (Message-ID) of the message it answers
ANSWERS_HEADER = "X-Mailcoach-Answers"
#: on a worker's reply: automatic messages in a row in its thread
ROUND_HEADER = "X-Mailcoach-Round"
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,500}>")


@dataclass(slots=True)
class Entry:
    """One message of INBOX (``key`` = UID) or Sent (``key`` = -UID)."""

    key: int
    sent: bool
    uid: int
    flags: set[str]
    raw: bytes
    message: Message
    sender: str
    to: tuple[str, ...]
    recipients: tuple[str, ...]
    message_id: str
    in_reply_to: str
    #: the answered message's key (Sent: ANSWERS_HEADER)
    answers: str
    turn: str | None
    #: seconds since the epoch (INTERNALDATE), 0 if unknown
    arrived: float
    subject: str

    @property
    def automatic(self) -> bool:
        return str(self.message.get("Auto-Submitted", "no")).strip().lower() not in ("", "no")

    @property
    def round(self) -> int:
        value = str(self.message.get(ROUND_HEADER, "")).strip()
        return int(value) if value.isdigit() and len(value) < 6 else 0


def _first_id(value: object) -> str:
    match = _MESSAGE_ID.search(str(value or ""))
    return match.group(0) if match else ""


def answer_key(message: Message, raw: bytes) -> str:
    """What names a message across UIDVALIDITY changes: its Message-ID, else a digest."""
    return _first_id(message.get("Message-ID")) or (
        "<sha256-" + hashlib.sha256(raw).hexdigest()[:32] + "@mailcoach.invalid>")


def reply_message_id(party: str, uidvalidity: int, uid: int) -> str:
    """The Message-ID of the reply to INBOX message ``uid``: the same every time it is made."""
    local, _, domain = party.partition("@")
    tag = hashlib.sha256(party.encode()).hexdigest()[:10]
    return f"<mc.{uidvalidity}.{uid}.{tag}.{local}@{domain}>"


def make_entry(uid: int, raw: bytes, flags: frozenset[str], internaldate: str, *,
               sent: bool) -> Entry:
    # IMAP hands messages over with CRLF; serve keeps (and shows models) LF lines
    message = read_message(raw.replace(b"\r\n", b"\n"))
    to, _ = parse_address_list(message.get_all("To", []))
    others, _ = parse_address_list(message.get_all("Cc", []) + message.get_all("Bcc", []))
    sender = (parse_address_list(message.get_all("From", []))[0] or [""])[0]
    arrived = 0.0
    if internaldate:
        try:
            parsed = email.utils.parsedate_to_datetime(internaldate.replace("-", " "))
            arrived = parsed.timestamp()
        except (TypeError, ValueError, IndexError):
            arrived = 0.0
    return Entry(
        key=-uid if sent else uid, sent=sent, uid=uid, flags=set(flags), raw=raw,
        message=message, sender=normalize_address(sender) or sender.lower(),
        to=tuple(to), recipients=tuple(dict.fromkeys((*to, *others))),
        message_id=answer_key(message, raw), in_reply_to=_first_id(message.get("In-Reply-To")),
        answers=_first_id(message.get(ANSWERS_HEADER)) if sent else "",
        turn=turn_text(message), arrived=arrived,
        subject=decoded_header(str(message.get("Subject", ""))),
    )


def memory_order(inbox: list[Entry], sent: list[Entry]) -> list[Entry]:
    """Both folders as one memory, oldest first (see the module docstring)."""
    by_id = {entry.message_id: entry for entry in inbox}
    ordered_inbox = sorted(inbox, key=lambda e: e.uid)
    keyed: list[tuple[tuple[int, int, int], Entry]] = [((e.uid, 0, 0), e) for e in ordered_inbox]
    for entry in sent:
        # not In-Reply-To: a reply to the user threads under the user's question, which
        # may be far back (the shell's output came in between)
        parent = by_id.get(entry.answers)
        if parent is None:
            before = [e.uid for e in ordered_inbox if e.arrived and e.arrived <= entry.arrived]
            after_uid = before[-1] if before else 0
        else:
            after_uid = parent.uid
        keyed.append(((after_uid, 1, entry.uid), entry))
    keyed.sort(key=lambda pair: pair[0])
    return [entry for _, entry in keyed]
