"""SEARCH evaluation: parsed key trees against raw messages and metadata."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailcoach_server.imap.parser import SearchCommand, parse_command
from mailcoach_server.imap.search import SearchMessage, matches

from .samples import MULTIPART, PLAIN

# Internal date: 5 Feb 1994 23:30 in -08:00 (already 6 Feb in UTC: dates are taken as stored).
ARRIVED = datetime(1994, 2, 5, 23, 30, tzinfo=timezone(-timedelta(hours=8)))


def message(raw: bytes = MULTIPART, *, seq: int = 2, uid: int = 20,
            flags: tuple[str, ...] = ("\\Seen", "$Work")) -> SearchMessage:
    return SearchMessage(raw, seq=seq, uid=uid, flags=flags, internaldate=ARRIVED)


def search(criteria: bytes, msg: SearchMessage | None = None) -> bool:
    result = parse_command(b"a SEARCH " + criteria + b"\r\n", max_literal=1000)
    assert isinstance(result, tuple) and isinstance(result[0], SearchCommand), result
    return matches(result[0].key, msg or message(), max_seq=5, max_uid=40)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"ALL", True),
        (b"SEEN", True), (b"UNSEEN", False),
        (b"ANSWERED", False), (b"UNANSWERED", True),
        (b"DELETED", False), (b"UNDELETED", True),
        (b"FLAGGED", False), (b"UNFLAGGED", True),
        (b"DRAFT", False), (b"UNDRAFT", True),
        (b"RECENT", False), (b"OLD", True), (b"NEW", False),
        (b"KEYWORD $work", True), (b"UNKEYWORD $Work", False), (b"KEYWORD $Other", False),
        (b"2", True), (b"1,3:4", False), (b"*", False), (b"2:*", True),
        (b"UID 20", True), (b"UID 1:19,21:*", False), (b"UID 30:*", False), (b"UID *:20", True),
        (b"LARGER 100", True), (b"LARGER 100000", False),
        (b"SMALLER 100000", True), (b"SMALLER 938", False), (b"SMALLER 939", True),
        (b"BEFORE 6-Feb-1994", True), (b"BEFORE 5-Feb-1994", False),
        (b"ON 5-Feb-1994", True), (b"SINCE 5-Feb-1994", True), (b"SINCE 6-Feb-1994", False),
        (b"SENTON 7-Feb-1994", True), (b"SENTBEFORE 7-Feb-1994", False),
        (b"SENTSINCE 7-Feb-1994", True), (b"SENTSINCE 8-Feb-1994", False),
        (b"SUBJECT caf\xc3\xa9", True),  # encoded word decoded before matching
        (b"SUBJECT REPORT", True), (b"SUBJECT invoice", False),
        (b'FROM "fred foobar"', True), (b"FROM blurdybloop.EXAMPLE", True),
        (b"TO joe@example.org", True), (b"TO fred", False),
        (b"CC anyone", False), (b"BCC anyone", False),
        (b"HEADER Message-ID B27397", True), (b'HEADER MIME-Version ""', True),
        (b'HEADER X-Missing ""', False),
        (b"BODY tonight", True),
        (b"BODY \"caf\xc3\xa9 TONIGHT\"", True),  # quoted-printable is decoded ...
        (b"BODY caf=C3=A9", False),  # ... so its encoded form is not found
        (b"BODY JVBERi0", False),  # attachments are not text
        (b"BODY \"html inner\"", True),  # nested message's text parts count
        (b"TEXT joe@example.org", True), (b"TEXT \"second line\"", True),
        (b"TEXT nowhere", False),
        (b"NOT SEEN", False), (b"NOT NOT SEEN", True),
        (b"OR DELETED SEEN", True), (b"OR DELETED DRAFT", False),
        (b"SEEN SUBJECT report UID 20", True), (b"SEEN SUBJECT report UID 21", False),
        (b"(OR FLAGGED (FROM fred SINCE 1-Jan-1990)) NOT DELETED", True),
    ],
    ids=lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v),
)
def test_search_keys(criteria: bytes, expected: bool) -> None:
    assert search(criteria) is expected


def test_plain_message_without_date_and_content_type() -> None:
    msg = message(PLAIN, flags=("\\Recent",))
    assert search(b"NEW", msg) and search(b"RECENT", msg) and not search(b"OLD", msg)
    assert search(b"SUBJECT gr\xc3\xbc\xc3\x9fe", msg)  # base64 encoded word, case-folded
    assert search(b"SUBJECT \"and more\"", msg)  # folded continuation
    assert search(b"FROM andr\xc3\xa9", msg)  # ISO-8859-1 encoded word
    assert search(b"BODY needle", msg)
    assert search(b"HEADER x-tag alpha", msg)
    # No Date header: SENT* fall back to the internal date.
    assert search(b"SENTON 5-Feb-1994", msg)


def test_lf_and_crlf_give_the_same_size() -> None:
    lf = message(MULTIPART)
    crlf = message(MULTIPART.replace(b"\n", b"\r\n"))
    assert lf.size == crlf.size == len(MULTIPART.replace(b"\n", b"\r\n"))


def test_lazy_parsing() -> None:
    msg = message(b"not even a message")
    assert search(b"SEEN UID 20", msg)
    assert "headers" not in msg.__dict__ and "body_text" not in msg.__dict__


def test_star_uses_the_mailbox_maximum() -> None:
    last = message(seq=5, uid=40)
    assert search(b"*", last) and search(b"UID *", last) and search(b"UID 50:*", last)


def test_utc_vs_local_date() -> None:
    moment = datetime(1994, 2, 6, 7, 30, tzinfo=UTC)  # the same instant as ARRIVED
    msg = SearchMessage(MULTIPART, seq=1, uid=1, flags=(), internaldate=moment)
    assert search(b"ON 6-Feb-1994", msg) and not search(b"ON 5-Feb-1994", msg)


@pytest.mark.parametrize(("criteria", "expected"), [
    (b"FROM a@b", True), (b"FROM comment", True), (b"FROM x@y", False),
    (b"TO c@d", True), (b"TO Team", True), (b"TO e@f", True), (b"TO a@b", False),
], ids=lambda v: v.decode() if isinstance(v, bytes) else str(v))
def test_address_keys_see_through_comments_and_groups(criteria: bytes, expected: bool) -> None:
    raw = (b"From: <a (comment)@ (comment) b>\r\n"
           b'To: Team: "C D" <c (x) @ d>;, e@f\r\n\r\nhi\r\n')
    assert search(criteria, message(raw)) is expected
