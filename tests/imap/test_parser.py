"""parse_command: bytes in, command objects out; no event loop, no sockets."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from mailcoach_server.imap.parser import (
    AppendCommand,
    AuthenticateCommand,
    BadCommand,
    Command,
    CopyCommand,
    EnableCommand,
    ExpungeCommand,
    FetchAttr,
    FetchCommand,
    IdCommand,
    Incomplete,
    ListCommand,
    LoginCommand,
    MailboxCommand,
    NeedLiteral,
    RenameCommand,
    SearchCommand,
    SearchKey,
    Section,
    StatusCommand,
    StoreCommand,
    StoreMode,
    decode_mailbox_name,
    encode_mailbox_name,
    parse_command,
    parse_idle_done,
    parse_sasl_response,
)
from mailcoach_server.imap.sequence import SequenceSet


def parse(line: bytes, **kw: int) -> Command:
    result = parse_command(line, max_literal=kw.pop("max_literal", 1000), **kw)
    assert isinstance(result, tuple), result
    command, consumed = result
    assert consumed == len(line)
    return command


def bad(line: bytes, **kw: int) -> BadCommand:
    result = parse_command(line, max_literal=kw.pop("max_literal", 1000), **kw)
    assert isinstance(result, BadCommand), result
    return result


S = SequenceSet.parse


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a1 CAPABILITY\r\n", Command("a1", "CAPABILITY")),
        (b"a1 noop\r\n", Command("a1", "NOOP")),
        (b"A.2 LOGOUT\r\n", Command("A.2", "LOGOUT")),
        (b"t] STARTTLS\r\n", Command("t]", "STARTTLS")),
        (b"a CHECK\r\n", Command("a", "CHECK")),
        (b"a CLOSE\r\n", Command("a", "CLOSE")),
        (b"a IDLE\r\n", Command("a", "IDLE")),
        (b"a NAMESPACE\r\n", Command("a", "NAMESPACE")),
        (b"a UNSELECT\r\n", Command("a", "UNSELECT")),
        (b"a EXPUNGE\r\n", ExpungeCommand("a", "EXPUNGE")),
        (b"a UID EXPUNGE 3:5,9\r\n", ExpungeCommand("a", "EXPUNGE", S("3:5,9"), True)),
        (b"a LOGIN joe secret\r\n", LoginCommand("a", "LOGIN", "joe", "secret")),
        (b'a LOGIN "j o\\"e" "a\\\\b"\r\n', LoginCommand("a", "LOGIN", 'j o"e', "a\\b")),
        (b"a LOGIN {3}\r\njoe {2}\r\npw\r\n", LoginCommand("a", "LOGIN", "joe", "pw")),
        (b"a LOGIN {3+}\r\njoe pw\r\n", LoginCommand("a", "LOGIN", "joe", "pw")),
        (b"a SELECT inbox\r\n", MailboxCommand("a", "SELECT", "INBOX")),
        (b'a EXAMINE "Agents/swe1@localdomain"\r\n',
         MailboxCommand("a", "EXAMINE", "Agents/swe1@localdomain")),
        (b"a CREATE Entw&APw-rfe\r\n", MailboxCommand("a", "CREATE", "Entwürfe")),
        (b"a DELETE R&-D\r\n", MailboxCommand("a", "DELETE", "R&D")),
        (b"a SUBSCRIBE Sent\r\n", MailboxCommand("a", "SUBSCRIBE", "Sent")),
        (b"a UNSUBSCRIBE Sent\r\n", MailboxCommand("a", "UNSUBSCRIBE", "Sent")),
        (b"a RENAME old new\r\n", RenameCommand("a", "RENAME", "old", "new")),
        (b'a LIST "" *\r\n', ListCommand("a", "LIST", "", ("*",))),
        (b"a LIST Agents/ %\r\n", ListCommand("a", "LIST", "Agents/", ("%",))),
        (b'a LSUB "" "*"\r\n', ListCommand("a", "LSUB", "", ("*",))),
        (b'a LIST (SPECIAL-USE) "" ("*" INBOX) RETURN (children)\r\n',
         ListCommand("a", "LIST", "", ("*", "INBOX"), ("SPECIAL-USE",), ("CHILDREN",))),
        (b"a STATUS INBOX (MESSAGES uidnext UNSEEN)\r\n",
         StatusCommand("a", "STATUS", "INBOX", ("MESSAGES", "UIDNEXT", "UNSEEN"))),
        (b"a COPY 1:3 Trash\r\n", CopyCommand("a", "COPY", S("1:3"), "Trash")),
        (b"a UID MOVE 4,7:* Archive\r\n", CopyCommand("a", "MOVE", S("4,7:*"), "Archive", True)),
        (b"a MOVE 2 Archive\r\n", CopyCommand("a", "MOVE", S("2"), "Archive")),
        (b"a ID NIL\r\n", IdCommand("a", "ID", None)),
        (b'a ID ("name" "mbsync" "version" NIL)\r\n',
         IdCommand("a", "ID", (("name", "mbsync"), ("version", None)))),
        (b"a ENABLE UTF8=ACCEPT condstore\r\n",
         EnableCommand("a", "ENABLE", ("UTF8=ACCEPT", "CONDSTORE"))),
        (b"a AUTHENTICATE plain\r\n", AuthenticateCommand("a", "AUTHENTICATE", "PLAIN")),
        (b"a AUTHENTICATE PLAIN AGpvZQBwdw==\r\n",
         AuthenticateCommand("a", "AUTHENTICATE", "PLAIN", b"\0joe\0pw")),
        (b"a AUTHENTICATE PLAIN =\r\n", AuthenticateCommand("a", "AUTHENTICATE", "PLAIN", b"")),
        (b"a LOGIN joe pw\n", LoginCommand("a", "LOGIN", "joe", "pw")),  # bare LF tolerated
    ],
    ids=lambda v: v.decode("ascii", "replace")[:40] if isinstance(v, bytes) else "",
)
def test_commands(line: bytes, expected: Command) -> None:
    assert parse(line) == expected


def test_login_repr_hides_password() -> None:
    assert "secret" not in repr(parse(b"a LOGIN joe secret\r\n"))


@pytest.mark.parametrize(
    ("line", "flags", "when"),
    [
        (b"a APPEND Sent {5}\r\nhello\r\n", (), None),
        (b"a APPEND Sent (\\seen $Junk) {5}\r\nhello\r\n", ("\\Seen", "$Junk"), None),
        (b'a APPEND Sent () " 7-Jul-1996 02:44:25 -0700" {5+}\r\nhello\r\n', (),
         datetime(1996, 7, 7, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))),
        (b'a APPEND Sent "17-jul-1996 02:44:25 +0130" {5}\r\nhello\r\n', (),
         datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=1, minutes=30)))),
    ],
)
def test_append(line: bytes, flags: tuple[str, ...], when: datetime | None) -> None:
    assert parse(line) == AppendCommand("a", "APPEND", "Sent", flags, when, b"hello")


def test_append_literal_with_crlf_inside() -> None:
    message = b"Subject: x\r\n\r\nbody {3}\r\n"
    line = b"a APPEND INBOX {%d}\r\n" % len(message) + message + b"\r\n"
    command = parse(line)
    assert isinstance(command, AppendCommand) and command.message == message


def test_fetch_macros_and_attributes() -> None:
    fast = (FetchAttr("FLAGS"), FetchAttr("INTERNALDATE"), FetchAttr("RFC822.SIZE"))
    assert parse(b"a FETCH 1 FAST\r\n") == FetchCommand("a", "FETCH", S("1"), fast)
    assert parse(b"a FETCH 1 all\r\n").attributes == (*fast, FetchAttr("ENVELOPE"))
    assert parse(b"a FETCH 1 FULL\r\n").attributes[-1] == FetchAttr("BODY")
    assert parse(b"a FETCH 1:* flags\r\n").attributes == (FetchAttr("FLAGS"),)
    simple = b"UID FLAGS INTERNALDATE RFC822 RFC822.SIZE RFC822.HEADER RFC822.TEXT ENVELOPE"
    command = parse(b"a UID FETCH 1:* (" + simple + b" BODY BODYSTRUCTURE)\r\n")
    assert isinstance(command, FetchCommand) and command.uid
    assert [a.name for a in command.attributes] == [*simple.decode().split(), "BODY",
                                                    "BODYSTRUCTURE"]


@pytest.mark.parametrize(
    ("item", "attr", "name"),
    [
        (b"BODY[]", FetchAttr("BODY", Section()), b"BODY[]"),
        (b"BODY.PEEK[]", FetchAttr("BODY", Section(), peek=True), b"BODY[]"),
        (b"body[1.2.3]", FetchAttr("BODY", Section((1, 2, 3))), b"BODY[1.2.3]"),
        (b"BODY[HEADER]", FetchAttr("BODY", Section((), "HEADER")), b"BODY[HEADER]"),
        (b"BODY[2.text]", FetchAttr("BODY", Section((2,), "TEXT")), b"BODY[2.TEXT]"),
        (b"BODY[1.MIME]", FetchAttr("BODY", Section((1,), "MIME")), b"BODY[1.MIME]"),
        (b"BODY.PEEK[HEADER.FIELDS (Subject FROM)]",
         FetchAttr("BODY", Section((), "HEADER.FIELDS", ("Subject", "FROM")), peek=True),
         b"BODY[HEADER.FIELDS (Subject FROM)]"),
        (b'BODY[3.HEADER.FIELDS.NOT ("X-A" x-b)]',
         FetchAttr("BODY", Section((3,), "HEADER.FIELDS.NOT", ("X-A", "x-b"))),
         b"BODY[3.HEADER.FIELDS.NOT (X-A x-b)]"),
        (b"BODY[]<0.2048>", FetchAttr("BODY", Section(), partial=(0, 2048)), b"BODY[]<0>"),
        (b"BODY.PEEK[1]<100.5>", FetchAttr("BODY", Section((1,)), True, (100, 5)),
         b"BODY[1]<100>"),
    ],
)
def test_fetch_sections(item: bytes, attr: FetchAttr, name: bytes) -> None:
    command = parse(b"a FETCH 1 (UID " + item + b")\r\n")
    assert isinstance(command, FetchCommand)
    assert command.attributes[1] == attr
    assert attr.response_name == name


def test_sets_seen() -> None:
    command = parse(b"a FETCH 1 (BODY.PEEK[] RFC822.HEADER BODY[TEXT] RFC822 FLAGS)\r\n")
    assert [a.sets_seen for a in command.attributes] == [False, False, True, True, False]


@pytest.mark.parametrize(
    ("args", "mode", "silent", "flags"),
    [
        (b"FLAGS (\\Seen)", StoreMode.REPLACE, False, ("\\Seen",)),
        (b"+FLAGS.SILENT (\\Deleted $label1)", StoreMode.ADD, True, ("\\Deleted", "$label1")),
        (b"-flags \\answered \\FLAGGED", StoreMode.REMOVE, False, ("\\Answered", "\\Flagged")),
        (b"FLAGS ()", StoreMode.REPLACE, False, ()),
    ],
)
def test_store(args: bytes, mode: StoreMode, silent: bool, flags: tuple[str, ...]) -> None:
    assert parse(b"a UID STORE 1:3 " + args + b"\r\n") == StoreCommand(
        "a", "STORE", S("1:3"), mode, silent, flags, True
    )


def key(name: str, arg: object = None, *children: SearchKey) -> SearchKey:
    return SearchKey(name, arg, tuple(children))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (b"ALL", key("ALL")),
        (b"unseen", key("UNSEEN")),
        (b"1:5,*", key("SEQUENCE", S("1:5,*"))),
        (b"UID 2:*", key("UID", S("2:*"))),
        (b"FROM joe SUBJECT \"hello world\"",
         key("AND", None, key("FROM", "joe"), key("SUBJECT", "hello world"))),
        (b"BEFORE 1-Feb-1994", key("BEFORE", date(1994, 2, 1))),
        (b'SENTSINCE "21-jan-2024"', key("SENTSINCE", date(2024, 1, 21))),
        (b"LARGER 1024", key("LARGER", 1024)),
        (b"SMALLER 10", key("SMALLER", 10)),
        (b"KEYWORD $Junk", key("KEYWORD", "$Junk")),
        (b"HEADER Message-ID <a@b>", key("HEADER", ("Message-ID", "<a@b>"))),
        (b'HEADER X-Thing ""', key("HEADER", ("X-Thing", ""))),
        (b"NOT DELETED", key("NOT", None, key("DELETED"))),
        (b"OR SEEN FLAGGED", key("OR", None, key("SEEN"), key("FLAGGED"))),
        (b"OR (FROM a TO b) NOT (CC c)",
         key("OR", None, key("AND", None, key("FROM", "a"), key("TO", "b")),
             key("NOT", None, key("CC", "c")))),
        (b"((((ALL))))", key("ALL")),
        (b"TEXT {4}\r\ncaf\xc3 BODY x",
         key("AND", None, key("TEXT", "caf\ufffd"), key("BODY", "x"))),
    ],
)
def test_search(args: bytes, expected: SearchKey) -> None:
    command = parse(b"a SEARCH " + args + b"\r\n")
    assert isinstance(command, SearchCommand)
    assert command.key == expected and command.charset is None


def test_search_charset_and_uid() -> None:
    command = parse(b"a UID SEARCH CHARSET ISO-8859-1 SUBJECT {4}\r\ncaf\xe9\r\n")
    assert command == SearchCommand("a", "SEARCH", key("SUBJECT", "café"), "ISO-8859-1", True)
    unknown = parse(b"a SEARCH CHARSET X-UNKNOWN BODY abc\r\n")
    assert isinstance(unknown, SearchCommand) and unknown.charset == "X-UNKNOWN"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\r\n", "tag"),
        (b"a\r\n", "space"),
        (b"a FROB\r\n", "unknown command"),
        (b"a UID FROB 1\r\n", "unknown UID command"),
        (b"a LOGIN joe\r\n", "space"),
        (b"a NOOP extra\r\n", "end of command"),
        (b"a FETCH 0 FLAGS\r\n", "sequence number"),
        (b"a FETCH 1 (FLAGS\r\n", "expected )"),
        (b"a FETCH 1 BODY.PEEK\r\n", "section"),
        (b"a FETCH 1 BODY[0]\r\n", "section"),
        (b"a FETCH 1 BODY[MIME]\r\n", "section"),
        (b"a FETCH 1 BODY[]<1.0>\r\n", "partial"),
        (b"a FETCH 1 FROBS\r\n", "fetch attribute"),
        (b"a SEARCH FROB\r\n", "search key"),
        (b"a SEARCH BEFORE 31-Feb-2020\r\n", "date"),
        (b"a SEARCH " + b"(" * 100 + b"ALL" + b")" * 100 + b"\r\n", "nested"),
        (b"a SEARCH " + b"NOT " * 100 + b"ALL\r\n", "nested"),
        (b"a STATUS INBOX (BOGUS)\r\n", "STATUS item"),
        (b"a SELECT caf\xe9\r\n", "not UTF-8"),
        (b'a LOGIN "unterminated\r\n', "quoted"),
        (b"a STORE 1 FLAGS (\\Seen\r\n", "expected )"),
        (b"a STORE 1 XFLAGS (\\Seen)\r\n", "FLAGS"),
        (b"a APPEND INBOX (\\Seen) hello\r\n", "literal"),
        (b"a AUTHENTICATE PLAIN !!!\r\n", "base64"),
        (b"a ENABLE\r\n", "capability"),
        (b"a LOGIN {3}x\r\n", "literal"),
    ],
    ids=lambda v: v.decode("ascii", "replace")[:30] if isinstance(v, bytes) else v,
)
def test_bad_syntax(line: bytes, reason: str) -> None:
    result = bad(line)
    assert reason.lower() in result.reason.lower()
    assert result.consumed == len(line) and not result.fatal
    assert result.tag == ("*" if line.startswith(b"\r") else "a")


def test_bad_command_response() -> None:
    assert bytes(bad(b"x1 FROB\r\n").to_response()) == b"x1 BAD unknown command FROB\r\n"


def test_incomplete() -> None:
    partials = (b"", b"a", b"a NOOP", b"a NOOP\r", b"a LOGIN {3}\r\njoe", b"a LOGIN {3}\r\njoe pw")
    for partial in partials:
        assert isinstance(parse_command(partial, max_literal=100), (Incomplete, NeedLiteral))
    assert isinstance(parse_command(b"a NOOP", max_literal=100), Incomplete)


def test_need_literal() -> None:
    line = b"a APPEND INBOX {10}\r\n"
    assert parse_command(line + b"12345", max_literal=100) == NeedLiteral(
        10, True, len(line), "a", "APPEND"
    )
    plus = parse_command(b"a APPEND INBOX {10+}\r\n", max_literal=100)
    assert isinstance(plus, NeedLiteral) and not plus.synchronizing
    # The literal is there but the rest of the command is not: an incomplete line.
    assert isinstance(parse_command(line + b"1234567890", max_literal=100), Incomplete)


def test_uid_literal_names_sub_command() -> None:
    result = parse_command(b"a UID COPY 1 {5}\r\n", max_literal=100)
    assert isinstance(result, NeedLiteral) and result.command == "COPY"


def test_literal_too_big() -> None:
    sync = bad(b"a APPEND INBOX {101}\r\nb NOOP\r\n", max_literal=100)
    assert (sync.code, sync.fatal, sync.consumed) == ("TOOBIG", False, 22)
    plus = bad(b"a APPEND INBOX {101+}\r\nxxxx", max_literal=100)
    assert plus.fatal and plus.code == "TOOBIG"


def test_pipelined_commands() -> None:
    buf = b"a1 NOOP\r\na2 LOGIN {3+}\r\njoe pw\r\na3 SELECT INBOX\r\n"
    seen = []
    while buf:
        result = parse_command(buf, max_literal=100)
        assert isinstance(result, tuple)
        command, consumed = result
        seen.append(command.tag)
        buf = buf[consumed:]
    assert seen == ["a1", "a2", "a3"]


def test_bad_command_skips_its_literal_plus_data() -> None:
    buf = b"a1 FROB {5+}\r\nab\r\nd tail\r\na2 NOOP\r\n"
    result = bad(buf[: buf.index(b"a2")] + b"a2 NOOP\r\n")
    assert buf[result.consumed :] == b"a2 NOOP\r\n"
    # Until the literal's data is in, the bad command's end is unknown.
    assert isinstance(parse_command(b"a1 FROB {5+}\r\nab", max_literal=100), Incomplete)


def test_line_length_limit() -> None:
    long_line = b"a LOGIN " + b"x" * 200 + b" y\r\nb NOOP\r\n"
    result = bad(long_line, max_line=100)
    assert not result.fatal and long_line[result.consumed :] == b"b NOOP\r\n"
    assert result.tag == "a"
    endless = bad(b"a LOGIN " + b"x" * 200, max_line=100)
    assert endless.fatal and endless.consumed == 208
    # A long literal is fine: only lines count.
    assert parse(b"a LOGIN {150}\r\n" + b"u" * 150 + b" pw\r\n", max_line=100)


def test_mailbox_names() -> None:
    assert encode_mailbox_name("Entwürfe") == "Entw&APw-rfe"
    assert encode_mailbox_name("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert decode_mailbox_name("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert decode_mailbox_name("R&-D") == "R&D"
    assert decode_mailbox_name("Café") == "Café"  # raw UTF-8 tolerated
    for broken in ("&", "&U,BTFw", "&!!-", "&AAAA-", "&AB/-"):
        with pytest.raises(ValueError):
            decode_mailbox_name(broken)


def test_idle_done() -> None:
    assert parse_idle_done(b"DONE\r\nnext") == (True, 6)
    assert parse_idle_done(b"done\n") == (True, 5)
    assert parse_idle_done(b"a NOOP\r\n") == (False, 8)
    assert isinstance(parse_idle_done(b"DON"), Incomplete)
    too_long = parse_idle_done(b"x" * 50, max_line=10)
    assert isinstance(too_long, BadCommand) and too_long.fatal


def test_sasl_response() -> None:
    assert parse_sasl_response(b"AGpvZQBwdw==\r\n") == (b"\0joe\0pw", 14)
    assert parse_sasl_response(b"*\r\n") == (None, 3)
    assert parse_sasl_response(b"\r\n") == (b"", 2)
    assert isinstance(parse_sasl_response(b"AGpv"), Incomplete)
    assert isinstance(parse_sasl_response(b"not base64!\r\n"), BadCommand)


@pytest.mark.parametrize("line, name", [
    (b"a SELECT &Jjo\r\n", "&Jjo"),
    (b"a CREATE \"!#$&'+,-.0123456789:;<=>?@^_`|[}\"\r\n", "!#$&'+,-.0123456789:;<=>?@^_`|[}"),
], ids=["unterminated shift", "every atom char"])
def test_a_name_that_is_not_modified_utf7_is_kept_as_sent(line, name):
    command, _ = parse_command(line, max_literal=1000)
    assert (command.mailbox, command.undecodable) == (name, True)
    valid, _ = parse_command(b"a SELECT R&-D\r\n", max_literal=1000)
    assert (valid.mailbox, valid.undecodable) == ("R&D", False)
