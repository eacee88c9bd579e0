"""The original tool's control headers, as a pure function over agent state.

    X-Hint-Model: M     the agent uses model M from now on (empty: the default)
    X-Rollback: N       keep memory messages 0..N, drop the rest, then store this one
    X-Pop-Shell         drop the trailing exchange with the shell robot(s)
    X-Expect: a, b      do not answer until mail from each of a and b arrived
    X-Drop              apply the headers above, do not store this message

They act on every agent the message reaches (To or Cc), before the message
is added to its memory, as in the original tool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..addresses import parse_address_list

__all__ = ["AgentState", "HeaderEffect", "apply_control_headers"]


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


def apply_control_headers(
    headers: Headers,
    sender: str,
    state: AgentState,
    memory: Sequence[int],
    touches_shell: Callable[[int], bool],
) -> HeaderEffect:
    """What one incoming message does to one agent.

    Args:
        headers: the message (only headers are read).
        sender: its normalised sender.
        state: the agent's state before it (not modified).
        memory: message ids in the agent's memory, oldest first.
        touches_shell: whether a message in memory is from or to a shell robot.
    """
    new = AgentState(state.model, [a for a in state.expect if a != sender])
    warnings: list[str] = []
    kept: list[int] | None = None

    if "X-Hint-Model" in headers:
        hint = str(headers["X-Hint-Model"]).strip()
        new.model = hint or None
    if "X-Rollback" in headers:
        raw = str(headers["X-Rollback"]).strip()
        try:
            keep = int(raw)
        except ValueError:
            warnings.append(f"X-Rollback: {raw!r} is not a number; ignored")
        else:
            kept = list(memory[: max(keep + 1, 0)])
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
