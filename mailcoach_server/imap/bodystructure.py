"""ENVELOPE, BODY and BODYSTRUCTURE in their wire form (RFC 3501 §7.4.2).

Pure functions of a :class:`~mailcoach_server.imap.mime.MimePart`.
Header values go out raw (unfolded, encoded words left for the client to
decode), as the RFC asks. Addresses are split with the stdlib's
``email.utils.getaddresses``, inside the group markers RFC 3501 asks for
(``(NIL NIL "group" NIL)`` ... ``(NIL NIL NIL NIL)``; see :mod:`.addresslist`).
"""

from __future__ import annotations

from .addresslist import Group, GroupEnd, parse_address_items
from .mime import MimePart, parse_params
from .wire import format_list, format_string

__all__ = ["body_structure", "envelope", "line_count"]


def line_count(data: bytes) -> int:
    """Lines of a body: CRLFs, plus one for a last line without one."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _nstring(value: bytes | None) -> bytes:
    return format_string(value)


def _addresses(part: MimePart, name: str) -> list[bytes]:
    value = part.header(name)
    if value is None:
        return []
    out = []
    for item in parse_address_items(value.decode("ascii", "surrogateescape")):
        if isinstance(item, Group):  # RFC 3501 §7.4.2: group syntax as NIL-host markers
            out.append(b"(NIL NIL " + format_string(_raw(item.name)) + b" NIL)")
        elif isinstance(item, GroupEnd):
            out.append(b"(NIL NIL NIL NIL)")
        else:
            out.append(format_list([
                _nstring(_raw(item.name) if item.name else None), b"NIL",
                format_string(_raw(item.mailbox)), format_string(_raw(item.host)),
            ]))
    return out


def _raw(text: str) -> bytes:
    return text.encode("ascii", "surrogateescape")


def envelope(part: MimePart) -> bytes:
    """``(date subject from sender reply-to to cc bcc in-reply-to message-id)``.

    Sender and Reply-To default to From when absent or empty (RFC 3501 §7.4.2).
    """
    from_ = _addresses(part, "From")
    fields = [_nstring(part.header("Date")), _nstring(part.header("Subject"))]
    for name in ("From", "Sender", "Reply-To", "To", "Cc", "Bcc"):
        found = from_ if name == "From" else _addresses(part, name)
        if not found and name in ("Sender", "Reply-To"):
            found = from_
        fields.append(format_list(found) if found else b"NIL")
    fields.append(_nstring(part.header("In-Reply-To")))
    fields.append(_nstring(part.header("Message-ID")))
    return format_list(fields)


def _params(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return b"NIL"
    return format_list(
        format_string(k.upper()) + b" " + format_string(v) for k, v in params
    )


def _disposition(part: MimePart) -> bytes:
    value = part.header("Content-Disposition")
    if not value:
        return b"NIL"
    kind = value.split(b";", 1)[0].strip()
    if not kind:
        return b"NIL"
    return format_list([format_string(kind.upper()), _params(parse_params(value))])


def _language(part: MimePart) -> bytes:
    value = part.header("Content-Language")
    if not value:
        return b"NIL"
    tags = [t.strip() for t in value.split(b",") if t.strip()]
    if len(tags) == 1:
        return format_string(tags[0])
    return format_list(format_string(t) for t in tags) if tags else b"NIL"


def _extension(part: MimePart) -> list[bytes]:
    return [_disposition(part), _language(part), _nstring(part.header("Content-Location"))]


def body_structure(part: MimePart, *, extensible: bool = True) -> bytes:
    """BODYSTRUCTURE (``extensible=True``) or BODY (``False``) of ``part``."""
    if part.is_multipart:
        inner = b"".join(body_structure(c, extensible=extensible) for c in part.children)
        fields = [inner, format_string(part.subtype.upper().encode("ascii"))]
        if extensible:
            fields += [_params(part.params), *_extension(part)]
        return format_list(fields)
    body = part.body
    fields = [
        format_string(part.maintype.upper().encode("ascii")),
        format_string(part.subtype.upper().encode("ascii")),
        _params(part.params),
        _nstring(part.header("Content-ID")),
        _nstring(part.header("Content-Description")),
        format_string((part.header("Content-Transfer-Encoding") or b"7BIT").upper()),
        b"%d" % len(body),
    ]
    if part.message is not None:
        fields += [
            envelope(part.message),
            body_structure(part.message, extensible=extensible),
            b"%d" % line_count(body),
        ]
    elif part.maintype == "text":
        fields.append(b"%d" % line_count(body))
    if extensible:
        fields += [_nstring(part.header("Content-MD5")), *_extension(part)]
    return format_list(fields)
