"""The IMAP defects a compliance suite found (issue 10), one test each, on the wire.

Each test talks to a real server through a plain socket, so it sees every
line in the order the server sent it (imaplib would sort them into buckets).
"""

from __future__ import annotations

import re
import socket
import threading

import pytest

from mailcoach_server.imap.folders import MAX_FOLDER_DEPTH, MAX_FOLDER_NAME

ATOM_NAME = b"!#$&'+,-.0123456789:;<=>?@^_`|[}"


class Wire:
    """One IMAP connection, line by line (literals inlined)."""

    def __init__(self, threaded, *, login: bool = True) -> None:
        host, port = threaded.server.imap_address
        self.sock = socket.create_connection((host, port), timeout=20)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()
        self.tags = 0
        if login:
            password = threaded.password.encode()
            self.ok(b'LOGIN "user@localdomain" "' + password + b'"')

    def line(self) -> bytes:
        line = self.file.readline()
        assert line, "the server closed the connection"
        while (m := re.search(rb"\{(\d+)\}\r\n$", line)) is not None:  # a literal follows
            line = line[: m.start()] + self.file.read(int(m.group(1))) + self.file.readline()
        return line.rstrip(b"\r\n")

    def command(self, text: bytes) -> tuple[list[bytes], bytes]:
        """``(untagged lines, tagged line)``."""
        self.tags += 1
        tag = b"c%d" % self.tags
        self.sock.sendall(tag + b" " + text + b"\r\n")
        lines = []
        while not (line := self.line()).startswith(tag + b" "):
            lines.append(line)
        return lines, line[len(tag) + 1 :]

    def ok(self, text: bytes) -> list[bytes]:
        lines, tagged = self.command(text)
        assert tagged.startswith(b"OK"), (text, tagged)
        return lines

    def append(self, mailbox: bytes, message: bytes, flags: bytes = b"") -> None:
        flags = b"(" + flags + b") " if flags else b""
        self.ok(b"APPEND " + mailbox + b" " + flags + b"{%d+}\r\n" % len(message) + message)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def wires(threaded):
    opened: list[Wire] = []

    def open_wire(**kwargs) -> Wire:
        wire = Wire(threaded, **kwargs)
        opened.append(wire)
        return wire

    yield open_wire
    for wire in opened:
        wire.close()


def mail(subject: str, **headers: str) -> bytes:
    lines = [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join([*lines, f"Subject: {subject}"]) + "\r\n\r\nbody\r\n").encode()


def test_logout_says_nothing_after_bye(wires):
    a, b = wires(), wires()
    a.ok(b"SELECT INBOX")
    b.append(b"INBOX", mail("news for a"))  # a now has an EXISTS pending
    lines, tagged = a.command(b"LOGOUT")
    assert lines == [b"* BYE mailcoach IMAP logging out"]
    assert tagged == b"OK LOGOUT completed"


def test_a_new_keyword_is_in_flags_before_any_fetch_shows_it(wires):
    a, b = wires(), wires()
    b.append(b"INBOX", mail("one"))
    a.ok(b"SELECT INBOX")
    b.ok(b"SELECT INBOX")
    b.ok(b"STORE 1 +FLAGS ($Fresh)")
    lines = a.ok(b"NOOP")
    flags = next(i for i, line in enumerate(lines) if line.startswith(b"* FLAGS "))
    fetch = next(i for i, line in enumerate(lines) if b" FETCH " in line)
    assert flags < fetch and b"$Fresh" in lines[flags] and b"$Fresh" in lines[fetch]
    lines = a.ok(b"STORE 1 +FLAGS ($Other)")  # the session's own new keyword, too
    assert [line.split(b" ", 2)[1] for line in lines[:2]] == [b"FLAGS", b"OK"]
    assert b"$Other" in lines[0] and b"$Other" in lines[2]


