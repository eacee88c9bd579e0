"""FETCH items from raw bytes: exact section octets, sizes, BODYSTRUCTURE, ENVELOPE."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcoach_server.imap.command import FetchAttr, Section
from mailcoach_server.imap.fetch import (
    MessageView,
    ensure_uid,
    fetch_items,
    fetch_response,
    header_fields,
    section_bytes,
    sets_seen,
)
from mailcoach_server.imap.mime import normalize_crlf, parse_message
from mailcoach_server.imap.parser import FetchCommand, parse_command

from .samples import MULTIPART, NO_HEADERS, PLAIN

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
CRLF = normalize_crlf(MULTIPART)


def fetch(raw: bytes, items: bytes) -> dict[bytes, bytes]:
    result = parse_command(b"a FETCH 1 " + items + b"\r\n", max_literal=100)
    assert isinstance(result, tuple) and isinstance(result[0], FetchCommand)
    pairs = fetch_items(MessageView(raw), result[0].attributes, uid=9, flags=("\\Seen",),
                        internaldate=WHEN)
    return dict(pairs)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def test_crlf_normalisation_and_size() -> None:
    assert b"\n" not in CRLF.replace(b"\r\n", b"")
    assert fetch(MULTIPART, b"RFC822.SIZE")[b"RFC822.SIZE"] == b"%d" % len(CRLF)
    assert fetch(MULTIPART, b"BODY[]")[b"BODY[]"] == literal(CRLF)
    assert fetch(MULTIPART, b"RFC822")[b"RFC822"] == literal(CRLF)
    assert normalize_crlf(CRLF) == CRLF


def test_bodystructure() -> None:
    expected = (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 43 2 NIL NIL NIL NIL)'
        b'("APPLICATION" "PDF" ("NAME" "report.pdf") "<part2@example>" NIL "BASE64" 16 NIL'
        b' ("ATTACHMENT" ("FILENAME" "report.pdf")) NIL NIL)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 210'
        b' (NIL "inner" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org"))'
        b' ((NIL NIL "inner" "example.org")) NIL NIL NIL NIL NIL)'
        b' (("TEXT" "PLAIN" NIL NIL NIL "7BIT" 11 1 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" NIL NIL NIL "7BIT" 17 1 NIL NIL NIL NIL)'
        b' "ALTERNATIVE" ("BOUNDARY" "inner") NIL NIL NIL) 13 NIL NIL NIL NIL)'
        b' "MIXED" ("BOUNDARY" "outer") NIL NIL NIL)'
    )
    assert fetch(MULTIPART, b"BODYSTRUCTURE")[b"BODYSTRUCTURE"] == expected


def test_body_is_bodystructure_without_extensions() -> None:
    expected = (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 43 2)'
        b'("APPLICATION" "PDF" ("NAME" "report.pdf") "<part2@example>" NIL "BASE64" 16)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 210'
        b' (NIL "inner" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org"))'
        b' ((NIL NIL "inner" "example.org")) NIL NIL NIL NIL NIL)'
        b' (("TEXT" "PLAIN" NIL NIL NIL "7BIT" 11 1)("TEXT" "HTML" NIL NIL NIL "7BIT" 17 1)'
        b' "ALTERNATIVE") 13) "MIXED")'
    )
    assert fetch(MULTIPART, b"BODY")[b"BODY"] == expected


def test_sizes_in_bodystructure_match_sections() -> None:
    """Every part's size in BODYSTRUCTURE is the length of BODY[part]."""
    tree = parse_message(CRLF)
    view = MessageView(MULTIPART)
    for path, size in [((1,), 43), ((2,), 16), ((3,), 210), ((3, 1), 11), ((3, 2), 17)]:
        part = tree.find(path)
        assert part is not None and len(part.body) == size
        assert section_bytes(view, Section(path)) == part.body


