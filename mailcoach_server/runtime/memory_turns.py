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
        same = _common_head(numbers, kept.numbers)
        again = [kept.numbers[i] for i in kept.unkept if i < same]
        if same == len(kept.numbers):
            return again + numbers[same:]
        known = _by_number(kept, same)
        return again + [n for n in numbers[same:] if n not in known]

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

        kept = self._kept.pop(party, None) or _Kept([], [], [], 0)
        self._chars -= kept.chars
        # Usually mail was appended since the last call and all of it is the same; after
        # a rewrite (a rollback, a pop: the end changed) the head that did not change is
        # kept as it is, and the rest is found by message number.
        same = _common_head(numbers, kept.numbers)
        known: dict[int, Turn] = {}
        if same < len(kept.numbers):
            known = _by_number(kept, same)
            del kept.numbers[same:], kept.turns[same:]
            kept.unkept = [i for i in kept.unkept if i < same]
            kept.chars = sum(len(turn[1] or "") for turn in kept.turns if turn is not None)
        again = {kept.numbers[i]: read(kept.numbers[i]) for i in kept.unkept}
        new = [known.get(n) or read(n) for n in numbers[same:]]
        kept.numbers.extend(numbers[same:])
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
            result[position] = new[position - same] if position >= same else again[number]
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


def _common_head(numbers: list[int], kept: list[int]) -> int:
    """How many leading messages ``numbers`` and ``kept`` share.

    One comparison when ``numbers`` extends ``kept`` (the usual case); else a
    binary search over list comparisons, each a C loop.
    """
    if len(numbers) >= len(kept) and numbers[:len(kept)] == kept:
        return len(kept)
    low, high = 0, min(len(numbers), len(kept))
    while low < high:
        middle = (low + high + 1) // 2
        if numbers[:middle] == kept[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _by_number(kept: _Kept, start: int = 0) -> dict[int, Turn]:
    """The kept turns from position ``start`` on, by message number."""
    return {n: turn for n, turn in zip(kept.numbers[start:], kept.turns[start:], strict=True)
            if turn is not None}
