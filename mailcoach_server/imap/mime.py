"""The MIME tree of a raw message, as byte offsets into that message.

FETCH must serve the exact octets of a section and report their exact
size, so this module never re-serialises anything: every
:class:`MimePart` is a window (``start``/``body_start``/``end``) on the one
CRLF-normalised buffer. Header fields are split here too, keeping each
field's raw bytes (``BODY[HEADER.FIELDS]`` returns them untouched).
``email.message.Message`` would re-fold and re-encode, which is why it
is used for addresses, dates and decoding elsewhere but not for offsets.

Multipart bodies are split at ``--boundary`` lines (RFC 2046 §5.1.1: the
CRLF before a delimiter belongs to the delimiter); ``message/rfc822``
bodies are parsed as messages. Malformed input never raises: a multipart
without a boundary is treated as text, a missing close delimiter ends
the last part at the end of the body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["FIELD_REST", "MimePart", "normalize_crlf", "parse_message", "parse_params",
           "split_fields"]

_LINE_END = re.compile(rb"\r?\n")
# Anchored at line starts: a long line without a colon must not cost O(n^2) to skip.
#: A field after its name and colon: the rest of its line and its folded lines.
FIELD_REST = rb"[^\r\n]*(?:\r\n|\Z)(?:[ \t][^\r\n]*(?:\r\n|\Z))*"
_FIELD = re.compile(rb"^([^\s:]+)[ \t]*:" + FIELD_REST, re.MULTILINE)
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_CONTENT_TYPE = re.compile(rb"\s*([^\s/;]+)\s*/\s*([^\s;]+)")
_PARAM = re.compile(rb';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;\s]*)', re.DOTALL)
_QUOTED_PAIR = re.compile(rb"\\(.)", re.DOTALL)
_MAX_DEPTH = 30


def normalize_crlf(raw: bytes) -> bytes:
    """Every line ending becomes CRLF (the wire form FETCH sizes are counted in)."""
    if b"\r" not in raw:  # the store's LF-only bytes: the same result, much faster
        return raw.replace(b"\n", b"\r\n")
    return _LINE_END.sub(b"\r\n", raw)


def split_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """``[(lower-case name, raw field bytes incl. folding and CRLF), ...]`` in order."""
    return [(m.group(1).lower(), m.group(0)) for m in _FIELD.finditer(block)]


def parse_params(value: bytes) -> list[tuple[bytes, bytes]]:
    """``; name="va\\"lue"`` pairs after the first ``;`` of a header value, unquoted.

    Names keep their spelling; RFC 2231 ``name*`` parameters are passed on
    raw, as Dovecot does (clients decode them).
    """
    semi = value.find(b";")
    if semi < 0:
        return []
    params = []
    for m in _PARAM.finditer(value, semi):
        raw = m.group(2)
        if raw.startswith(b'"'):
            raw = _QUOTED_PAIR.sub(rb"\1", raw[1:-1] if raw.endswith(b'"') else raw[1:])
        params.append((m.group(1), raw))
    return params


@dataclass(eq=False, slots=True)
class MimePart:
    """One entity: a message, a body part, or a message inside a part.

    Attributes:
        raw: the whole (CRLF) message every part points into.
        start, body_start, end: the header is ``raw[start:body_start]``
            (blank line included), the body ``raw[body_start:end]``.
        fields: the header fields, from :func:`split_fields`.
        maintype, subtype: lower-case content type (defaults applied).
        params: Content-Type parameters; ``(b"charset", b"us-ascii")`` when
            the type was defaulted.
        children: the parts of a multipart.
        message: the encapsulated message of a ``message/rfc822`` part.
        is_message: this entity is a message (the root, or ``message``
            of an rfc822 part), so section numbering differs (RFC 3501 §6.4.5).
    """

    raw: bytes
    start: int
    body_start: int
    end: int
    fields: list[tuple[bytes, bytes]]
    maintype: str = "text"
    subtype: str = "plain"
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    children: list[MimePart] = field(default_factory=list)
    message: MimePart | None = None
    is_message: bool = False

    @property
    def header_block(self) -> bytes:
        return self.raw[self.start : self.body_start]

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start : self.end]

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart"

    def header(self, name: str) -> bytes | None:
        """The first ``name`` field's value, unfolded and stripped; None when absent."""
        key = name.lower().encode("ascii")
        for field_name, raw in self.fields:
            if field_name == key:
                value = raw[raw.index(b":") + 1 :]
                return _FOLD.sub(b"", value).strip()
        return None

    def param(self, name: str) -> bytes | None:
        key = name.lower().encode("ascii")
        for k, v in self.params:
            if k.lower() == key:
                return v
        return None

    def find(self, path: tuple[int, ...]) -> MimePart | None:
        """The part a section number names (``(2, 1)`` for ``2.1``); None if there is none.

        In a message that is not multipart, part 1 is the message's own body;
        the sub-parts of a ``message/rfc822`` part are those of the message
        inside it.
        """
        node: MimePart = self
        for i, number in enumerate(path):
            if i and node.message is not None:
                node = node.message
            if node.is_multipart:
                kids = node.children
            elif node.is_message:
                kids = [node]
            else:
                return None
            if not 1 <= number <= len(kids):
                return None
            node = kids[number - 1]
        return node


