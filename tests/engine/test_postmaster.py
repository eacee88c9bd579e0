"""The postmaster's checks and stamps, as pure functions over bytes."""

from __future__ import annotations

import pytest

from mailcoach_server.errors import SubmitError
from mailcoach_server.postmaster import prepare


def check(raw: bytes, **kwargs):
    options = {"domain": "localdomain", "max_size": 10_000, "max_hops": 3, "origin": "smtp"}
    return prepare(raw, **(options | kwargs))


def test_stamps_received_message_id_and_date_and_keeps_the_body_bytes():
    body = b"line one\r\n>From the start\r\n\xc3\xa9\r\n"
    sub = check(b"From: user@localdomain\r\nTo: swe1@localdomain\r\nSubject: s\r\n\r\n" + body)
    head, _, rest = sub.raw.partition(b"\n\n")
    assert head.startswith(b"Received: from localhost by localdomain (mailcoach) with ESMTP;")
    assert b"\nMessage-ID: <" in head and b"\nDate: " in head
    assert rest == body.replace(b"\r\n", b"\n")
    assert sub.message_id.endswith("@localdomain>")


def test_keeps_a_given_message_id_and_removes_bcc():
    sub = check(b"From: user@localdomain\nTo: swe1@localdomain\nBcc: a.swe1@localdomain,\n"
                b" b.swe1@localdomain\nMessage-ID: <given@x>\n\nhi\n")
    assert sub.message_id == "<given@x>"
    assert b"Bcc" not in sub.raw and b"b.swe1" not in sub.raw
    assert sub.to == ("swe1@localdomain",)
    assert sub.cc == ("a.swe1@localdomain", "b.swe1@localdomain")


def test_envelope_recipients_decide_who_gets_it():
    sub = check(b"From: user@localdomain\nTo: swe1@localdomain\nCc: shell@localdomain\n\nx",
                envelope_rcpts=["SWE1@localdomain", "secret@localdomain"])
    assert sub.to == ("swe1@localdomain",)
    assert sub.cc == ("secret@localdomain",)  # Bcc'd: remembers only


@pytest.mark.parametrize(("raw", "code", "status"), [
    (b"no headers at all\n", 554, "5.6.0"),
    (b"From: user@localdomain\nbroken header line\n\nx", 554, "5.6.0"),
    (b"To: swe1@localdomain\n\nno sender", 553, "5.1.7"),
    (b"From: a@example.com\nTo: swe1@localdomain\n\nx", 553, "5.7.1"),
    (b"From: user@localdomain\nTo: someone@example.com\n\nx", 550, "5.7.1"),
    (b"From: user@localdomain\nSubject: nobody\n\nx", 554, "5.5.1"),
    (b"From: user@localdomain\nTo: not an address\n\nx", 553, "5.1.3"),
    (b"Received: a\nReceived: b\nReceived: c\nFrom: user@localdomain\nTo: swe1@localdomain\n\nx",
     554, "5.4.6"),
    (b"From: user@localdomain\nTo: swe1@localdomain\n\n" + b"x" * 20_000, 552, "5.3.4"),
])
def test_refusals_carry_the_smtp_code(raw, code, status):
    with pytest.raises(SubmitError) as refused:
        check(raw)
    assert (refused.value.code, refused.value.status) == (code, status)
    assert refused.value.smtp_reply().startswith(f"{code} {status} ")


def test_agents_mail_is_marked_auto_submitted():
    sub = check(b"From: swe1@localdomain\nTo: user@localdomain\n\nx", origin="agent")
    assert sub.auto and b"Auto-Submitted: auto-replied" in sub.raw
    human = check(b"From: user@localdomain\nTo: swe1@localdomain\n\nx")
    assert not human.auto


def test_utf8_headers_and_encoded_words_read_as_text():
    sub = check("From: Jösé <user@localdomain>\nTo: swe1@localdomain\nSubject: café ☕\n\nx"
                .encode())
    assert sub.subject == "café ☕"
    sub = check(b"From: user@localdomain\nTo: swe1@localdomain\n"
                b"Subject: =?utf-8?q?caf=C3=A9?=\n\nx")
    assert sub.subject == "café"


@pytest.mark.parametrize("value", [
    "a@b", "Swe One <SWE1@localdomain>", "a@b, c@d", '"Doe, J" <j@d>', "x (comment) <y@z>",
    "not an address", "undisclosed-recipients:;", "", "<a@b>", "a@b,,c@d", "Jösé <u@l>",
    "a b@c", "a@b <c@d>", "Name <a@b>, c@d", "<a@b", "a@b>", "x@y.z, Foo Bar <FOO@Y.Z>",
])
def test_fast_address_path_agrees_with_the_stdlib_parser(value, monkeypatch):
    from mailcoach_server import addresses

    fast = addresses.parse_address_list([value])
    monkeypatch.setattr(addresses, "_simple_pairs", lambda text: None)
    assert fast == addresses.parse_address_list([value])


def nested(levels: int) -> bytes:
    head = b"From: user@localdomain\nTo: shell@localdomain\nSubject: deep\n"
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
                       for i in range(levels))
    closing = b"".join(b"\n--b%d--\n" % i for i in reversed(range(levels)))
    return head + opening + b"Content-Type: text/plain\n\nx\n" + closing


def test_mime_nesting_past_the_limit_is_refused_with_554_5_6_0():
    assert check(nested(99)).to == ("shell@localdomain",)  # 100 levels: the limit itself
    with pytest.raises(SubmitError) as refused:
        check(nested(100))
    assert (refused.value.code, refused.value.status) == (554, "5.6.0")
    assert "nesting" in refused.value.reason


@pytest.mark.parametrize(("rcpt", "why"), [
    ("a" * 65 + "@localdomain", "longer than 64"),
    ('"a b"@localdomain', "quoted local parts"),
    ("jösé@localdomain", "non-ASCII"),
    ("a\0b@localdomain", "not an address"),
])
def test_a_refused_envelope_recipient_says_why(rcpt, why):
    with pytest.raises(SubmitError) as refused:
        check(b"From: user@localdomain\nTo: swe1@localdomain\n\nx", envelope_rcpts=[rcpt])
    assert (refused.value.code, refused.value.status) == (553, "5.1.3")
    assert why in refused.value.reason and "\0" not in refused.value.smtp_reply()
