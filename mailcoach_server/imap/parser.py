"""Parse IMAP4rev1 client input: bytes in, command objects out (RFC 3501 §6, §9).

:func:`parse_command` reads the first command of a buffer that may hold
several (pipelining) and their literals, and returns one of:

* ``(command, consumed)`` - a complete :class:`~.command.Command`;
* :class:`~.command.NeedLiteral` - the CRLF after ``{N}`` is there but the
  N bytes are not: send ``+ Ready`` (only if ``synchronizing``), then
  parse the same buffer again once more bytes arrived;
* :class:`~.command.Incomplete` - no complete line yet;
* :class:`~.command.BadCommand` - answer ``tag BAD reason`` and drop
  ``consumed`` bytes.

It never raises on client input and never does I/O. :data:`COMMAND_TABLE`
declares every command once (name, legal states, parse function, handler
name; see :mod:`.registry`); :mod:`.connection` enforces the states.
Beyond RFC 3501 it reads UID EXPUNGE (RFC 4315), MOVE (RFC 6851), IDLE
(RFC 2177), NAMESPACE (RFC 2342), ID (RFC 2971), ENABLE (RFC 5161),
UNSELECT (RFC 3691), LITERAL+ (RFC 7888), SASL-IR (RFC 4959) and the
LIST-EXTENDED option lists (RFC 5258), and one command of mailcoach's own,
``XRESTORE`` (RFC 3501 §6.5.1 leaves ``X`` commands to servers). Not supported: MULTIAPPEND,
CATENATE, BINARY literals ``~{N}``, CONDSTORE modifiers, ESEARCH.
"""

from __future__ import annotations

import base64
import binascii
import re

from .command import (
    INCOMPLETE,
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
    RestoreCommand,
    SearchCommand,
    SearchKey,
    Section,
    StatusCommand,
    StoreCommand,
    StoreMode,
)
from .grammar import date_time, fetch_attributes, flag, flag_list, search_program, sequence_set
from .lexer import TAG, Cursor, Fault, NeedMore
from .registry import (
    ANY_STATE,
    AUTHENTICATED,
    NOT_AUTHENTICATED,
    SELECTED,
    CommandSpec,
    CommandTable,
)
from .utf7 import decode_mailbox_name, encode_mailbox_name

__all__ = [
    "COMMAND_TABLE", "DEFAULT_MAX_LINE", "ParseResult", "decode_mailbox_name",
    "encode_mailbox_name", "parse_command", "parse_idle_done", "parse_sasl_response",
    # the result types, re-exported from .command
    "AppendCommand", "AuthenticateCommand", "BadCommand", "Command", "CopyCommand",
    "EnableCommand", "ExpungeCommand", "FetchAttr", "FetchCommand", "IdCommand", "Incomplete",
    "ListCommand", "LoginCommand", "MailboxCommand", "NeedLiteral", "RenameCommand",
    "RestoreCommand", "SearchCommand", "SearchKey", "Section", "StatusCommand", "StoreCommand",
    "StoreMode",
]

DEFAULT_MAX_LINE = 64 * 1024

ParseResult = tuple[Command, int] | NeedLiteral | Incomplete | BadCommand

_STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"})
_STORE_ITEM = re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.IGNORECASE)
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


def parse_command(
    buf: bytes, *, max_literal: int, max_line: int = DEFAULT_MAX_LINE
) -> ParseResult:
    """Parse the first command in ``buf``; see the module docstring for the outcomes.

    Args:
        buf: what the connection has buffered, starting at a command.
        max_literal: the largest literal accepted (larger: BAD ``[TOOBIG]``).
        max_line: the longest line (between literals) accepted.
    """
    cur = Cursor(buf, max_literal=max_literal, max_line=max_line)
    try:
        cur.start()
        cur.tag = cur.tag_token()
        cur.sp()
        name = cur.atom("command name").upper()
        cur.command = name
        if name == "UID":  # a prefix, not a command: UID FETCH is FETCH with uid=True
            command = _uid(cur, cur.tag)
        else:
            spec = COMMAND_TABLE.get(name)
            if spec is None:
                raise Fault(f"unknown command {name[:40]}")
            command = spec.parse(cur, cur.tag, name, False)
        return command, cur.finish()
    except NeedMore as more:
        return more.literal or INCOMPLETE
    except Fault as fault:
        return _bad(cur, fault)
    except RecursionError:  # belt and braces: nesting is already bounded
        return BadCommand(cur.tag or "*", "command nested too deeply", len(buf), fatal=True)


