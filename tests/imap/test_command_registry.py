"""Every IMAP command has all its parts, and every advertised capability is backed.

The commands are declared once in ``parser.COMMAND_TABLE``; these tests pin
that each declaration is whole (parser, states, a bound handler), that an
unknown command is a BAD and not a crash, and that each capability the
server advertises does what it says on a real loopback connection.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
from collections.abc import Awaitable, Callable

import pytest

from mailcoach_server.imap import commands, message_commands
from mailcoach_server.imap.command import BadCommand
from mailcoach_server.imap.connection import (
    CAPABILITIES,
    COMMAND_STATES,
    NEED_DATA,
    Connection,
    State,
)
from mailcoach_server.imap.parser import COMMAND_TABLE, parse_command
from mailcoach_server.imap.registry import ANY_STATE, CommandSpec, CommandTable
from tests.support import make_config, serve_in_process

#: The arguments of one valid use of each declared command (after the name).
ARGUMENTS: dict[str, bytes] = {
    "CAPABILITY": b"", "NOOP": b"", "LOGOUT": b"", "ID": b' ("name" "test")',
    "STARTTLS": b"", "AUTHENTICATE": b" PLAIN", "LOGIN": b" joe secret",
    "SELECT": b" INBOX", "EXAMINE": b" INBOX", "CREATE": b" Work", "DELETE": b" Work",
    "RENAME": b" Work Play", "SUBSCRIBE": b" Work", "UNSUBSCRIBE": b" Work",
    "XRESTORE": b" Agents/swe1 7",
    "LIST": b' "" *', "LSUB": b' "" *', "STATUS": b" INBOX (MESSAGES UIDNEXT)",
    "APPEND": b" INBOX {2+}\r\nhi", "NAMESPACE": b"", "IDLE": b"", "ENABLE": b" UTF8=ACCEPT",
    "CHECK": b"", "CLOSE": b"", "EXPUNGE": b"", "SEARCH": b" ALL", "FETCH": b" 1:* (FLAGS)",
    "STORE": b" 1 +FLAGS (\\Seen)", "COPY": b" 1 Work", "MOVE": b" 1 Work", "UNSELECT": b"",
}
#: UID forms take a sequence set where the plain EXPUNGE takes nothing (RFC 4315).
UID_ARGUMENTS = {**ARGUMENTS, "EXPUNGE": b" 1:5"}

SPECS = list(COMMAND_TABLE)


def test_every_declared_command_has_example_arguments() -> None:
    assert set(ARGUMENTS) == {spec.name for spec in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_each_command_parses_to_itself(spec: CommandSpec) -> None:
    line = b"a1 " + spec.name.encode() + ARGUMENTS[spec.name] + b"\r\n"
    command, consumed = parse_command(line, max_literal=1024)
    assert (command.tag, command.name, consumed) == ("a1", spec.name, len(line))
    # the parser matches case-insensitively, as RFC 3501 §9 says of every atom
    command, _ = parse_command(line.replace(spec.name.encode(), spec.name.lower().encode(), 1),
                               max_literal=1024)
    assert command.name == spec.name


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_uid_forms_are_exactly_the_declared_ones(spec: CommandSpec) -> None:
    line = b"a1 UID " + spec.name.encode() + UID_ARGUMENTS[spec.name] + b"\r\n"
    result = parse_command(line, max_literal=1024)
    if spec.uid:
        command, _ = result
        assert (command.name, command.uid) == (spec.name, True)
    else:
        assert isinstance(result, BadCommand)
        assert result.reason == f"unknown UID command {spec.name}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_each_command_has_states_and_a_bound_handler(spec: CommandSpec) -> None:
    assert spec.states and spec.states <= ANY_STATE  # never legal after LOGOUT
    assert COMMAND_STATES[spec.name] == spec.states
    handler = commands.COMMANDS[spec.name]
    assert handler.__name__ == spec.handler and inspect.iscoroutinefunction(handler)
    # the handler is the module's own function, not a stand-in of the same name
    assert handler in (getattr(commands, spec.handler, None),
                       getattr(message_commands, spec.handler, None))


def test_the_layers_know_the_same_commands() -> None:
    names = {spec.name for spec in SPECS}
    assert set(COMMAND_STATES) == set(commands.COMMANDS) == names
    assert len(SPECS) == len(names)


def test_a_command_declared_twice_is_refused() -> None:
    spec = COMMAND_TABLE.get("NOOP")
    assert spec is not None
    with pytest.raises(ValueError, match="NOOP declared twice"):
        CommandTable([spec, spec])


@pytest.mark.parametrize("state", [State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED])
def test_each_command_is_refused_outside_its_states(state: State) -> None:
    for spec in SPECS:
        conn = Connection()
        if state is not State.NOT_AUTHENTICATED:
            conn.authenticated("joe")
        if state is State.SELECTED:
            conn.selected("INBOX")
        conn.receive_data(b"a1 " + spec.name.encode() + ARGUMENTS[spec.name] + b"\r\n")
        event = conn.next_event()
        if state in spec.states:
            assert not isinstance(event, BadCommand), spec.name
        else:
            assert isinstance(event, BadCommand), spec.name
            assert event.reason == "command not allowed in this state"


@pytest.mark.parametrize("line", [b"a1 FROB\r\n", b"a1 UID FROB 1\r\n", b"a1 uid\r\n",
                                  b"a1 X-CUSTOM arg {3}\r\n"])
def test_an_unknown_command_is_bad_and_the_connection_goes_on(line: bytes) -> None:
    conn = Connection()
    conn.receive_data(line + b"a2 NOOP\r\n")
    event = conn.next_event()
    assert isinstance(event, BadCommand) and event.tag == "a1"
    assert conn.send(event.to_response()).startswith(b"a1 BAD ")
    assert conn.next_event().name == "NOOP"
    assert conn.next_event() is NEED_DATA


# -- capabilities, on a real server -------------------------------------------------------


class Client:
    """A raw IMAP client on a loopback socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 password: str) -> None:
        self.reader, self.writer, self.password = reader, writer, password

    async def line(self) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), 30)
        assert line, "the server closed the connection"
        return line

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, data: bytes) -> list[bytes]:
        """Send ``data`` (tagged ``t``); every line up to and including the tagged answer."""
        await self.send(data)
        lines = [await self.line()]
        while not lines[-1].startswith(b"t "):
            lines.append(await self.line())
        return lines

    async def login(self) -> None:
        answer = await self.command(b't LOGIN user "%s"\r\n' % self.password.encode())
        assert answer[-1].startswith(b"t OK ")

    async def append(self, mailbox: bytes) -> list[bytes]:
        message = b"From: a@localdomain\r\nSubject: probe\r\n\r\nhello\r\n"
        return await self.command(b"t APPEND %s {%d+}\r\n%s\r\n" % (mailbox, len(message),
                                                                    message))


