"""Hypothesis properties: the parser never raises, and formatting round-trips through it."""

from __future__ import annotations

import re
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from mailcoach_server.imap.connection import NEED_DATA, Connection
from mailcoach_server.imap.fetch import MessageView, fetch_items
from mailcoach_server.imap.parser import (
    BadCommand,
    Incomplete,
    LoginCommand,
    MailboxCommand,
    NeedLiteral,
    decode_mailbox_name,
    encode_mailbox_name,
    parse_command,
)
from mailcoach_server.imap.responses import format_astring, format_mailbox, format_string
from mailcoach_server.imap.sequence import SequenceSet

from .samples import MULTIPART

FAST = settings(max_examples=300, deadline=None)

# Pieces of IMAP, so random input gets past the tag and the command name.
TOKENS = [
    b"a1 ", b"* ", b" ", b"\r\n", b"\n", b"(", b")", b"[", b"]", b"<", b">", b".", b'"', b"\\",
    b"{3}\r\n", b"{2+}\r\n", b"{999999}\r\n", b"{", b"}", b"NIL", b"1:*", b"*", b",", b":", b"7",
    b"0", b"UID ", b"FETCH ", b"STORE ", b"SEARCH ", b"LOGIN ", b"APPEND ", b"LIST ", b"SELECT ",
    b"AUTHENTICATE ", b"STATUS ", b"ID ", b"ENABLE ", b"COPY ", b"BODY", b".PEEK", b"HEADER",
    b".FIELDS", b".NOT", b"TEXT", b"MIME", b"FLAGS", b"+FLAGS.SILENT", b"\\Seen", b"OR ",
    b"NOT ", b"HEADER ", b"SINCE ", b"1-Feb-1994", b"CHARSET ", b"&AOk-", b"&", b"\xff", b"\x00",
]
imap_ish = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=4)), max_size=30).map(
    b"".join
)
NAMES = [b"LOGIN", b"SELECT", b"LIST", b"STATUS", b"APPEND", b"SEARCH", b"FETCH", b"STORE",
         b"COPY", b"UID FETCH", b"UID SEARCH", b"UID EXPUNGE", b"ID", b"ENABLE", b"AUTHENTICATE",
         b"RENAME", b"MOVE", b"NOOP", b"IDLE"]
commandish = st.builds(
    lambda name, rest: b"t1 " + name + b" " + b"".join(rest) + b"\r\n",
    st.sampled_from(NAMES),
    st.lists(st.one_of(st.sampled_from(TOKENS[4:]), st.binary(max_size=2)), max_size=14),
)
VALID = [
    b'a LOGIN {3}\r\njoe "p\\"w"\r\n',
    b'a APPEND Sent (\\Seen) " 7-Jul-1996 02:44:25 -0700" {5+}\r\nhello\r\n',
    b"a UID FETCH 1:*,3 (UID BODY.PEEK[1.2.HEADER.FIELDS.NOT (A {1}\r\nB)]<0.9> BODY)\r\n",
    b"a SEARCH CHARSET UTF-8 OR (FROM {2}\r\njo SINCE 1-Feb-1994) NOT HEADER X y\r\n",
    b'a LIST (SPECIAL-USE) "" ("*" %) RETURN (CHILDREN)\r\n',
    b"a UID STORE 1:3 +FLAGS.SILENT (\\Seen $x)\r\n",
    b'a ID ("name" NIL)\r\n',
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        if action == "insert":
            data[i:i] = draw(st.sampled_from(TOKENS))
        elif action == "delete":
            del data[i : i + draw(st.integers(1, 5))]
        elif action == "replace" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[i:]
    return bytes(data)


any_input = st.one_of(st.binary(max_size=200), imap_ish, commandish, mutated())


@FAST
@given(any_input)
def test_parser_never_raises(data: bytes) -> None:
    result = parse_command(data, max_literal=50, max_line=80)
    if isinstance(result, tuple):
        command, consumed = result
        assert 0 < consumed <= len(data) and command.tag
    elif isinstance(result, BadCommand):
        assert 0 < result.consumed <= len(data)  # always progress: no endless BAD loop
    elif isinstance(result, NeedLiteral):
        assert result.offset <= len(data) < result.offset + result.size
    else:
        assert isinstance(result, Incomplete)


@FAST
@given(st.lists(any_input, max_size=6), st.integers(1, 4))
def test_connection_never_raises(chunks: list[bytes], limit: int) -> None:
    conn = Connection(max_literal=50, max_line=80, bad_command_limit=limit)
    for chunk in chunks:
        conn.receive_data(chunk)
        for _ in range(200):
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, BadCommand):
                conn.send(event.to_response())
        else:
            raise AssertionError("next_event() did not settle")