def test_recent_goes_to_the_first_session_and_is_counted(wires):
    a, b, c = wires(), wires(), wires()
    c.append(b"INBOX", mail("r1"))
    c.append(b"INBOX", mail("r2"), b"\\Seen")
    assert c.ok(b"STATUS INBOX (RECENT)") == [b'* STATUS "INBOX" (RECENT 2)']
    assert b"* 2 RECENT" in b.ok(b"EXAMINE INBOX")  # EXAMINE sees them, claims nothing
    lines = a.ok(b"SELECT INBOX")
    assert b"* 2 RECENT" in lines
    assert a.ok(b"FETCH 1:2 (FLAGS)") == [
        b"* 1 FETCH (FLAGS (\\Recent))", b"* 2 FETCH (FLAGS (\\Seen \\Recent))"]
    assert a.ok(b"SEARCH RECENT") == [b"* SEARCH 1 2"]
    assert a.ok(b"SEARCH NEW") == [b"* SEARCH 1"]
    assert a.ok(b"SEARCH OLD") == [b"* SEARCH"]
    assert c.ok(b"STATUS INBOX (RECENT)") == [b'* STATUS "INBOX" (RECENT 0)']
    assert b"* 0 RECENT" in b.ok(b"SELECT INBOX")  # a had them first
    assert b.ok(b"FETCH 1 (FLAGS)") == [b"* 1 FETCH (FLAGS ())"]
    c.append(b"INBOX", mail("r3"))
    lines = a.ok(b"NOOP")  # new mail: EXISTS and RECENT together, \Recent for a alone
    assert lines == [b"* 3 EXISTS", b"* 3 RECENT"]
    assert b.ok(b"NOOP") == [b"* 3 EXISTS", b"* 0 RECENT"]
    assert b.ok(b"FETCH 3 (FLAGS)") == [b"* 3 FETCH (FLAGS ())"]
    a.ok(b"STORE 3 -FLAGS (\\Recent)")  # a session cannot drop it (RFC 3501 §2.3.2)
    assert a.ok(b"FETCH 3 (FLAGS)") == [b"* 3 FETCH (FLAGS (\\Recent))"]


def test_envelope_keeps_rfc5322_groups(wires):
    a = wires()
    a.append(b"INBOX", mail("groups", From="a@b", To='Team: x@y, "C D" <c@d>;, e@f',
                            Cc="undisclosed-recipients:;"))
    a.ok(b"SELECT INBOX")
    (line,) = a.ok(b"FETCH 1 (ENVELOPE)")
    assert b' ((NIL NIL "Team" NIL) (NIL NIL "x" "y") ("C D" NIL "c" "d") (NIL NIL NIL NIL)' \
           b' (NIL NIL "e" "f")) ((NIL NIL "undisclosed-recipients" NIL) (NIL NIL NIL NIL))' \
        in line


def test_move_into_the_selected_mailbox_is_ok_with_copyuid(wires):
    a = wires()
    a.append(b"INBOX", mail("m1"))
    a.append(b"INBOX", mail("m2"), b"\\Flagged")
    status = a.ok(b"STATUS INBOX (UIDVALIDITY)")[0]
    validity = re.search(rb"UIDVALIDITY (\d+)", status).group(1)
    a.ok(b"SELECT INBOX")
    lines, tagged = a.command(b"UID MOVE 2 INBOX")
    assert tagged.startswith(b"OK"), tagged
    assert lines[0] == b"* OK [COPYUID " + validity + b" 2 3] moved"
    assert lines[1:] == [b"* 2 EXPUNGE", b"* 2 EXISTS", b"* 2 RECENT"]  # 1 and the copy
    assert a.ok(b"UID FETCH 1:* (FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Recent))", b"* 2 FETCH (UID 3 FLAGS (\\Flagged \\Recent))"]


def test_a_legal_atom_that_is_not_modified_utf7_names_no_mailbox(wires):
    a = wires()
    lines, tagged = a.command(b"SELECT " + ATOM_NAME)
    assert tagged.startswith(b"NO [NONEXISTENT]"), tagged
    assert a.command(b"EXAMINE " + ATOM_NAME)[1].startswith(b"NO [NONEXISTENT]")
    assert a.command(b"STATUS " + ATOM_NAME + b" (MESSAGES)")[1].startswith(b"NO ")
    tagged = a.command(b"CREATE " + ATOM_NAME)[1]
    assert tagged.startswith(b"NO [CANNOT]") and b"modified UTF-7" in tagged
    assert a.command(b"SELECT R&-D")[1].startswith(b"NO [NONEXISTENT]")  # valid: "R&D"