def _plain(password: str) -> bytes:
    return base64.b64encode(b"\0user\0" + password.encode())


async def _probe_imap4rev1(client: Client) -> None:
    answer = await client.command(b"t CAPABILITY\r\n")
    assert answer[0].startswith(b"* CAPABILITY IMAP4rev1 ") and answer[-1].startswith(b"t OK")


async def _probe_literal_plus(client: Client) -> None:
    # RFC 7888: the literal follows at once and no "+" continuation comes back
    password = client.password.encode()
    answer = await client.command(b"t LOGIN {4+}\r\nuser {%d+}\r\n%s\r\n"
                                  % (len(password), password))
    assert len(answer) == 1 and answer[0].startswith(b"t OK ")


async def _probe_sasl_ir(client: Client) -> None:
    answer = await client.command(b"t AUTHENTICATE PLAIN " + _plain(client.password) + b"\r\n")
    assert len(answer) == 1 and answer[0].startswith(b"t OK ")  # no "+" challenge


async def _probe_auth_plain(client: Client) -> None:
    await client.send(b"t AUTHENTICATE PLAIN\r\n")
    assert await client.line() == b"+ \r\n"
    answer = await client.command(_plain(client.password) + b"\r\n")
    assert answer[-1].startswith(b"t OK ")


async def _probe_auth_login(client: Client) -> None:
    await client.send(b"t AUTHENTICATE LOGIN\r\n")
    assert base64.b64decode((await client.line())[2:]) == b"Username:"
    await client.send(base64.b64encode(b"user") + b"\r\n")
    assert base64.b64decode((await client.line())[2:]) == b"Password:"
    answer = await client.command(base64.b64encode(client.password.encode()) + b"\r\n")
    assert answer[-1].startswith(b"t OK ")


async def _probe_idle(client: Client) -> None:
    await client.login()
    await client.command(b"t SELECT INBOX\r\n")
    await client.send(b"t IDLE\r\n")
    assert await client.line() == b"+ idling\r\n"
    assert await client.command(b"DONE\r\n") == [b"t OK IDLE terminated\r\n"]


async def _probe_uidplus(client: Client) -> None:
    await client.login()
    appended = await client.append(b"INBOX")
    assert b" [APPENDUID " in appended[-1]
    uid = appended[-1].split(b"]")[0].split()[-1]
    await client.command(b"t SELECT INBOX\r\n")
    await client.command(b"t UID STORE %s +FLAGS.SILENT (\\Deleted)\r\n" % uid)
    answer = await client.command(b"t UID EXPUNGE %s\r\n" % uid)
    assert answer[0] == b"* 1 EXPUNGE\r\n" and answer[-1].startswith(b"t OK")


