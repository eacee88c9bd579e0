"""Reading mail as text: the part a model or a robot should see.

``text_of(message)`` returns the plain-text body: the text/plain part when
there is one, else HTML turned into text (stdlib ``html.parser``), and a
line naming each attachment. Nothing here decides what a message means.

MIME nesting is bounded twice: ``mime_depth`` measures it without parsing
(the postmaster refuses absurd nesting, as Postfix's ``mime_nesting_limit``
does), and what is parsed for a model or a robot keeps ``MAX_READ_DEPTH``
levels; deeper parts become a note. The stdlib parser recurses once per
level, so a message stored before these limits still parses (headers and a
note) instead of raising ``RecursionError``.
"""

from __future__ import annotations

import logging
import re
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser

__all__ = [
    "MAX_READ_DEPTH", "TOO_DEEP", "html_to_text", "images_of", "mime_depth", "parse_message",
    "read_message", "text_of",
]

log = logging.getLogger(__name__)

#: Levels of MIME nesting a model or robot sees; deeper parts become ``TOO_DEEP``.
MAX_READ_DEPTH = 50
TOO_DEEP = "(nested too deep: the parts below this level are not shown)"

_PARSER = BytesParser(policy=policy.default)
# compat32 keeps header values as plain strings: reading a To header of a
# hundred addresses costs microseconds instead of milliseconds.
_FAST_PARSER = BytesParser(policy=policy.compat32)


def parse_message(raw: bytes) -> EmailMessage:
    """The full ``EmailMessage`` API (robots), with nesting cut at ``MAX_READ_DEPTH``."""
    message = _parse(_PARSER, raw)
    assert isinstance(message, EmailMessage)
    return message


def read_message(raw: bytes) -> Message:
    """A message for reading only (headers as raw strings; see ``decoded_header``)."""
    return _parse(_FAST_PARSER, raw)


def _parse(parser: BytesParser, raw: bytes) -> Message:
    try:
        message = parser.parsebytes(raw)
    except RecursionError:
        # Nested deeper than the interpreter's stack: keep the headers, say so.
        log.warning("a message nested too deep to parse; reading its headers only")
        head, sep, _ = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        message = parser.parsebytes(head + b"\n\n" if sep else head, headersonly=True)
        for name in ("Content-Type", "Content-Transfer-Encoding"):
            del message[name]
        message["Content-Type"] = "text/plain; charset=utf-8"
        message.set_payload(TOO_DEEP + "\n")
        return message
    _cut_deep_parts(message, parser)
    return message


def _cut_deep_parts(message: Message, parser: BytesParser) -> None:
    """Replace parts nested past ``MAX_READ_DEPTH`` by a note (iterative: no recursion)."""
    stack: list[tuple[Message, int]] = [(message, 1)]
    while stack:
        part, depth = stack.pop()
        payload = part.get_payload()
        if not isinstance(payload, list):
            continue
        if depth >= MAX_READ_DEPTH:
            note = parser.parsebytes(
                b"Content-Type: text/plain; charset=utf-8\n\n" + TOO_DEEP.encode() + b"\n")
            part.set_payload([note])
            continue
        stack.extend((child, depth + 1) for child in payload if isinstance(child, Message))


# -- measuring nesting without parsing (the postmaster's check) ---------------

_CONTENT_TYPE = re.compile(rb"^content-type:[ \t]*((?:[^\n]|\n[ \t])*)", re.I | re.M)
_BOUNDARY = re.compile(rb'boundary\*?=[ \t]*(?:"([^"]*)"|([^;\s]+))', re.I)
_DASH_LINE = re.compile(rb"^--[^\n]*", re.M)
_NESTING = re.compile(rb"^content-type:[ \t]*(?:multipart|message)/", re.I | re.M)


def _kind(header: bytes, digest: bool) -> tuple[str, bytes]:
    """("multipart", boundary), ("message", b"") or ("leaf", b"") of one header block."""
    match = _CONTENT_TYPE.search(header)
    if match is None:
        return ("message", b"") if digest else ("leaf", b"")
    value = match.group(1).lower()
    if value.startswith(b"multipart/"):
        boundary = _BOUNDARY.search(match.group(1))
        if boundary is None:
            return "leaf", b""
        return "multipart", (boundary.group(1) or boundary.group(2) or b"").strip()
    if value.startswith(b"message/") and not value.startswith(b"message/delivery-status"):
        return "message", b""
    return "leaf", b""


