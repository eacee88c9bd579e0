"""The original tool's control headers, as a pure function over agent state.

    X-Hint-Model: M     the agent uses model M from now on (empty: the default)
    X-Rollback: N       keep context positions 0..N, drop the rest, then store this one
    X-Pop-Shell         drop the trailing exchange with the shell robot(s)
    X-Expect: a, b      do not answer until mail from each of a and b arrived
    X-Drop              apply the headers above, do not store this message
                        (a recipient it is To still answers, from its memory)

They act on every agent the message reaches, its sender included (To, Cc,
From), before the message is added to its memory, as in the original tool:
that is how an agent trims its own memory with ``X-Pop-Shell``.

X-Rollback counts positions in the original's context: its two primer
messages are positions 0 and 1, the agent's memory follows from 2. Our
memories do not store that primer (the system turn stands for it), so
message k of ``<address>.mbox`` (numbered from 1, as in the IMAP folder
``Agents/<address>``) is position k + 1, and ``X-Rollback: N`` keeps
messages 1..N-1. A memory written by the original tool begins with the
primer itself; there message k is position k - 1 and ``X-Rollback: N``
keeps messages 1..N+1: the same messages the original keeps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..addresses import parse_address_list

__all__ = ["PRIMER_POSITIONS", "AgentState", "HeaderEffect", "apply_control_headers",
           "rollback_keeps"]

#: how many context positions the original's primer takes (system → agent, agent → system)
PRIMER_POSITIONS = 2


class Headers(Protocol):
    """What is read of a message here: an ``email`` Message or a ``HeaderView``."""

    def __contains__(self, name: object, /) -> bool: ...
    def __getitem__(self, name: str, /) -> object: ...


@dataclass(slots=True)
class AgentState:
    model: str | None = None
    expect: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"model": self.model, "expect": list(self.expect)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AgentState:
        model = data.get("model")
        expect = data.get("expect") or []
        return cls(
            model=model if isinstance(model, str) else None,
            expect=[str(a) for a in expect] if isinstance(expect, list) else [],
        )


@dataclass(frozen=True, slots=True)
class HeaderEffect:
    state: AgentState
    #: the whole new memory, if a header changed what was there
    memory: list[int] | None
    store: bool
    #: header problems worth a log line (bad X-Rollback value, ...)
    warnings: tuple[str, ...] = ()


def rollback_keeps(position: int, *, primer_stored: bool) -> int:
    """How many memory messages ``X-Rollback: position`` keeps (the original's
    ``context[:position + 1]``, over primer + memory).

    Args:
        position: N, at least 0.
        primer_stored: the memory begins with the original's two primer
            messages (it was written by the original tool).
    """
    kept_positions = position + 1
    return kept_positions if primer_stored else max(kept_positions - PRIMER_POSITIONS, 0)


def apply_control_headers(
    headers: Headers,
    sender: str,
    state: AgentState,
    memory: Sequence[int],
    touches_shell: Callable[[int], bool],
    *,
    primer_stored: bool = False,
) -> HeaderEffect:
    """What one message does to one agent (a recipient or its sender).

    Args:
        headers: the message (only headers are read).
        sender: its normalised sender.
        state: the agent's state before it (not modified).
        memory: message ids in the agent's memory, oldest first.
        touches_shell: whether a message in memory is from or to a shell robot.
        primer_stored: ``memory`` begins with the original tool's two primer
            messages, which then count as positions 0 and 1 of X-Rollback.
    """
    new = AgentState(state.model, [a for a in state.expect if a != sender])
    warnings: list[str] = []
    kept: list[int] | None = None

    if "X-Hint-Model" in headers:
        hint = str(headers["X-Hint-Model"]).strip()
        new.model = hint or None
    if "X-Rollback" in headers:
        raw = str(headers["X-Rollback"]).strip()
        # ASCII digits only: int() would also take "-1" (the original's slice then
        # counts from the end), "1_0" and other scripts' digits.
        if re.fullmatch(r"[0-9]{1,9}", raw):
            kept = list(memory[: rollback_keeps(int(raw), primer_stored=primer_stored)])
        else:
            warnings.append(f"X-Rollback: {raw!r} is not a position (0, 1, 2, ...); ignored")
    if "X-Pop-Shell" in headers:
        kept = list(memory if kept is None else kept)
        while kept and touches_shell(kept[-1]):
            kept.pop()
    if "X-Expect" in headers:
        expected, bad = parse_address_list([str(headers["X-Expect"])])
        new.expect = expected
        if bad:
            warnings.append(f"X-Expect: not addresses: {', '.join(bad)}")
    store = "X-Drop" not in headers
    if kept is not None and kept == list(memory):
        kept = None
    return HeaderEffect(new, kept, store, tuple(warnings))
