"""What an IMAP command is made of: its name, the states it is legal in, its parser, its handler.

Each command is declared once, as a :class:`CommandSpec`, in the
:data:`~.parser.COMMAND_TABLE` next to the parse functions (as pymap's
command classes hold their name, states and parser together). The
connection derives its state table from it, the command layer binds
each ``handler`` name to its ``do_*`` coroutine at import time. So adding
a command is one line there plus the two functions it names, and a
name missing from a table is an import error, not a KeyError mid-session.

This module is pure: no asyncio, no store, no import of the parser (the
table lives with the parse functions so that nothing imports in a circle).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .command import Command
    from .lexer import Cursor

__all__ = [
    "ANY_STATE",
    "AUTHENTICATED",
    "NOT_AUTHENTICATED",
    "SELECTED",
    "CommandSpec",
    "CommandTable",
    "ParseFunction",
    "State",
]


class State(enum.Enum):
    """Connection states (RFC 3501 §3); :mod:`.connection` moves between them."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


#: The state sets commands are declared with (RFC 3501 §6.1-§6.4).
ANY_STATE = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})

#: Reads the arguments after the command name: ``(cursor, tag, name, uid) -> Command``.
ParseFunction = Callable[["Cursor", str, str, bool], "Command"]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One IMAP command.

    Attributes:
        name: the upper-case command name, as the client sends it.
        states: where the command is legal; elsewhere it is ``BAD``.
        parse: reads its arguments.
        handler: the name of the ``do_*`` coroutine that runs it, bound by the
            command layer (the core must not import the asyncio side).
        uid: also reachable as ``UID <name>`` (RFC 3501 §6.4.8, RFC 4315).
    """

    name: str
    states: frozenset[State]
    parse: ParseFunction
    handler: str
    uid: bool = False


class CommandTable:
    """The declared commands by name; refuses a name declared twice."""

    def __init__(self, specs: Iterable[CommandSpec]) -> None:
        self._specs: dict[str, CommandSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"IMAP command {spec.name} declared twice")
            self._specs[spec.name] = spec

    def get(self, name: str) -> CommandSpec | None:
        return self._specs.get(name)

    def get_uid(self, name: str) -> CommandSpec | None:
        """The command ``UID <name>`` runs, if it has a UID form."""
        spec = self._specs.get(name)
        return spec if spec is not None and spec.uid else None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[CommandSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)
