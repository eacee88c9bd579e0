"""Fitting a memory into a model's context window: which messages go, and the note that says so.

The policy (documented in the README, "Memories longer than the model's window"):

1. nothing goes while the memory fits (estimated tokens, with room kept for the answer);
   once it does not, it is trimmed to a quarter below the limit, so the next calls
   fit again for a while instead of each trimming one message and leaving a note;
2. the oldest exchanges with robots go first (shell commands and their output: the
   bulk of most memories, and the least worth keeping);
3. then the oldest other messages after the kept head (the first ``keep_first``
   messages, usually the training a teacher wrote);
4. never the message being answered (the last one).

Estimates are characters / 3 per turn plus a few tokens of framing: on the
safe side for English and code in the tokenizers of common open and hosted
models. When a provider still answers "context length exceeded", the worker
asks again with a limit below what it sent (``shrunk_limit``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from .mailbox import Turn

__all__ = ["Trim", "estimate_tokens", "fit", "shrunk_limit", "trim_note"]

#: tokens of chat framing per turn (role markers, separators)
_PER_TURN = 6
_TO_LINE = re.compile(r"^(?:To|Cc): (.*)$", re.MULTILINE)


#: tokens an image may take (providers charge 85 to ~1,600 by size)
_PER_IMAGE = 1_600


def estimate_tokens(text: str | None) -> int:
    """Tokens ``text`` may take as one chat turn (an over-estimate)."""
    if text is None:
        return 0
    return len(text) // 3 + _PER_TURN + _PER_IMAGE * len(getattr(text, "images", ()))


@dataclass(frozen=True, slots=True)
class Trim:
    """What ``fit`` decided: memory positions to drop and the figures for the note."""

    drop: tuple[int, ...]
    robot_messages: int
    limit: int
    before: int
    after: int


def fit(memory: Sequence[Turn], *, system: str, limit: int, keep_first: int,
        agent: str, robots: Collection[str], low_water: float = 0.75) -> Trim | None:
    """Positions of ``memory`` to drop so the call fits ``limit`` tokens; None if it fits.

    Args:
        memory: (sender, text) turns, oldest first; the last is the message answered.
        limit: input tokens the model takes.
        low_water: once over ``limit``, trim down to this share of it.
    """
    # estimate_tokens inlined for plain text: a long memory has tens of thousands of turns
    sizes = [len(text) // 3 + _PER_TURN if type(text) is str else estimate_tokens(text)
             for _, text in memory]
    before = estimate_tokens(system) + sum(sizes)
    if before <= limit:
        return None
    last = len(memory) - 1
    movable = [i for i in range(min(keep_first, last), last) if memory[i][1] is not None]
    robot_side = {i for i in movable if _touches_robot(memory[i], agent, robots)}
    order = sorted(movable, key=lambda i: (i not in robot_side, i))
    target = int(limit * low_water)
    total, dropped = before, []
    for position in order:
        if total <= target:
            break
        dropped.append(position)
        total -= sizes[position]
    if not dropped:
        return None
    return Trim(drop=tuple(sorted(dropped)), robot_messages=len(robot_side.intersection(dropped)),
                limit=limit, before=before, after=total)


def _touches_robot(turn: Turn, agent: str, robots: Collection[str]) -> bool:
    sender, text = turn
    if sender in robots:
        return True
    if sender != agent or text is None:
        return False
    head = text.split("\n\n", 1)[0]
    return any(robot in line for line in _TO_LINE.findall(head) for robot in robots)


def shrunk_limit(memory: Sequence[Turn], system: str, dropped: Collection[int]) -> int:
    """A limit below what was just sent, after a provider said it does not fit."""
    sent = estimate_tokens(system) + sum(
        estimate_tokens(text) for i, (_, text) in enumerate(memory) if i not in dropped)
    return max(1, sent * 7 // 10)


def trim_note(trim: Trim, model: str) -> tuple[str, str]:
    """The note put into the memory where messages were removed: (subject, body)."""
    count = len(trim.drop)
    robots = (f", {trim.robot_messages} of them exchanges with robots"
              if trim.robot_messages else "")
    body = (
        f"To fit the context window of {model} (about {trim.limit} tokens), mailcoach "
        f"removed {count} older message{'s' if count != 1 else ''} from this memory here"
        f"{robots}. The trace keeps every message; the conversation goes on from here.\n"
    )
    return "Memory trimmed", body
