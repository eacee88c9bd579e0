"""Reading mail as text: the part a model or a robot should see.

``text_of(message)`` returns the plain-text body: the text/plain part when
there is one, else HTML turned into text (stdlib ``html.parser``), and a
line naming each attachment. Nothing here decides what a message means.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser

__all__ = ["html_to_text", "parse_message", "read_message", "text_of"]

_PARSER = BytesParser(policy=policy.default)
# compat32 keeps header values as plain strings: reading a To header of a
# hundred addresses costs microseconds instead of milliseconds.
_FAST_PARSER = BytesParser(policy=policy.compat32)


def parse_message(raw: bytes) -> EmailMessage:
    message = _PARSER.parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def read_message(raw: bytes) -> Message:
    """A message for reading only (headers as raw strings; see ``decoded_header``)."""
    return _FAST_PARSER.parsebytes(raw)


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload())
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # unknown charset name
        return payload.decode("utf-8", errors="replace")


def text_of(message: Message) -> str:
    """The body as text, with attachments named (``[attachment: a.pdf, application/pdf, 3 KB]``)."""
    if not message.is_multipart():
        if message.get_content_maintype() == "text":
            text = _decoded(message)
            return html_to_text(text) if message.get_content_subtype() == "html" else text
        return _attachment_line(message)
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
            attachments.append(_attachment_line(part))
        elif part.get_content_type() == "text/plain" and body is None:
            body = _decoded(part)
        elif part.get_content_type() == "text/html" and html is None:
            html = _decoded(part)
        elif part.get_content_maintype() == "text" and disposition == "inline":
            attachments.append(_attachment_line(part))
    text = body if body is not None else html_to_text(html) if html is not None else ""
    if attachments:
        text = text.rstrip("\n") + "\n\n" + "\n".join(attachments) + "\n"
    return text


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
