"""What the server needed from the protocol core: each change pinned, most by property."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mailcoach_server.imap.command import IdCommand, Section
from mailcoach_server.imap.connection import NEED_DATA, Connection
from mailcoach_server.imap.fetch import MessageView, section_bytes
from mailcoach_server.imap.mime import normalize_crlf, parse_message
from mailcoach_server.imap.parser import AuthenticateCommand, parse_command

_LINE_END = re.compile(rb"\r?\n")
_MESSAGE_BYTES = st.lists(
    st.sampled_from([b"\r\n", b"\n", b"\r", b"Subject: x", b"From: a@b", b" folded", b":",
                     b"X-A: 1", b"body", b"\r\n\r\n", b"\n\n", b"From x"]),
    max_size=30).map(b"".join)


@given(st.binary(max_size=300) | _MESSAGE_BYTES)
def test_normalize_crlf_fast_path_gives_what_the_regex_gives(raw):
    assert normalize_crlf(raw) == _LINE_END.sub(b"\r\n", raw)


@given(_MESSAGE_BYTES)
def test_header_block_without_parsing_is_the_trees(raw):
    view = MessageView(raw)
    fast = view.header_block
    assert fast == parse_message(view.raw).header_block
    for text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        section = Section((), text, ("subject", "x-a"))
        assert section_bytes(MessageView(raw), section) == section_bytes(_parsed(raw), section)


def _parsed(raw: bytes) -> MessageView:
    view = MessageView(raw)
    view.tree  # noqa: B018 - parse first, so the slow path is taken
    return view


def test_memo_computes_once():
    view = MessageView(b"Subject: x\r\n\r\nbody\r\n")
    calls = []
    for _ in range(3):
        assert view.memo("k", lambda: calls.append(1) or b"v") == b"v"
    assert calls == [1]


def test_id_with_spaces_inside_the_parentheses_as_aioimaplib_sends_it():
    command, _ = parse_command(b'a ID ( "name" "aioimaplib" "version" "2" )\r\n',
                               max_literal=100)
    assert command == IdCommand("a", "ID", (("name", "aioimaplib"), ("version", "2")))
    command, _ = parse_command(b'a ID ("name" "x")\r\n', max_literal=100)
    assert command == IdCommand("a", "ID", (("name", "x"),))


def test_login_disabled_hands_authenticate_to_the_command_layer():
    conn = Connection(login_disabled=True)
    conn.receive_data(b"a AUTHENTICATE PLAIN\r\n")
    event = conn.next_event()
    assert isinstance(event, AuthenticateCommand) and not conn.in_sasl
    assert conn.next_event() is NEED_DATA