def _bad(cur: Cursor, fault: Fault) -> BadCommand | Incomplete:
    tag = cur.tag
    if tag is None:
        m = TAG.match(cur.buf, 0, 256)
        tag = m.group(0).decode("ascii") if m and cur.buf[m.end() : m.end() + 1] == b" " else "*"
    if fault.fatal:
        return BadCommand(tag, fault.reason, len(cur.buf), True, fault.code)
    try:
        end = cur.command_end()
    except NeedMore:
        return INCOMPLETE
    except Fault as again:
        return BadCommand(tag, again.reason, len(cur.buf), True, again.code)
    return BadCommand(tag, fault.reason, end, False, fault.code)


def parse_idle_done(buf: bytes, *, max_line: int = DEFAULT_MAX_LINE) -> (
    tuple[bool, int] | Incomplete | BadCommand
):
    """The line that ends IDLE (RFC 2177): ``(True, consumed)`` for ``DONE``,
    ``(False, consumed)`` for any other line."""
    line = _line(buf, max_line)
    if not isinstance(line, tuple):
        return line
    text, consumed = line
    return text.strip().upper() == b"DONE", consumed


def parse_sasl_response(buf: bytes, *, max_line: int = DEFAULT_MAX_LINE) -> (
    tuple[bytes | None, int] | Incomplete | BadCommand
):
    """A client line during AUTHENTICATE (RFC 3501 §6.2.2): base64 → ``(data, consumed)``;
    ``*`` cancels → ``(None, consumed)``; anything else → BadCommand (tag ``*``)."""
    line = _line(buf, max_line)
    if not isinstance(line, tuple):
        return line
    text, consumed = line
    text = text.strip()
    if text == b"*":
        return None, consumed
    data = _b64decode(text)
    if data is None:
        return BadCommand("*", "invalid base64 in SASL response", consumed)
    return data, consumed


def _line(buf: bytes, max_line: int) -> tuple[bytes, int] | Incomplete | BadCommand:
    lf = buf.find(b"\n")
    if lf < 0:
        if len(buf) > max_line:
            return BadCommand("*", "line too long", len(buf), fatal=True)
        return INCOMPLETE
    if lf > max_line:
        return BadCommand("*", "line too long", lf + 1)
    return buf[:lf].rstrip(b"\r"), lf + 1


def _b64decode(data: bytes) -> bytes | None:
    if not _BASE64.fullmatch(data):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


