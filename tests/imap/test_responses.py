"""Responses and response codes: their exact wire form, and errors turned into responses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcoach_server.errors import ProtocolError
from mailcoach_server.imap.responses import (
    AuthenticationFailed,
    BadCharset,
    Capability,
    Continuation,
    Enabled,
    Exists,
    Expunge,
    FetchResponse,
    Flags,
    Id,
    ImapError,
    ListItem,
    MailboxExists,
    MailboxNotFound,
    Namespace,
    Recent,
    ResponseCode,
    Search,
    Status,
    Tagged,
    TryCreate,
    Untagged,
    format_astring,
    format_datetime,
    format_string,
)
from mailcoach_server.imap.sequence import SequenceSet


@pytest.mark.parametrize(
    ("response", "wire"),
    [
        (Tagged.ok("a1", "LOGIN completed"), b"a1 OK LOGIN completed\r\n"),
        (Tagged.no("a2", "no such mailbox", ResponseCode("TRYCREATE")),
         b"a2 NO [TRYCREATE] no such mailbox\r\n"),
        (Tagged.bad("a3", "line one\r\nline two"), b"a3 BAD line one  line two\r\n"),
        (Tagged.ok("a4", "SELECT completed", ResponseCode("READ-WRITE")),
         b"a4 OK [READ-WRITE] SELECT completed\r\n"),
        (Tagged.ok("a5", "APPEND completed", ResponseCode.append_uid(38505, 3955)),
         b"a5 OK [APPENDUID 38505 3955] APPEND completed\r\n"),
        (Tagged.ok("a6", "done", ResponseCode.copy_uid(
            38505, SequenceSet.from_numbers([304, 319, 320]),
            SequenceSet.from_numbers([3956, 3957, 3958]))),
         b"a6 OK [COPYUID 38505 304,319:320 3956:3958] done\r\n"),
        (Untagged.ok("UIDs valid", ResponseCode.number("UIDVALIDITY", 3857529045)),
         b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"),
        (Untagged.ok("next", ResponseCode.number("UIDNEXT", 4392)),
         b"* OK [UIDNEXT 4392] next\r\n"),
        (Untagged.ok("first unseen", ResponseCode.number("UNSEEN", 12)),
         b"* OK [UNSEEN 12] first unseen\r\n"),
        (Untagged.ok("Limited", ResponseCode.permanent_flags(["\\Deleted", "\\Seen", "\\*"])),
         b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"),
        (Untagged.ok("ready", ResponseCode.capability(["IMAP4rev1", "IDLE"])),
         b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"),
        (Untagged.bye("logging out"), b"* BYE logging out\r\n"),
        (Untagged("OK", "note", ResponseCode("ALERT")), b"* OK [ALERT] note\r\n"),
        (Continuation(), b"+ Ready\r\n"),
        (Continuation(""), b"+ \r\n"),
        (Exists(172), b"* 172 EXISTS\r\n"),
        (Recent(1), b"* 1 RECENT\r\n"),
        (Expunge(3), b"* 3 EXPUNGE\r\n"),
        (Flags(("\\Answered", "\\Seen", "$Junk")), b"* FLAGS (\\Answered \\Seen $Junk)\r\n"),
        (ListItem("Sent", "/", ("\\HasNoChildren", "\\Sent")),
         b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n'),
        (ListItem("Entwürfe", None, (), "LSUB"), b'* LSUB () NIL "Entw&APw-rfe"\r\n'),
        (ListItem('a"b', "/"), b'* LIST () "/" "a\\"b"\r\n'),
        (Status("INBOX", (("MESSAGES", 2), ("UIDNEXT", 3))),
         b'* STATUS "INBOX" (MESSAGES 2 UIDNEXT 3)\r\n'),
        (Search(()), b"* SEARCH\r\n"),
        (Search((2, 3, 6)), b"* SEARCH 2 3 6\r\n"),
        (Capability(("IMAP4rev1", "AUTH=PLAIN")), b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"),
        (Enabled(()), b"* ENABLED\r\n"),
        (Enabled(("UTF8=ACCEPT",)), b"* ENABLED UTF8=ACCEPT\r\n"),
        (Namespace(), b'* NAMESPACE (("" "/")) NIL NIL\r\n'),
        (Namespace((("", "/"),), None, (("Agents/", "/"),)),
         b'* NAMESPACE (("" "/")) NIL (("Agents/" "/"))\r\n'),
        (Id(None), b"* ID NIL\r\n"),
        (Id({"name": "mailcoach", "os": None}), b'* ID ("name" "mailcoach" "os" NIL)\r\n'),
        (FetchResponse(12, ((b"UID", b"4"), (b"FLAGS", b"(\\Seen)"))),
         b"* 12 FETCH (UID 4 FLAGS (\\Seen))\r\n"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, bytes) else "",
)
def test_wire_form(response: object, wire: bytes) -> None:
    assert bytes(response) == wire  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (None, b"NIL"),
        ("", b'""'),
        ("plain", b'"plain"'),
        ('q"uo\\te', b'"q\\"uo\\\\te"'),
        ("caf\u00e9", b"{5}\r\ncaf\xc3\xa9"),
        ("two\r\nlines", b"{10}\r\ntwo\r\nlines"),
        (b"nul\x00", b"{4}\r\nnul\x00"),
        ("x" * 2000, b"{2000}\r\n" + b"x" * 2000),
    ],
)
def test_format_string(value: str | bytes | None, wire: bytes) -> None:
    assert format_string(value) == wire


@pytest.mark.parametrize(
    ("value", "wire"),
    [("joe", b"joe"), ("a]b", b"a]b"), ("NIL", b'"NIL"'), ("", b'""'), ("a b", b'"a b"'),
     ("50%", b'"50%"'), ("caf\u00e9", b"{5}\r\ncaf\xc3\xa9")],
)
def test_format_astring(value: str, wire: bytes) -> None:
    assert format_astring(value) == wire


@pytest.mark.parametrize(
    ("moment", "wire"),
    [
        (datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7))),
         b'"17-Jul-1996 02:44:25 -0700"'),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), b'" 2-Jan-2024 03:04:05 +0000"'),
        (datetime(2024, 12, 31, 23, 59, 59), b'"31-Dec-2024 23:59:59 +0000"'),
        (datetime(2024, 3, 9, 8, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
         b'" 9-Mar-2024 08:00:00 +0530"'),
    ],
)
def test_format_datetime(moment: datetime, wire: bytes) -> None:
    assert format_datetime(moment) == wire


@pytest.mark.parametrize(
    ("error", "wire"),
    [
        (MailboxNotFound(), b"t NO [NONEXISTENT] no such mailbox\r\n"),
        (MailboxNotFound("Agents/x is gone"), b"t NO [NONEXISTENT] Agents/x is gone\r\n"),
        (TryCreate(), b"t NO [TRYCREATE] no such mailbox\r\n"),
        (MailboxExists(), b"t NO [ALREADYEXISTS] mailbox already exists\r\n"),
        (AuthenticationFailed(), b"t NO [AUTHENTICATIONFAILED] invalid credentials\r\n"),
        (BadCharset(), b"t NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset\r\n"),
        (ImapError("nope"), b"t NO nope\r\n"),
    ],
)
def test_errors_to_response(error: ImapError, wire: bytes) -> None:
    assert isinstance(error, ProtocolError)
    assert bytes(error.to_response("t")) == wire


@settings(max_examples=300, deadline=None)
@given(seconds=st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_format_timestamp_is_format_datetime_of_the_local_time(seconds: float) -> None:
    from datetime import datetime

    from mailcoach_server.imap.wire import format_datetime, format_timestamp

    assert format_timestamp(seconds) == format_datetime(
        datetime.fromtimestamp(seconds).astimezone())