def parse_message(raw: bytes) -> MimePart:
    """The MIME tree of ``raw`` (which must already be CRLF; see :func:`normalize_crlf`)."""
    return _parse(raw, 0, len(raw), message=True, digest=False, depth=0)


def _parse(raw: bytes, start: int, end: int, *, message: bool, digest: bool,
           depth: int) -> MimePart:
    if start >= end or raw.startswith(b"\r\n", start, end):
        body_start = min(start + 2, end)
    else:
        blank = raw.find(b"\r\n\r\n", start, end)
        body_start = end if blank < 0 else blank + 4
    part = MimePart(raw, start, body_start, end, split_fields(raw[start:body_start]),
                    is_message=message)
    content_type = part.header("Content-Type")
    m = _CONTENT_TYPE.match(content_type) if content_type is not None else None
    if m is not None:
        part.maintype = m.group(1).decode("ascii", "replace").lower()
        part.subtype = m.group(2).decode("ascii", "replace").lower()
        part.params = parse_params(content_type or b"")
    elif digest:  # RFC 2046 §5.1.5: the default inside multipart/digest
        part.maintype, part.subtype = "message", "rfc822"
    else:
        part.params = [(b"CHARSET", b"US-ASCII")]
    if depth >= _MAX_DEPTH:
        part.maintype, part.subtype = "application", "octet-stream"
    elif part.is_multipart:
        boundary = part.param("boundary")
        if boundary:
            _split(part, boundary, depth)
        else:
            part.maintype, part.subtype = "text", "plain"
    elif (part.maintype, part.subtype) in (("message", "rfc822"), ("message", "global")):
        part.message = _parse(raw, body_start, end, message=True, digest=False, depth=depth + 1)
    return part


def _split(part: MimePart, boundary: bytes, depth: int) -> None:
    raw, end = part.raw, part.end
    delimiter = b"--" + boundary
    digest = part.subtype == "digest"
    bounds: list[tuple[int, int]] = []
    opened: int | None = None
    pos = part.body_start
    while True:
        i = raw.find(delimiter, pos, end)
        if i < 0:
            break
        pos = i + 1
        if i != part.body_start and raw[i - 2 : i] != b"\r\n":
            continue
        after = i + len(delimiter)
        closing = raw.startswith(b"--", after)
        eol = raw.find(b"\r\n", after, end)
        line_end = end if eol < 0 else eol + 2
        rest = raw[after + (2 if closing else 0) : line_end]
        if rest.strip(b" \t\r\n"):
            continue  # a longer boundary that merely starts with ours
        content_end = i - 2 if i != part.body_start else i
        if opened is not None:
            bounds.append((opened, max(opened, content_end)))
        if closing:
            opened = None
            break
        opened = line_end
        pos = line_end
    if opened is not None:
        bounds.append((opened, end))
    if not bounds:  # a multipart needs a part: the whole body stands for one
        bounds.append((part.body_start, end))
    part.children = [
        _parse(raw, s, e, message=False, digest=digest, depth=depth + 1) for s, e in bounds
    ]