# -- arguments ---------------------------------------------------------------------------


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _decoded_name(raw: bytes, *, pattern: bool = False) -> tuple[str, bool]:
    """``(name, decodable)``: a name that is not modified UTF-7 (``&'+,-``) is kept as
    sent, since it is still a legal astring: it names no mailbox, so the command
    gets NO, not BAD (as in Dovecot)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Fault("invalid mailbox name: not UTF-8") from None
    try:
        name, decodable = decode_mailbox_name(text), True
    except ValueError:
        name, decodable = text, False
    # RFC 3501 §5.1: INBOX is case-insensitive (patterns keep their case).
    return ("INBOX" if not pattern and name.upper() == "INBOX" else name), decodable


def _mailbox_name(raw: bytes, *, pattern: bool = False) -> str:
    return _decoded_name(raw, pattern=pattern)[0]


def _mailbox(cur: Cursor) -> str:
    return _mailbox_name(cur.astring())


def _atom_list(cur: Cursor) -> tuple[str, ...]:
    cur.expect(b"(")
    items: list[str] = []
    while not cur.accept(b")"):
        if items and not cur.accept(b" "):
            raise Fault("expected )")
        items.append(cur.atom().upper())
    return tuple(items)


# -- commands ----------------------------------------------------------------------------


def _no_args(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    return Command(tag, name)


def _login(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    user = _text(cur.astring())
    cur.sp()
    return LoginCommand(tag, name, user, _text(cur.astring()))


def _authenticate(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mechanism = cur.atom("mechanism").upper()
    initial: bytes | None = None
    if cur.accept(b" "):
        token = cur.atom("initial response").encode("ascii")
        initial = b"" if token == b"=" else _b64decode(token)
        if initial is None:
            raise Fault("invalid base64 in initial response")
    return AuthenticateCommand(tag, name, mechanism, initial)


def _one_mailbox(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mailbox, decodable = _decoded_name(cur.astring())
    return MailboxCommand(tag, name, mailbox, not decodable)


def _restore(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mailbox = _mailbox(cur)
    cur.sp()
    return RestoreCommand(tag, name, mailbox, cur.number())


def _rename(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    old = _mailbox(cur)
    cur.sp()
    new, decodable = _decoded_name(cur.astring())
    return RenameCommand(tag, name, old, new, not decodable)


def _list(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    selection: tuple[str, ...] = ()
    if name == "LIST" and cur.peek() == ord("("):
        selection = _atom_list(cur)
        cur.sp()
    reference = _mailbox_name(cur.astring(), pattern=True)
    cur.sp()
    if name == "LIST" and cur.accept(b"("):
        patterns = [_mailbox_name(cur.list_mailbox(), pattern=True)]
        while cur.accept(b" "):
            patterns.append(_mailbox_name(cur.list_mailbox(), pattern=True))
        cur.expect(b")")
    else:
        patterns = [_mailbox_name(cur.list_mailbox(), pattern=True)]
    return_options: tuple[str, ...] = ()
    if name == "LIST" and cur.accept(b" RETURN "):
        return_options = _atom_list(cur)
    return ListCommand(tag, name, reference, tuple(patterns), selection, return_options)


def _status(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mailbox = _mailbox(cur)
    cur.sp()
    items = _atom_list(cur)
    unknown = [i for i in items if i not in _STATUS_ITEMS]
    if unknown or not items:
        raise Fault(f"bad STATUS item {unknown[0][:20]}" if unknown else "no STATUS items")
    return StatusCommand(tag, name, mailbox, items)


def _append(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mailbox = _mailbox(cur)
    cur.sp()
    flags: tuple[str, ...] = ()
    if cur.peek() == ord("("):
        flags = flag_list(cur)
        cur.sp()
    when = None
    if cur.peek() == ord('"'):
        when = date_time(cur)
        cur.sp()
    if cur.peek() != ord("{"):
        raise Fault("expected message literal")
    return AppendCommand(tag, name, mailbox, flags, when, cur.literal())


def _search(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    charset = None
    if cur.accept(b"CHARSET "):
        charset = _text(cur.astring()).upper()
        cur.sp()
    return SearchCommand(tag, name, search_program(cur, charset), charset, uid)


def _fetch(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    numbers = sequence_set(cur)
    cur.sp()
    return FetchCommand(tag, name, numbers, fetch_attributes(cur), uid)


def _store(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    numbers = sequence_set(cur)
    cur.sp()
    item = cur.match(_STORE_ITEM, "FLAGS, +FLAGS or -FLAGS")
    m = _STORE_ITEM.fullmatch(item)
    assert m is not None
    mode = {b"": StoreMode.REPLACE, b"+": StoreMode.ADD, b"-": StoreMode.REMOVE}[m.group(1)]
    cur.sp()
    if cur.peek() == ord("("):
        flags = flag_list(cur)
    else:  # RFC 3501 also allows the flags without parentheses
        flags_: list[str] = [flag(cur)]
        while cur.accept(b" "):
            flags_.append(flag(cur))
        flags = tuple(flags_)
    return StoreCommand(tag, name, numbers, mode, m.group(2) is not None, flags, uid)


def _copy(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    numbers = sequence_set(cur)
    cur.sp()
    return CopyCommand(tag, name, numbers, _mailbox(cur), uid)


def _expunge(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    if not uid:
        return ExpungeCommand(tag, name)
    cur.sp()
    return ExpungeCommand(tag, name, sequence_set(cur), True)


def _uid(cur: Cursor, tag: str) -> Command:
    cur.sp()
    sub = cur.atom("UID command").upper()
    spec = COMMAND_TABLE.get_uid(sub)
    if spec is None:
        raise Fault(f"unknown UID command {sub[:40]}")
    cur.command = sub
    return spec.parse(cur, tag, sub, True)


def _id(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    if cur.nil():
        return IdCommand(tag, name, None)
    cur.expect(b"(")
    cur.accept(b" ")  # aioimaplib sends ( "name" "x" ): spaces inside the parentheses
    params: list[tuple[str, str | None]] = []
    while not cur.accept(b")"):
        if params:
            cur.sp()
            if cur.accept(b")"):
                break
        key = _text(cur.string())
        cur.sp()
        value = cur.nstring()
        params.append((key, None if value is None else _text(value)))
    return IdCommand(tag, name, tuple(params))


def _enable(cur: Cursor, tag: str, name: str, uid: bool) -> Command:
    capabilities: list[str] = []
    while cur.accept(b" "):
        capabilities.append(cur.atom("capability").upper())
    if not capabilities:
        raise Fault("ENABLE needs at least one capability")
    return EnableCommand(tag, name, tuple(capabilities))


#: Every IMAP command, declared once: name, legal states, parser, handler (``do_*``).
COMMAND_TABLE = CommandTable((
    # any state (RFC 3501 §6.1)
    CommandSpec("CAPABILITY", ANY_STATE, _no_args, "do_capability"),
    CommandSpec("NOOP", ANY_STATE, _no_args, "do_noop"),
    CommandSpec("LOGOUT", ANY_STATE, _no_args, "do_logout"),
    CommandSpec("ID", ANY_STATE, _id, "do_id"),  # RFC 2971
    # not authenticated (§6.2)
    CommandSpec("STARTTLS", NOT_AUTHENTICATED, _no_args, "do_starttls"),
    CommandSpec("AUTHENTICATE", NOT_AUTHENTICATED, _authenticate, "do_authenticate"),
    CommandSpec("LOGIN", NOT_AUTHENTICATED, _login, "do_login"),
    # authenticated (§6.3)
    CommandSpec("SELECT", AUTHENTICATED, _one_mailbox, "do_select"),
    CommandSpec("EXAMINE", AUTHENTICATED, _one_mailbox, "do_select"),
    CommandSpec("CREATE", AUTHENTICATED, _one_mailbox, "do_create"),
    CommandSpec("DELETE", AUTHENTICATED, _one_mailbox, "do_delete"),
    CommandSpec("RENAME", AUTHENTICATED, _rename, "do_rename"),
    CommandSpec("SUBSCRIBE", AUTHENTICATED, _one_mailbox, "do_subscribe"),
    CommandSpec("UNSUBSCRIBE", AUTHENTICATED, _one_mailbox, "do_subscribe"),
    CommandSpec("LIST", AUTHENTICATED, _list, "do_list"),
    CommandSpec("LSUB", AUTHENTICATED, _list, "do_list"),
    CommandSpec("STATUS", AUTHENTICATED, _status, "do_status"),
    CommandSpec("APPEND", AUTHENTICATED, _append, "do_append"),
    CommandSpec("NAMESPACE", AUTHENTICATED, _no_args, "do_namespace"),  # RFC 2342
    CommandSpec("IDLE", AUTHENTICATED, _no_args, "do_idle"),  # RFC 2177
    CommandSpec("ENABLE", AUTHENTICATED, _enable, "do_enable"),  # RFC 5161
    CommandSpec("XRESTORE", AUTHENTICATED, _restore, "do_xrestore"),  # mailcoach memory restore
    # selected (§6.4)
    CommandSpec("CHECK", SELECTED, _no_args, "do_noop"),
    CommandSpec("CLOSE", SELECTED, _no_args, "do_close"),
    CommandSpec("EXPUNGE", SELECTED, _expunge, "do_expunge", uid=True),  # UID: RFC 4315
    CommandSpec("SEARCH", SELECTED, _search, "do_search", uid=True),
    CommandSpec("FETCH", SELECTED, _fetch, "do_fetch", uid=True),
    CommandSpec("STORE", SELECTED, _store, "do_store", uid=True),
    CommandSpec("COPY", SELECTED, _copy, "do_copy", uid=True),
    CommandSpec("MOVE", SELECTED, _copy, "do_copy", uid=True),  # RFC 6851
    CommandSpec("UNSELECT", SELECTED, _no_args, "do_unselect"),  # RFC 3691
))
