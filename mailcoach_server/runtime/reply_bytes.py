"""An agent's plain reply written as bytes: the bytes the ``email`` package would make, cheaper.

Most model answers are a To line, a Subject line and a short text body.
Made with ``EmailMessage`` (``party.model_reply``) every header is parsed
into a header object when set and folded again when serialised, and
``set_content`` picks an encoding: about 2 ms of the event loop per reply,
most of what a reply costs. ``plain_reply`` writes that common answer
directly and gives None for anything else (Cc, Bcc, X- headers, refused or
missing addresses, no Subject, long or unusual lines), which then takes the
``EmailMessage`` path. Its output is byte for byte what the ``email`` path
gives: ``tests/runtime/test_reply_bytes.py`` checks it over generated
answers. A header value is written as given only when folding could not
change it (short, printable ASCII, single spaces, no encoded word, plain
addresses); any other value is folded by the ``email`` package itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from email import policy
from email.message import Message
from functools import lru_cache

from ..addresses import parse_address_list
from .context import _split_model_text, reply_headers

__all__ = ["header_line", "plain_reply", "text_body"]

_POLICY = policy.default
#: a line longer than this is folded (headers) or encoded (bodies) by ``policy.default``
_MAX_LINE = _POLICY.max_line_length or 78
#: printable ASCII words with single spaces: what folding keeps as it is
_PLAIN_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")
#: headers read as address lists, and as unstructured text, by ``policy.default``
_ADDRESS_HEADERS = frozenset({"from", "to", "cc"})
_TEXT_HEADERS = frozenset({"subject", "in-reply-to", "references", "m-model",
                           "m-tokens-input", "m-tokens-output", "m-cost"})


@lru_cache(maxsize=512)
def _folded(name: str, value: str) -> bytes:
    # What ``message[name] = value`` then ``as_bytes()`` write (and the ValueError they raise).
    return _POLICY.fold_binary(name, _POLICY.header_store_parse(name, value)[1])


def _plain(name: str, value: str) -> bool:
    """Whether ``policy.default`` writes ``name: value`` unchanged."""
    if len(name) + 2 + len(value) > _MAX_LINE:
        return False
    kind = name.lower()
    if kind in _TEXT_HEADERS:
        return "=?" not in value and _PLAIN_TEXT.match(value) is not None
    if kind in _ADDRESS_HEADERS:
        return all(_PLAIN_ADDRESS.match(part) for part in value.split(", "))
    return False


def header_line(name: str, value: str) -> bytes:
    """The header line ``EmailMessage`` (``policy.default``) serialises for ``name: value``."""
    if _plain(name, value):
        return f"{name}: {value}\n".encode("ascii")
    return _folded(name, value)


def text_body(body: str) -> tuple[str, bytes] | None:
    """(transfer encoding, body bytes) ``set_content(body)`` gives, when no line is long;
    None when it would quote or base64 it (or cannot encode it)."""
    try:
        lines = body.encode("utf-8").splitlines()
    except UnicodeEncodeError:
        return None
    if any(len(line) > _MAX_LINE for line in lines):
        return None
    payload = b"\n".join(lines) + b"\n"
    return ("7bit" if payload.isascii() else "8bit"), payload


def plain_reply(text: str, *, agent: str, default_to: str, incoming: Message,
                answers: Callable[[Message], str | None] | None,
                stamp: Sequence[tuple[str, str]]) -> bytes | None:
    """``party.model_reply(...).as_bytes()`` for an answer of To, Subject and a short body;
    None for any other answer.

    Args:
        stamp: headers added last (what the model call cost), as ``model_reply`` adds them.
    """
    headers, body = _split_model_text(text)
    if sorted(name.lower() for name, _ in headers) != ["subject", "to"]:
        return None
    given = {name.lower(): value for name, value in headers}
    to, refused = parse_address_list([given["to"]])
    if refused or not to or agent in to or not given["subject"]:
        return None  # notes, defaults and fallbacks: the EmailMessage path says them
    encoded = text_body(body)
    if encoded is None:
        return None
    cte, payload = encoded
    reply = Message()  # a list of (name, value): nothing parsed
    reply["From"] = agent
    reply["To"] = ", ".join(to)
    reply["Subject"] = given["subject"]
    # set_content's headers, in its order
    reply["Content-Type"] = 'text/plain; charset="utf-8"'
    reply["Content-Transfer-Encoding"] = cte
    reply["MIME-Version"] = "1.0"
    reply_headers(reply, author=agent, incoming=incoming,  # type: ignore[arg-type]
                  default_to=default_to, answers=answers(reply) if answers else None)
    for name, value in stamp:
        reply[name] = value
    return b"".join(header_line(name, value) for name, value in reply.items()) + b"\n" + payload