def test_lsub_gives_the_noselect_parent_of_a_subscribed_child(wires):
    a = wires()
    a.ok(b"CREATE foo/bar")
    a.ok(b"SUBSCRIBE foo/bar")
    a.ok(b"UNSUBSCRIBE foo")
    assert a.ok(b'LSUB "" "nothing"') == []
    assert a.ok(b'LSUB "" "foo"') == [b'* LSUB (\\Noselect) "/" "foo"']
    assert a.ok(b'LSUB "" "f%"') == [b'* LSUB (\\Noselect) "/" "foo"']
    assert a.ok(b'LSUB "" "foo/%"') == [b'* LSUB () "/" "foo/bar"']
    everything = a.ok(b'LSUB "" "*"')
    assert b'* LSUB () "/" "foo/bar"' in everything
    assert not any(line.endswith(b' "foo"') for line in everything)  # * reaches the child
    assert not any(b"Children" in line for line in everything)


def test_search_from_sees_the_address_behind_comments(wires):
    a = wires()
    a.append(b"INBOX", mail("commented", From="<a (comment)@ (comment) b>"))
    a.append(b"INBOX", mail("plain", From="z@b"))
    a.ok(b"SELECT INBOX")
    assert a.ok(b"SEARCH FROM a@b") == [b"* SEARCH 1"]
    assert a.ok(b"SEARCH FROM z@b") == [b"* SEARCH 2"]


def test_concurrent_stores_on_one_message_compose(wires):
    a, b = wires(), wires()
    a.append(b"INBOX", mail("contested"))
    a.ok(b"SELECT INBOX")
    b.ok(b"SELECT INBOX")
    for _ in range(30):  # bounded: each round races the two changes
        a.ok(b"STORE 1 FLAGS.SILENT (\\Seen)")
        barrier = threading.Barrier(2)
        results: dict[str, bytes] = {}

        def run(name: str, wire: Wire, text: bytes, barrier: threading.Barrier,
                results: dict[str, bytes]) -> None:
            barrier.wait(10)
            results[name] = wire.command(text)[1]

        threads = [threading.Thread(target=run, args=(name, wire, text, barrier, results))
                   for name, wire, text in (("a", a, b"STORE 1 +FLAGS (\\Answered)"),
                                            ("b", b, b"STORE 1 -FLAGS (\\Seen)"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert all(r.startswith(b"OK") for r in results.values()), results
        lines = a.ok(b"FETCH 1 (FLAGS)")  # the last word on message 1 is what a knows
        assert lines[-1].endswith(b"FLAGS (\\Answered \\Recent))"), lines
        b.ok(b"NOOP")


def test_folder_depth_and_name_length_are_limited(wires):
    a = wires()
    deepest = b"/".join(b"d%d" % n for n in range(MAX_FOLDER_DEPTH))
    a.ok(b"CREATE " + deepest)
    tagged = a.command(b"CREATE " + deepest + b"/more")[1]
    assert tagged.startswith(b"NO [LIMIT]"), tagged
    tagged = a.command(b"CREATE " + b"/".join([b"x"] * 3000))[1]  # the 3,000 levels
    assert tagged.startswith(b"NO [LIMIT]"), tagged
    tagged = a.command(b"CREATE " + b"n" * (MAX_FOLDER_NAME + 1))[1]
    assert tagged.startswith(b"NO [LIMIT]"), tagged
    a.ok(b"CREATE " + b"n" * MAX_FOLDER_NAME)
    tagged = a.command(b"RENAME d0 " + b"r/" * MAX_FOLDER_DEPTH + b"r")[1]
    assert tagged.startswith(b"NO [LIMIT]"), tagged
    listed = a.ok(b'LIST "" "*"')
    assert not any(b'"x' in line for line in listed)  # the refused CREATE made nothing
    assert any(line.endswith(b'"' + deepest + b'"') for line in listed)