text = st.text(max_size=40)


@FAST
@given(text, text)
def test_astring_round_trip(user: str, password: str) -> None:
    line = b"a LOGIN " + format_astring(user) + b" " + format_string(password) + b"\r\n"
    result = parse_command(line, max_literal=1000)
    assert result == (LoginCommand("a", "LOGIN", user, password), len(line))


@FAST
@given(text.filter(lambda name: name.upper() != "INBOX"))
def test_mailbox_round_trip(name: str) -> None:
    line = b"a SELECT " + format_mailbox(name) + b"\r\n"
    result = parse_command(line, max_literal=1000)
    assert result == (MailboxCommand("a", "SELECT", name), len(line))


@FAST
@given(st.text())
def test_modified_utf7_round_trip(name: str) -> None:
    encoded = encode_mailbox_name(name)
    assert re.fullmatch(r"[\x20-\x7e]*", encoded)
    assert decode_mailbox_name(encoded) == name


@FAST
@given(st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=30))
def test_sequence_set_from_numbers_round_trip(numbers: list[int]) -> None:
    built = SequenceSet.from_numbers(numbers)
    assert SequenceSet.parse(str(built)) == built
    assert list(built) == sorted(set(numbers))


bound = st.one_of(st.none(), st.integers(1, 2**32 - 1))


@FAST
@given(st.lists(st.tuples(bound, bound), min_size=1, max_size=8), st.integers(0, 60))
def test_sequence_set_text_round_trip(ranges: list[tuple[int | None, int | None]],
                                      largest: int) -> None:
    seq = SequenceSet(tuple(ranges))
    assert SequenceSet.parse(str(seq)) == seq
    assert seq.iter_seq(largest) == [n for n in range(1, largest + 1) if seq.contains(n, largest)]


def read(data: bytes, pos: int = 0) -> tuple[object, int]:
    """A minimal reader of IMAP response data: lists, quoted, literals, NIL, atoms."""
    if data[pos : pos + 1] == b"(":
        items, pos = [], pos + 1
        while data[pos : pos + 1] != b")":
            if items and data[pos : pos + 1] == b" ":
                pos += 1
            item, pos = read(data, pos)
            items.append(item)
        return items, pos + 1
    if data[pos : pos + 1] == b'"':
        m = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"').match(data, pos)
        assert m, data[pos:]
        return m.group(1), m.end()
    m = re.compile(rb"\{(\d+)\}\r\n").match(data, pos)
    if m:
        end = m.end() + int(m.group(1))
        assert end <= len(data)
        return data[m.end() : end], end
    m = re.compile(rb"[^\s()\"{]+").match(data, pos)
    assert m, data[pos:]
    return m.group(0), m.end()


def mime_message(parts: list[bytes], boundary: str, nested: bool) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\n" + p + b"\n" for p in parts)
    head = b"Content-Type: multipart/mixed; boundary=" + boundary.encode() + b"\n\n"
    message = head + b"preamble\n" + body + b"--" + boundary.encode() + b"--\n"
    if nested:
        message = b"Subject: outer\nContent-Type: message/rfc822\n\n" + message
    return message


messages = st.one_of(
    st.binary(max_size=300),
    st.builds(mime_message, st.lists(st.binary(max_size=60), max_size=4),
              st.sampled_from(["b", "x y", "--"]), st.booleans()),
    st.just(MULTIPART),
)


@settings(max_examples=150, deadline=None)
@given(messages)
def test_fetch_output_is_well_formed(raw: bytes) -> None:
    result = parse_command(
        b"a FETCH 1 (ENVELOPE BODYSTRUCTURE BODY BODY[] BODY[1] BODY[1.MIME] BODY[2.1]"
        b" BODY[HEADER.FIELDS (From Subject)] BODY[TEXT]<1.5>)\r\n", max_literal=10)
    assert isinstance(result, tuple)
    items = fetch_items(MessageView(raw), result[0].attributes,  # type: ignore[attr-defined]
                        uid=1, flags=(), internaldate=datetime(2024, 1, 1))
    for _, value in items:
        parsed, end = read(value)
        assert end == len(value)
    envelope, _ = read(dict(items)[b"ENVELOPE"])
    assert isinstance(envelope, list) and len(envelope) == 10
