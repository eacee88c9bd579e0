"""Each party's memory as model turns, kept between calls: what a memory costs to read.

A model call shows an agent its whole memory, one turn per message, and
reading a message (index, file, MIME parse, text for the model) costs far
more than the rest of the call's preparation. A memory only grows at its
end between calls, except when it is rewritten (X-Rollback, X-Pop-Shell,
trimming, edits from a mail client): so the turns of each party's memory are
kept with the message numbers they were made from, and each call compares
the memory with those numbers (never assumes) and reads only what is new.
After a rewrite, kept turns are found again by message number (a stored
message never changes), so only messages new to that memory are read.

Kept text is bounded over all parties (``max_chars``; the party used least
recently goes first). Turns that carry images are never kept (megabytes):
they are read again for each call.

Not here: how a message reads as a turn (the caller's ``read``,
``context.turn_text``), where memories live (the store).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .context import CONTEXT_CHARS
from .mailbox import Turn

__all__ = ["MemoryTurns"]


@dataclass(slots=True)
class _Kept:
    """One party's memory as last read: message numbers and their turns, position by position."""

    numbers: list[int]
    #: None where a turn is not kept (it has images): read again each time
    turns: list[Turn | None]
    #: positions of those turns
    unkept: list[int]
    chars: int


class MemoryTurns:
    """The turns of each party's memory, read once and extended as it grows.

    Args:
        read: (sender, model text) of one stored message; called from a worker thread too.
        max_chars: turn text kept over all parties before the least recent is dropped.
    """

    def __init__(self, read: Callable[[int], Turn], *,
                 max_chars: int = CONTEXT_CHARS) -> None:
        self.read = read
        self.max_chars = max_chars
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._chars = 0

    def missing(self, party: str, numbers: Sequence[int]) -> list[int]:
        """The messages of ``numbers`` that ``turns`` would read (to read them ahead)."""
        numbers = list(numbers)
        kept = self._kept.get(party)
        if kept is None:
            return numbers
        if _extends(numbers, kept.numbers):
            return [kept.numbers[i] for i in kept.unkept] + numbers[len(kept.numbers):]
        known = _by_number(kept)
        return [n for n in numbers if n not in known]

    def turns(self, party: str, numbers: Sequence[int],
              read_ahead: Mapping[int, Turn] | None = None) -> list[Turn]:
        """The turns of memory ``numbers`` (oldest first) of ``party``, a new list.

        Args:
            read_ahead: turns of messages ``missing`` named, read by the caller.
        """
        numbers = list(numbers)
        ahead = read_ahead or {}

        def read(number: int) -> Turn:
            turn = ahead.get(number)
            return turn if turn is not None else self.read(number)

        kept = self._kept.pop(party, None)
        if kept is not None:
            self._chars -= kept.chars
        if kept is not None and _extends(numbers, kept.numbers):
            start = len(kept.numbers)  # the usual case: mail appended since the last call
            again = {kept.numbers[i]: read(kept.numbers[i]) for i in kept.unkept}
            new = [read(n) for n in numbers[start:]]
            kept.numbers.extend(numbers[start:])
        else:
            known = {} if kept is None else _by_number(kept)
            start, again = 0, {}
            new = [known.get(n) or read(n) for n in numbers]
            kept = _Kept(numbers, [], [], 0)
        for turn in new:
            if getattr(turn[1], "images", ()):
                kept.unkept.append(len(kept.turns))
                kept.turns.append(None)
            else:
                kept.turns.append(turn)
                kept.chars += len(turn[1] or "")
        result = list(kept.turns)
        for position in kept.unkept:
            number = kept.numbers[position]
            result[position] = new[position - start] if position >= start else again[number]
        self._keep(party, kept)
        return result  # type: ignore[return-value]  # every None was filled in

    def forget(self, party: str) -> None:
        """Drop what is kept of ``party``'s memory (it is read again when next asked)."""
        kept = self._kept.pop(party, None)
        if kept is not None:
            self._chars -= kept.chars

    @property
    def kept_chars(self) -> int:
        """Characters of turn text kept now, over all parties."""
        return self._chars

    def _keep(self, party: str, kept: _Kept) -> None:
        self._kept[party] = kept  # the most recent, at the end
        self._chars += kept.chars
        while self._chars > self.max_chars and len(self._kept) > 1:
            _, oldest = self._kept.popitem(last=False)
            self._chars -= oldest.chars
        if self._chars > self.max_chars:  # one memory alone is over the bound: not kept
            self.forget(party)


def _extends(numbers: list[int], kept: list[int]) -> bool:
    """Whether ``numbers`` is ``kept`` with messages appended (or unchanged)."""
    return len(numbers) >= len(kept) and numbers[:len(kept)] == kept


def _by_number(kept: _Kept) -> dict[int, Turn]:
    return {n: turn for n, turn in zip(kept.numbers, kept.turns, strict=True)
            if turn is not None}