def mime_depth(header: bytes, body: bytes, limit: int) -> int:
    """How deep the MIME entities of a message nest (1 = no parts); stops past ``limit``.

    A line scan that follows what the stdlib parser does (any open
    multipart's boundary ends the inner parts; ``message/*`` nests a whole
    message; parts of a ``multipart/digest`` default to ``message/rfc822``),
    so it is cheap for big attachments and never recurses.

    Args:
        header: the message's header block (LF line ends); body: the rest.
    """
    if not _NESTING.search(header) and not _NESTING.search(body):
        return 1
    deepest = 1
    stack: list[tuple[bytes, int, bool]] = []  # (delimiter, level, is digest)
    kind, boundary = _kind(header, False)
    digest = b"multipart/digest" in header.lower() and kind == "multipart"
    level, pos = 1, 0
    while deepest <= limit:
        if kind == "message":  # the body is a message: its header block starts here
            level += 1
            deepest = max(deepest, level)
            block, pos = _header_block_at(body, pos)
            kind, boundary = _kind(block, False)
            digest = kind == "multipart" and b"multipart/digest" in block.lower()
            continue
        if kind == "multipart" and boundary:
            stack.append((b"--" + boundary, level, digest))
        found = _next_delimiter(body, pos, stack)
        if found is None:
            break
        line, index, closing = found
        del stack[index + 1:]
        pos = line.end() + 1
        if closing:
            stack.pop()
            kind = "leaf"
            continue
        _, parent_level, in_digest = stack[-1]
        level = parent_level + 1
        deepest = max(deepest, level)
        if body[pos:pos + 1] == b"\n":  # a part with no header lines
            block, pos = b"", pos + 1
        else:
            block, pos = _header_block_at(body, pos)
        kind, boundary = _kind(block, in_digest)
        digest = kind == "multipart" and b"multipart/digest" in block.lower()
    return deepest


def _header_block_at(body: bytes, pos: int) -> tuple[bytes, int]:
    """The header block starting at ``pos`` (through its last LF), and where its content starts."""
    end = body.find(b"\n\n", pos)
    if end < 0:
        return body[pos:], len(body)
    return body[pos:end + 1], end + 2


def _next_delimiter(
    body: bytes, pos: int, stack: list[tuple[bytes, int, bool]]
) -> tuple[re.Match[bytes], int, bool] | None:
    """The first boundary line from ``pos`` that belongs to an open multipart:
    the line, the index in ``stack`` of the innermost multipart it closes or
    separates, and whether it is a closing ``--boundary--``; None if none is left."""
    for line in _DASH_LINE.finditer(body, pos):
        text = line.group(0).rstrip(b" \t\r")
        for index in range(len(stack) - 1, -1, -1):
            delimiter = stack[index][0]
            if text == delimiter or text == delimiter + b"--":
                return line, index, text != delimiter
    return None


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload())
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # unknown charset name
        return payload.decode("utf-8", errors="replace")


def text_of(message: Message, *, inline_limit: int = 0) -> str:
    """The body as text, with attachments named (``[attachment: a.pdf, application/pdf, 3 KB]``).

    With ``inline_limit``, a textual attachment (text/*, JSON, CSV, XML, YAML,
    source code, logs) follows its line, cut to about that many characters
    (its first and last lines kept, the skipped ones counted).
    """
    if not message.is_multipart():
        if message.get_content_maintype() == "text":
            text = _decoded(message)
            return html_to_text(text) if message.get_content_subtype() == "html" else text
        return _attachment_block(message, inline_limit)
    body: str | None = None
    html: str | None = None
    attachments: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        if disposition == "attachment" or (
            part.get_content_maintype() != "text" and disposition != "inline"
        ):
            attachments.append(_attachment_block(part, inline_limit))
        elif part.get_content_type() == "text/plain" and body is None:
            body = _decoded(part)
        elif part.get_content_type() == "text/html" and html is None:
            html = _decoded(part)
        elif part.get_content_maintype() == "text" and disposition == "inline":
            attachments.append(_attachment_block(part, inline_limit))
    text = body if body is not None else html_to_text(html) if html is not None else ""
    if attachments:
        text = text.rstrip("\n") + "\n\n" + "\n".join(attachments) + "\n"
    return text