@pytest.mark.parametrize(
    ("item", "data"),
    [
        (b"BODY[1]", b"Hello Joe, caf=C3=A9 tonight?\r\nSecond line."),
        (b"BODY[2]", b"JVBERi0xLjQKJcfs"),
        (b"BODY[1.MIME]",
         b"Content-Type: text/plain; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"),
        (b"BODY[HEADER.FIELDS (SUBJECT FROM)]",
         b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
         b"Subject: =?utf-8?q?Caf=C3=A9?= report\r\n\r\n"),
        (b"BODY[HEADER.FIELDS (X-Missing)]", b"\r\n"),
        (b"BODY[3.HEADER]",
         b"From: inner@example.org\r\nSubject: inner\r\n"
         b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"),
        (b"BODY[3.HEADER.FIELDS (subject)]", b"Subject: inner\r\n\r\n"),
        (b"BODY[3.1]", b"plain inner"),
        (b"BODY[3.2]", b"<p>html inner</p>"),
        (b"BODY[3.2.MIME]", b"Content-Type: text/html\r\n\r\n"),
        (b"BODY[3.MIME]", b"Content-Type: message/rfc822\r\n\r\n"),
    ],
)
def test_sections_are_exact_bytes(item: bytes, data: bytes) -> None:
    assert fetch(MULTIPART, item)[item] == literal(data)


def test_header_text_and_fields_not() -> None:
    header, _, text = CRLF.partition(b"\r\n\r\n")
    got = fetch(MULTIPART, b"(BODY[HEADER] BODY[TEXT] RFC822.HEADER RFC822.TEXT)")
    assert got[b"BODY[HEADER]"] == got[b"RFC822.HEADER"] == literal(header + b"\r\n\r\n")
    assert got[b"BODY[TEXT]"] == got[b"RFC822.TEXT"] == literal(text)
    not_fields = fetch(MULTIPART, b"BODY.PEEK[HEADER.FIELDS.NOT (Content-Type MIME-Version "
                                  b"Message-ID To Date)]")
    assert not_fields[b"BODY[HEADER.FIELDS.NOT (Content-Type MIME-Version Message-ID To Date)]"] \
        == literal(b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
                   b"Subject: =?utf-8?q?Caf=C3=A9?= report\r\n\r\n")


def test_header_fields_keep_folding_and_order() -> None:
    got = fetch(PLAIN, b"BODY.PEEK[HEADER.FIELDS (X-TAG SUBJECT)]")
    assert got[b"BODY[HEADER.FIELDS (X-TAG SUBJECT)]"] == literal(
        b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n and more\r\nX-Tag: Alpha\r\n\r\n"
    )
    assert header_fields(b"A: 1\r\nb: 2\r\na: 3\r\n\r\n", ["a"]) == b"A: 1\r\na: 3\r\n\r\n"


@pytest.mark.parametrize(
    ("item", "name", "data"),
    [
        (b"BODY[]<0.20>", b"BODY[]<0>", CRLF[:20]),
        (b"BODY.PEEK[1]<6.3>", b"BODY[1]<6>", b"Joe"),
        (b"BODY[1]<40.100>", b"BODY[1]<40>", b"ne."),
        (b"BODY[1]<500.10>", b"BODY[1]<500>", b""),
        (b"BODY[3.TEXT]<2.5>", b"BODY[3.TEXT]<2>", b"inner"),
    ],
)
def test_partial(item: bytes, name: bytes, data: bytes) -> None:
    assert fetch(MULTIPART, item)[name] == literal(data)


def test_missing_parts_are_nil() -> None:
    got = fetch(MULTIPART, b"(BODY[4] BODY[1.1] BODY[1.HEADER] BODY[3.3])")
    assert set(got.values()) == {b"NIL"}


def test_single_part_message_numbering() -> None:
    header, _, body = PLAIN.partition(b"\r\n\r\n")
    got = fetch(PLAIN, b"(BODY[1] BODY[TEXT] BODYSTRUCTURE)")
    assert got[b"BODY[1]"] == got[b"BODY[TEXT]"] == literal(body)
    assert got[b"BODYSTRUCTURE"] == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 40 2 NIL NIL NIL NIL)'
    )


def test_message_without_header() -> None:
    got = fetch(NO_HEADERS, b"(BODY[HEADER] BODY[TEXT] ENVELOPE)")
    assert got[b"BODY[HEADER]"] == literal(b"\r\n")
    assert got[b"BODY[TEXT]"] == literal(b"just a body\r\n")
    assert got[b"ENVELOPE"] == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_envelope() -> None:
    assert fetch(MULTIPART, b"ENVELOPE")[b"ENVELOPE"] == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800" "=?utf-8?q?Caf=C3=A9?= report"'
        b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
        b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
        b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
        b' ((NIL NIL "mooch" "owatagu.example") ("Joe Q." NIL "joe" "example.org"))'
        b' NIL NIL NIL "<B27397-0100000@Blurdybloop.example>")'
    )


def test_envelope_missing_headers_and_encoded_words() -> None:
    # No Date/To/Message-ID: NIL. Encoded words stay raw; folding is undone.
    assert fetch(PLAIN, b"ENVELOPE")[b"ENVELOPE"] == (
        b'(NIL "=?utf-8?b?R3LDvMOfZQ==?= and more"'
        b' (("=?iso-8859-1?q?Andr=E9?=" NIL "andre" "example.com"))'
        b' (("=?iso-8859-1?q?Andr=E9?=" NIL "andre" "example.com"))'
        b' (("=?iso-8859-1?q?Andr=E9?=" NIL "andre" "example.com"))'
        b" NIL NIL NIL NIL NIL)"
    )


def test_envelope_eight_bit_and_reply_to() -> None:
    raw = (b"From: \xc3\x89mile <e@x.org>\r\nReply-To: list@x.org\r\nSender:\r\n"
           b"Cc: undisclosed-recipients:;\r\nIn-Reply-To: <p@x>\r\n\r\nhi\r\n")
    envelope = fetch(raw, b"ENVELOPE")[b"ENVELOPE"]
    assert envelope == (
        b'(NIL NIL (({6}\r\n\xc3\x89mile NIL "e" "x.org"))'
        b' (({6}\r\n\xc3\x89mile NIL "e" "x.org")) ((NIL NIL "list" "x.org"))'
        b' NIL ((NIL NIL "undisclosed-recipients" NIL) (NIL NIL NIL NIL)) NIL "<p@x>" NIL)'
    )