async def _probe_namespace(client: Client) -> None:
    await client.login()
    answer = await client.command(b"t NAMESPACE\r\n")
    assert answer[0].startswith(b"* NAMESPACE ") and answer[-1].startswith(b"t OK")


async def _probe_id(client: Client) -> None:
    answer = await client.command(b't ID ("name" "probe")\r\n')
    assert answer[0].startswith(b'* ID ("name" "mailcoach"') and answer[-1].startswith(b"t OK")


async def _probe_special_use(client: Client) -> None:
    await client.login()
    answer = await client.command(b't LIST (SPECIAL-USE) "" *\r\n')
    assert answer[-1].startswith(b"t OK")
    assert any(b"\\Sent" in line for line in answer[:-1])  # RFC 6154


async def _probe_move(client: Client) -> None:
    await client.login()
    await client.command(b"t CREATE Kept\r\n")
    await client.append(b"INBOX")
    await client.command(b"t SELECT INBOX\r\n")
    answer = await client.command(b"t MOVE 1 Kept\r\n")
    assert b"* 1 EXPUNGE\r\n" in answer and answer[-1].startswith(b"t OK")
    status = await client.command(b"t STATUS Kept (MESSAGES)\r\n")
    assert status[0] == b'* STATUS "Kept" (MESSAGES 1)\r\n'


async def _probe_unselect(client: Client) -> None:
    await client.login()
    await client.command(b"t SELECT INBOX\r\n")
    assert (await client.command(b"t UNSELECT\r\n"))[-1].startswith(b"t OK")
    assert (await client.command(b"t CHECK\r\n"))[-1].startswith(b"t BAD")  # nothing selected


async def _probe_enable(client: Client) -> None:
    await client.login()
    answer = await client.command(b"t ENABLE UTF8=ACCEPT\r\n")
    assert answer[0].startswith(b"* ENABLED") and answer[-1].startswith(b"t OK")


#: How each capability the server may advertise is shown to work.
PROBES: dict[str, Callable[[Client], Awaitable[None]]] = {
    "IMAP4rev1": _probe_imap4rev1, "LITERAL+": _probe_literal_plus, "SASL-IR": _probe_sasl_ir,
    "AUTH=PLAIN": _probe_auth_plain, "AUTH=LOGIN": _probe_auth_login, "IDLE": _probe_idle,
    "UIDPLUS": _probe_uidplus, "NAMESPACE": _probe_namespace, "ID": _probe_id,
    "SPECIAL-USE": _probe_special_use, "MOVE": _probe_move, "UNSELECT": _probe_unselect,
    "ENABLE": _probe_enable,
}


def test_every_capability_of_the_core_has_a_probe() -> None:
    assert set(CAPABILITIES) <= set(PROBES)


async def test_every_advertised_capability_has_a_probe(tmp_path) -> None:
    async with serve_in_process(make_config(tmp_path)) as server:
        client = Client(*await asyncio.open_connection(*server.imap_address),
                        server.credentials.password)
        greeting = await client.line()
        assert greeting.startswith(b"* OK [CAPABILITY ")
        before = greeting.split(b"[CAPABILITY ")[1].split(b"]")[0].decode().split()
        await client.login()
        after = (await client.command(b"t CAPABILITY\r\n"))[0].decode().split()[2:]
        client.writer.close()
    assert before and after
    assert set(before) | set(after) <= set(PROBES)


@pytest.mark.parametrize("capability", list(PROBES))
async def test_each_capability_does_what_it_says(tmp_path, capability: str) -> None:
    async with serve_in_process(make_config(tmp_path)) as server:
        client = Client(*await asyncio.open_connection(*server.imap_address),
                        server.credentials.password)
        assert (await client.line()).startswith(b"* OK ")
        await PROBES[capability](client)
        # and the connection is still good for more
        assert (await client.command(b"t NOOP\r\n"))[-1] == b"t OK NOOP completed\r\n"
        client.writer.close()


async def test_an_unknown_command_is_bad_on_the_wire(tmp_path) -> None:
    async with serve_in_process(make_config(tmp_path)) as server:
        client = Client(*await asyncio.open_connection(*server.imap_address),
                        server.credentials.password)
        assert (await client.line()).startswith(b"* OK ")
        assert await client.command(b"t FROB\r\n") == [b"t BAD unknown command FROB\r\n"]
        await client.login()
        assert await client.command(b"t UID FROB 1\r\n") == [
            b"t BAD unknown UID command FROB\r\n"]
        assert (await client.command(b"t NOOP\r\n"))[-1] == b"t OK NOOP completed\r\n"
        client.writer.close()
