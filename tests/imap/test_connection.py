"""Sans-I/O dialogues with the connection state machine: receive_data / next_event / send."""

from __future__ import annotations

import base64

import pytest

from mailcoach_server.imap.connection import (
    COMMAND_STATES,
    NEED_DATA,
    Connection,
    Event,
    IdleDone,
    NeedContinuation,
    SaslResponse,
    State,
    TooManyBad,
)
from mailcoach_server.imap.parser import (
    AppendCommand,
    AuthenticateCommand,
    BadCommand,
    Command,
    FetchCommand,
    LoginCommand,
    MailboxCommand,
)
from mailcoach_server.imap.responses import Continuation, Tagged


def events(conn: Connection, data: bytes = b"") -> list[Event]:
    """Feed ``data``, then drain events until NEED_DATA (not included)."""
    conn.receive_data(data)
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
        assert len(out) < 100
    return out


def only(conn: Connection, data: bytes = b"") -> Event:
    got = events(conn, data)
    assert len(got) == 1, got
    return got[0]


def authed() -> Connection:
    conn = Connection()
    conn.authenticated("user@localdomain")
    return conn


def selected() -> Connection:
    conn = authed()
    conn.selected("INBOX")
    return conn


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_state_table_covers_every_command() -> None:
    from mailcoach_server.imap.parser import COMMAND_TABLE

    assert set(COMMAND_STATES) == {spec.name for spec in COMMAND_TABLE}


def test_login_select_fetch() -> None:
    conn = Connection()
    assert only(conn, b"a1 LOGIN joe pw\r\n") == LoginCommand("a1", "LOGIN", "joe", "pw")
    conn.authenticated("joe")
    assert (conn.state, conn.user) == (State.AUTHENTICATED, "joe")
    assert only(conn, b"a2 SELECT INBOX\r\n") == MailboxCommand("a2", "SELECT", "INBOX")
    conn.selected("INBOX", read_only=True)
    assert (conn.state, conn.mailbox, conn.read_only) == (State.SELECTED, "INBOX", True)
    assert isinstance(only(conn, b"a3 UID FETCH 1:* FLAGS\r\n"), FetchCommand)
    assert isinstance(only(conn, b"a4 CLOSE\r\n"), Command)
    conn.unselected()
    assert (conn.state, conn.mailbox) == (State.AUTHENTICATED, None)
    assert only(conn, b"a5 LOGOUT\r\n") == Command("a5", "LOGOUT")
    conn.logout()
    assert conn.state is State.LOGOUT
    assert events(conn, b"a6 NOOP\r\n") == []


@pytest.mark.parametrize(
    ("make", "line"),
    [
        (Connection, b"a FETCH 1 FLAGS\r\n"),
        (Connection, b"a SELECT INBOX\r\n"),
        (Connection, b"a IDLE\r\n"),
        (authed, b"a LOGIN joe pw\r\n"),
        (authed, b"a AUTHENTICATE PLAIN\r\n"),
        (authed, b"a UID STORE 1 +FLAGS (\\Seen)\r\n"),
        (authed, b"a EXPUNGE\r\n"),
        (selected, b"a STARTTLS\r\n"),
    ],
)
def test_wrong_state_is_bad(make: type[Connection], line: bytes) -> None:
    conn = make()
    before = conn.state
    event = only(conn, line)
    assert isinstance(event, BadCommand)
    assert bytes(conn.send(event.to_response())) == b"a BAD command not allowed in this state\r\n"
    assert conn.state is before
    assert only(conn, b"b NOOP\r\n") == Command("b", "NOOP")


def test_literal_split_across_receive_calls() -> None:
    conn = Connection()
    assert events(conn, b"a LOGIN {3}") == []
    event = only(conn, b"\r\n")
    assert isinstance(event, NeedContinuation)
    assert conn.send(event.continuation) == b"+ Ready\r\n"
    assert conn.awaiting_literal
    assert events(conn, b"jo") == []  # no second "+ Ready" for the same literal
    assert events(conn, b"e") == []
    assert only(conn, b" {2}\r\n") == NeedContinuation(Continuation("Ready"))
    assert events(conn, b"pw") == []
    assert only(conn, b"\r\n") == LoginCommand("a", "LOGIN", "joe", "pw")
    assert not conn.awaiting_literal