def test_envelope_keeps_groups_and_drops_comments() -> None:
    # RFC 3501 §7.4.2: a group is opened by (NIL NIL "name" NIL), closed by (NIL NIL NIL NIL).
    raw = (b"From: <a (comment)@ (comment) b>\r\n"
           b'To: Team: x@y, "C D" <c@d>;, e@f\r\n\r\nhi\r\n')
    envelope = fetch(raw, b"ENVELOPE")[b"ENVELOPE"]
    assert envelope == (
        b'(NIL NIL ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "a" "b"))'
        b' ((NIL NIL "Team" NIL) (NIL NIL "x" "y") ("C D" NIL "c" "d") (NIL NIL NIL NIL)'
        b' (NIL NIL "e" "f")) NIL NIL NIL NIL)'
    )


def test_attachment_with_rfc2231_and_digest_default() -> None:
    raw = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
        b"--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n"
        b"--d\r\nContent-Type: application/octet-stream; name*=utf-8''na%C3%AFve.txt\r\n"
        b"Content-Language: en, de\r\n\r\nxyz\r\n--d--\r\n"
    )
    structure = fetch(raw, b"BODYSTRUCTURE")[b"BODYSTRUCTURE"]
    assert structure.startswith(b'(("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 21 (NIL "one" ')
    assert b'("NAME*" "utf-8\'\'na%C3%AFve.txt")' in structure
    assert b'NIL ("en" "de") NIL)' in structure
    assert structure.endswith(b' "DIGEST" ("BOUNDARY" "d") NIL NIL NIL)')


def test_malformed_multipart_does_not_raise() -> None:
    for raw in (
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno delimiter\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nunterminated",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--xy\r\n--x\r\n\r\nz\r\n--x--",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Subject: only a header",
    ):
        got = fetch(raw, b"(BODYSTRUCTURE BODY[1] BODY[1.1] BODY[TEXT] ENVELOPE)")
        assert re.match(rb"\(+\"", got[b"BODYSTRUCTURE"])


def test_fetch_response_and_helpers() -> None:
    attrs = ensure_uid((FetchAttr("FLAGS"), FetchAttr("BODY", Section((1,)), partial=(0, 5))))
    assert attrs[0] == FetchAttr("UID") and ensure_uid(attrs) == attrs
    response = fetch_response(3, MessageView(MULTIPART), attrs, uid=9, flags=["\\Seen"],
                              internaldate=WHEN)
    assert bytes(response) == b"* 3 FETCH (UID 9 FLAGS (\\Seen) BODY[1]<0> {5}\r\nHello)\r\n"
    assert sets_seen(attrs) and not sets_seen([FetchAttr("BODY", Section(), peek=True)])
    got = fetch(MULTIPART, b"(INTERNALDATE FLAGS UID)")
    assert got == {b"INTERNALDATE": b'" 2-Jan-2024 03:04:05 +0000"', b"FLAGS": b"(\\Seen)",
                   b"UID": b"9"}


# -- the fast paths give what the general ones give ----------------------------------------

_names = st.sampled_from(["From", "to", "SUBJECT", "Date", "X-A", "Message-ID", "Tox", "t"])
_line = st.one_of(
    st.tuples(_names, st.sampled_from(["", " ", "\t"]), st.text("ab c:\t", max_size=8),
              st.lists(st.text("xy :", max_size=5), max_size=2)).map(
        lambda t: f"{t[0]}{t[1]}:{t[2]}" + "".join(f"\n {c}" for c in t[3])),
    st.text("abc:", max_size=6),  # not a field: no colon, or nothing before it
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_line, max_size=8), body=st.text("ab\n", max_size=20),
       wanted=st.lists(_names, min_size=1, max_size=3))
def test_header_fields_scan_for_names_equals_splitting_every_field(lines, body, wanted) -> None:
    lf = ("\n".join(lines) + "\n\n" + body).encode()
    view = MessageView(lf)
    block = view.header_block
    assert block == MessageView(normalize_crlf(lf)).header_block == parse_message(
        normalize_crlf(lf)).header_block
    assert view.size == len(normalize_crlf(lf))
    wanted_lower = {n.lower().encode() for n in wanted}
    from mailcoach_server.imap.mime import split_fields

    expected = b"".join(raw for name, raw in split_fields(block) if name in wanted_lower)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert header_fields(block, wanted) == expected + b"\r\n"


def test_body_without_a_part_is_the_message_and_parses_nothing() -> None:
    view = MessageView(MULTIPART.replace(b"\r\n", b"\n"))
    assert section_bytes(view, Section()) == CRLF
    assert view._tree is None  # BODY[] needs no MIME tree