#: attachment types shown to a model as text besides text/*
_TEXT_TYPES = frozenset({
    "application/json", "application/xml", "application/x-yaml", "application/yaml",
    "application/csv", "application/javascript", "application/x-javascript",
    "application/x-sh", "application/x-shellscript", "application/x-python",
    "application/x-python-code", "application/sql", "application/toml",
    "application/x-ndjson", "application/ld+json", "application/x-diff",
    "application/x-patch",
})
#: file names whose content is text whatever type a client gave them (often octet-stream)
_TEXT_NAME = re.compile(
    r"\.(?:txt|log|md|rst|csv|tsv|json|jsonl|ya?ml|toml|ini|cfg|conf|xml|html?|css|"
    r"py|pyi|c|h|cc|cpp|hpp|rs|go|java|kt|js|mjs|ts|tsx|jsx|rb|pl|php|sh|bash|zsh|sql|"
    r"diff|patch|tex|r|jl|lua|swift|scala|hs|ml|ex|exs|erl|el|vim|mk|cmake|gradle|"
    r"dockerfile|makefile)$|^(?:makefile|dockerfile|readme|license)$", re.IGNORECASE)


def _attachment_block(part: Message, inline_limit: int) -> str:
    line = _attachment_line(part)
    if inline_limit <= 0:
        return line
    text = _inline_text(part)
    if text is None:
        return line
    name = part.get_filename() or "unnamed"
    return f"{line}\n{_cut_text(text, inline_limit)}\n[end of {name}]"


def _inline_text(part: Message) -> str | None:
    """An attachment's content as text when it is text (and decodes as such), else None."""
    kind = part.get_content_type()
    name = (part.get_filename() or "").rsplit("/", 1)[-1]
    if not (part.get_content_maintype() == "text" or kind in _TEXT_TYPES
            or (kind == "application/octet-stream" and _TEXT_NAME.search(name))):
        return None
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or b"\x00" in payload[:8192]:
        return None
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _cut_text(text: str, limit: int) -> str:
    """``text`` within about ``limit`` characters: its first and last lines, the rest counted."""
    text = text.rstrip("\n")
    if len(text) <= limit:
        return text
    lines = text.split("\n")
    head: list[str] = []
    tail: list[str] = []
    room = limit
    for line in lines:  # half the room for the head, the rest for the tail
        if room - len(line) - 1 < limit // 2:
            break
        head.append(line)
        room -= len(line) + 1
    for line in reversed(lines[len(head):]):
        if room - len(line) - 1 < 0:
            break
        tail.append(line)
        room -= len(line) + 1
    tail.reverse()
    skipped = len(lines) - len(head) - len(tail)
    if not head and not tail:  # one enormous line
        return f"{text[: limit // 2]}\n--- {len(text) - limit} characters skipped ---\n" \
               f"{text[-(limit // 2):]}"
    return "\n".join([*head, f"--- {skipped} lines skipped ---", *tail])


#: image types vision models take (OpenAI, Anthropic, Gemini, vLLM's multimodal models)
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def images_of(message: Message, *, max_bytes: int, max_count: int) -> list[tuple[str, bytes]]:
    """(content type, bytes) of the message's images a model may be shown, in order.

    Images over ``max_bytes`` and those after the first ``max_count`` are left
    out (their attachment line still names them).
    """
    found: list[tuple[str, bytes]] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_type() not in _IMAGE_TYPES:
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and 0 < len(payload) <= max_bytes:
            found.append((part.get_content_type(), payload))
            if len(found) == max_count:
                break
    return found


def _attachment_line(part: Message) -> str:
    name = part.get_filename() or "unnamed"
    payload = part.get_payload(decode=True)
    size = len(payload) if isinstance(payload, bytes) else 0
    return f"[attachment: {name}, {part.get_content_type()}, {_human_size(size)}]"


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


class _TextExtractor(HTMLParser):
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                        "pre", "blockquote", "table", "ul", "ol", "hr"})
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0
        self.href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")
        if tag == "a":
            self.href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self.out.append("\n")
        if tag == "a" and self.href and not self.href.startswith("#"):
            self.out.append(f" <{self.href}>")
            self.href = None

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