def test_literal_plus_needs_no_continuation() -> None:
    conn = authed()
    message = b"Subject: hi\r\n\r\nbody\r\n"
    assert events(conn, b"a APPEND Sent (\\Seen) {%d+}\r\n" % len(message)) == []
    assert events(conn, message[:5]) == []
    event = only(conn, message[5:] + b"\r\n")
    assert event == AppendCommand("a", "APPEND", "Sent", ("\\Seen",), None, message)


def test_byte_by_byte_equals_all_at_once() -> None:
    stream = (b"a1 LOGIN {3+}\r\njoe {2+}\r\npw\r\na2 NOOP\r\n"
              b"a3 FROB\r\na4 CAPABILITY\r\n")
    whole = events(Connection(), stream)
    conn = Connection()
    trickled: list[Event] = []
    for i in range(len(stream)):
        trickled += events(conn, stream[i : i + 1])
    assert trickled == whole
    assert [type(e).__name__ for e in whole] == ["LoginCommand", "Command", "BadCommand",
                                                 "Command"]


def test_synchronizing_literal_refused_before_upload() -> None:
    conn = Connection()  # APPEND is not allowed before login
    event = only(conn, b"a APPEND INBOX {100000}\r\n")
    assert isinstance(event, BadCommand) and event.reason == "command not allowed in this state"
    assert only(conn, b"b NOOP\r\n") == Command("b", "NOOP")


def test_literal_too_big() -> None:
    conn = Connection(max_literal=10)
    conn.authenticated("joe")
    event = only(conn, b"a APPEND INBOX {11}\r\n")
    assert isinstance(event, BadCommand) and not event.fatal
    assert conn.send(event.to_response()) == b"a BAD [TOOBIG] literal too big\r\n"
    assert only(conn, b"b NOOP\r\n") == Command("b", "NOOP")
    fatal = only(conn, b"c APPEND INBOX {11+}\r\n")
    assert isinstance(fatal, BadCommand) and fatal.fatal and conn.state is State.LOGOUT


def test_over_long_line_is_fatal() -> None:
    conn = Connection(max_line=50)
    event = only(conn, b"a LOGIN " + b"x" * 100)
    assert isinstance(event, BadCommand) and event.fatal
    assert conn.state is State.LOGOUT


def test_over_long_complete_line_is_skipped() -> None:
    conn = Connection(max_line=50)
    got = events(conn, b"a LOGIN " + b"x" * 100 + b" y\r\nb NOOP\r\n")
    assert isinstance(got[0], BadCommand) and got[0].reason == "line too long"
    assert got[1] == Command("b", "NOOP")


def test_pipelined_commands() -> None:
    conn = selected()
    got = events(conn, b"a1 NOOP\r\na2 FETCH 1 FLAGS\r\na3 SEARCH UNSEEN\r\na4 IDLE\r\nDONE\r\n")
    assert [getattr(e, "tag", None) for e in got] == ["a1", "a2", "a3", "a4", "a4"]
    assert got[-1] == IdleDone("a4", True)


def test_too_many_bad_commands() -> None:
    conn = Connection(bad_command_limit=3)
    for i in range(3):
        event = only(conn, b"x%d FROB\r\n" % i)
        assert isinstance(event, BadCommand)
        conn.send(event.to_response())
    event = conn.next_event()
    assert isinstance(event, TooManyBad)
    assert conn.send(event.to_response()) == b"* BYE too many bad commands\r\n"
    assert conn.state is State.LOGOUT
    assert conn.next_event() is NEED_DATA


def test_bad_counter_resets_on_success() -> None:
    conn = Connection(bad_command_limit=2)
    for _ in range(3):
        bad = only(conn, b"x FROB\r\n")
        assert isinstance(bad, BadCommand)
        conn.send(bad.to_response())
        ok = only(conn, b"y NOOP\r\n")
        conn.send(Tagged.ok(ok.tag, "NOOP completed"))  # type: ignore[union-attr]
    assert conn.state is State.NOT_AUTHENTICATED


def test_idle_and_done() -> None:
    conn = authed()
    assert only(conn, b"i1 IDLE\r\n") == Command("i1", "IDLE")
    assert conn.idling
    assert events(conn, b"DO") == []
    event = only(conn, b"NE\r\n")
    assert event == IdleDone("i1", True) and not conn.idling
    assert conn.send(event.to_response()) == b"i1 OK IDLE terminated\r\n"


