"""Mailbox names on the wire: modified UTF-7 (RFC 3501 §5.1.3).

Printable US-ASCII except ``&`` stands for itself, ``&`` is ``&-``, and any
other run of characters is ``&`` + modified base64 of its UTF-16BE form
(``,`` instead of ``/``, no padding) + ``-``. This module only converts
names; it knows nothing about hierarchy, INBOX or which mailboxes exist.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decode_mailbox_name", "encode_mailbox_name"]


def _direct(char: str) -> bool:
    return "\x20" <= char <= "\x7e"


def _b64(run: str) -> str:
    data = base64.b64encode(run.encode("utf-16-be")).decode("ascii")
    return "&" + data.rstrip("=").replace("/", ",") + "-"


_PLAIN = re.compile(r"[\x20-\x25\x27-\x7e]*")  # printable ASCII but "&": itself


def encode_mailbox_name(name: str) -> str:
    """``"Entwürfe"`` → ``"Entw&APw-rfe"``; ``"R&D"`` → ``"R&-D"``."""
    if _PLAIN.fullmatch(name):  # nearly every name: LIST of a big tree stays cheap
        return name
    out: list[str] = []
    run: list[str] = []
    for char in name:
        if _direct(char):
            if run:
                out.append(_b64("".join(run)))
                run = []
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    if run:
        out.append(_b64("".join(run)))
    return "".join(out)


def decode_mailbox_name(name: str) -> str:
    """The inverse of :func:`encode_mailbox_name`.

    Characters outside US-ASCII pass through unchanged, so a client that
    sends raw UTF-8 names still gets what it meant.

    Raises:
        ValueError: an ``&`` shift is not terminated or is not valid
            modified base64 of UTF-16.
    """
    if "&" not in name:
        return name
    out: list[str] = []
    i = 0
    while i < len(name):
        char = name[i]
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError(f"unterminated '&' shift in mailbox name {name!r}")
        if end == i + 1:
            out.append("&")
        else:
            out.append(_decode_run(name[i + 1 : end]))
        i = end + 1
    return "".join(out)


def _decode_run(encoded: str) -> str:
    if "/" in encoded or "=" in encoded:
        raise ValueError(f"not modified base64: {encoded!r}")
    data = encoded.replace(",", "/")
    data += "=" * (-len(data) % 4)
    try:
        raw = base64.b64decode(data, validate=True)
        text = raw.decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"bad modified UTF-7 run {encoded!r}") from exc
    return text