def test_idle_ended_by_something_else() -> None:
    conn = selected()
    only(conn, b"i1 IDLE\r\n")
    event = only(conn, b"i2 NOOP\r\n")
    assert event == IdleDone("i1", False)
    assert conn.send(event.to_response()) == b"i1 BAD expected DONE\r\n"


def test_authenticate_plain_initial_response() -> None:
    conn = Connection()
    event = only(conn, b"a AUTHENTICATE PLAIN " + b64(b"\0joe\0s3cret") + b"\r\n")
    assert event == SaslResponse("a", "PLAIN", "", "joe", "s3cret")
    assert "s3cret" not in repr(event)
    conn.authenticated("joe")
    assert conn.state is State.AUTHENTICATED


def test_authenticate_plain_with_continuation() -> None:
    conn = Connection()
    event = only(conn, b"a AUTHENTICATE PLAIN\r\n")
    assert isinstance(event, NeedContinuation) and conn.in_sasl
    assert conn.send(event.continuation) == b"+ \r\n"
    assert events(conn, b64(b"admin\0joe\0pw")[:4]) == []
    event = only(conn, b64(b"admin\0joe\0pw")[4:] + b"\r\n")
    assert event == SaslResponse("a", "PLAIN", "admin", "joe", "pw")
    assert not conn.in_sasl


def test_authenticate_login_mechanism() -> None:
    conn = Connection()
    first = only(conn, b"a authenticate login\r\n")
    assert isinstance(first, NeedContinuation)
    assert conn.send(first.continuation) == b"+ VXNlcm5hbWU6\r\n"  # "Username:"
    second = only(conn, b64(b"joe") + b"\r\n")
    assert isinstance(second, NeedContinuation)
    assert conn.send(second.continuation) == b"+ UGFzc3dvcmQ6\r\n"  # "Password:"
    assert only(conn, b64(b"pw") + b"\r\n") == SaslResponse("a", "LOGIN", "", "joe", "pw")


def test_authenticate_login_with_initial_response() -> None:
    conn = Connection()
    event = only(conn, b"a AUTHENTICATE LOGIN " + b64(b"joe") + b"\r\n")
    assert event == NeedContinuation(Continuation("UGFzc3dvcmQ6"))
    assert only(conn, b64(b"pw") + b"\r\n") == SaslResponse("a", "LOGIN", "", "joe", "pw")


def test_sasl_cancel() -> None:
    conn = Connection()
    only(conn, b"a AUTHENTICATE PLAIN\r\n")
    event = only(conn, b"*\r\n")
    assert isinstance(event, BadCommand) and event.tag == "a"
    assert conn.send(event.to_response()) == b"a BAD AUTHENTICATE cancelled\r\n"
    assert not conn.in_sasl
    assert only(conn, b"b NOOP\r\n") == Command("b", "NOOP")


def test_sasl_garbage_and_malformed_plain() -> None:
    conn = Connection()
    only(conn, b"a AUTHENTICATE PLAIN\r\n")
    event = only(conn, b"b NOOP\r\n")  # not base64: the exchange fails with a's tag
    assert isinstance(event, BadCommand) and event.tag == "a" and not conn.in_sasl
    malformed = only(conn, b"c AUTHENTICATE PLAIN " + b64(b"no-nuls") + b"\r\n")
    assert isinstance(malformed, BadCommand) and malformed.tag == "c"


def test_unsupported_mechanism_goes_to_command_layer() -> None:
    conn = Connection()
    event = only(conn, b"a AUTHENTICATE CRAM-MD5\r\n")
    assert event == AuthenticateCommand("a", "AUTHENTICATE", "CRAM-MD5")
    assert not conn.in_sasl


def test_transitions_guard_against_command_layer_bugs() -> None:
    conn = Connection()
    with pytest.raises(RuntimeError):
        conn.selected("INBOX")
    with pytest.raises(RuntimeError):
        conn.unselected()
    conn.authenticated("joe")
    with pytest.raises(RuntimeError):
        conn.authenticated("joe")
    conn.selected("INBOX")
    conn.selected("Sent")  # SELECT while selected switches mailbox
    assert conn.mailbox == "Sent"
