"""Sequence sets: ``1:*,3,5:7`` (RFC 3501 §9 ``sequence-set``).

A :class:`SequenceSet` keeps the ranges exactly as the client wrote them
(``*`` is ``None``) and is resolved only against a mailbox: message
sequence numbers (``iter_seq(max_seq)``) or the UIDs that exist
(``iter_uids(uids)``). ``*`` means the largest number in use, so ``n:*``
is ``*:n`` when ``n`` is larger; for UIDs that makes ``UID FETCH 9:*``
return the highest UID even when it is below 9 (RFC 3501 §6.4.8).

The search-result reference ``$`` (RFC 5182) is not supported.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["SequenceSet", "MAX_NUMBER"]

#: RFC 3501 ``number``: an unsigned 32-bit integer.
MAX_NUMBER = 2**32 - 1

_NUMBER = re.compile(r"\*|[1-9][0-9]*")

Bound = int | None  # None is "*"


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed ``sequence-set``.

    Attributes:
        ranges: ``(first, last)`` pairs as written; a single number ``n`` is
            ``(n, n)``; ``None`` stands for ``*``. Ranges may be reversed.
    """

    ranges: tuple[tuple[Bound, Bound], ...]

    @classmethod
    def parse(cls, text: str | bytes) -> SequenceSet:
        """Parse ``"1:3,7,9:*"``.

        Raises:
            ValueError: empty, zero, out of 32-bit range, or not a sequence set.
        """
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        if not text:
            raise ValueError("empty sequence set")
        ranges: list[tuple[Bound, Bound]] = []
        for item in text.split(","):
            first, sep, last = item.partition(":")
            low = _bound(first)
            ranges.append((low, _bound(last) if sep else low))
        return cls(tuple(ranges))

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """The most compact set holding exactly ``numbers``: ``[1, 2, 3, 7]`` → ``1:3,7``.

        Raises:
            ValueError: ``numbers`` is empty (an empty set has no wire form).
        """
        ranges: list[tuple[Bound, Bound]] = []
        for n in sorted(set(numbers)):
            if n < 1:
                raise ValueError(f"not a positive number: {n}")
            if ranges and ranges[-1][1] == n - 1:
                ranges[-1] = (ranges[-1][0], n)
            else:
                ranges.append((n, n))
        if not ranges:
            raise ValueError("empty sequence set")
        return cls(tuple(ranges))

    def __str__(self) -> str:
        return ",".join(
            _fmt(a) if a == b else f"{_fmt(a)}:{_fmt(b)}" for a, b in self.ranges
        )

    def __bytes__(self) -> bytes:
        return str(self).encode("ascii")

    @property
    def uses_star(self) -> bool:
        """True when ``*`` appears (its value depends on the mailbox)."""
        return any(a is None or b is None for a, b in self.ranges)

    def _bounds(self, largest: int) -> Iterator[tuple[int, int]]:
        for a, b in self.ranges:
            low = largest if a is None else a
            high = largest if b is None else b
            yield (low, high) if low <= high else (high, low)

    def contains(self, number: int, largest: int) -> bool:
        """Is ``number`` in the set, with ``*`` = ``largest`` (max seq or max UID)?"""
        return any(low <= number <= high for low, high in self._bounds(largest))

    def highest(self, largest: int) -> int:
        """The largest number the set names once ``*`` is ``largest``."""
        return max(high for _, high in self._bounds(largest))

    def iter_seq(self, max_seq: int) -> list[int]:
        """Message sequence numbers in the set, ascending, clipped to ``1..max_seq``.

        Numbers above ``max_seq`` are dropped; callers that want RFC 3501's
        strict "BAD on invalid sequence number" can compare
        ``highest(max_seq) > max_seq`` first.
        """
        if max_seq < 1:
            return []
        found: set[int] = set()
        for low, high in self._bounds(max_seq):
            found.update(range(max(low, 1), min(high, max_seq) + 1))
        return sorted(found)

    def seq_spans(self, max_seq: int) -> list[tuple[int, int]]:
        """The set as ``[start, stop)`` index ranges of a mailbox of ``max_seq`` messages
        (sequence number ``n`` is index ``n - 1``): ascending, disjoint, clipped.

        What :meth:`iter_seq` says, without a number per message: ``1:*`` on a
        million messages is one range.
        """
        if max_seq < 1:
            return []
        spans = [(max(low, 1) - 1, min(high, max_seq)) for low, high in self._bounds(max_seq)]
        return _merged(spans)

    def uid_spans(self, uids: Sequence[int]) -> list[tuple[int, int]]:
        """The positions in ``uids`` (ascending) of the UIDs in the set, as ``[start, stop)``
        index ranges: ascending, disjoint; what :meth:`iter_uids` says, one range per range."""
        if not uids:
            return []
        spans = [(bisect.bisect_left(uids, low), bisect.bisect_right(uids, high))
                 for low, high in self._bounds(uids[-1])]
        return _merged(spans)

    def iter_uids(self, uids: Sequence[int]) -> list[int]:
        """The UIDs of ``uids`` (ascending, as a mailbox lists them) that are in the set."""
        if not uids:
            return []
        found: set[int] = set()
        for low, high in self._bounds(uids[-1]):
            i = bisect.bisect_left(uids, low)
            j = bisect.bisect_right(uids, high)
            found.update(uids[i:j])
        return sorted(found)

    def __iter__(self) -> Iterator[int]:
        """The numbers of a set without ``*`` (e.g. one built by :meth:`from_numbers`)."""
        if self.uses_star:
            raise ValueError("a set with '*' needs a mailbox to resolve against")
        seen: set[int] = set()
        for low, high in self._bounds(0):
            for n in range(low, high + 1):
                if n not in seen:
                    seen.add(n)
                    yield n


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Non-empty ``[start, stop)`` ranges, sorted, overlapping and touching ones joined."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(span for span in spans if span[0] < span[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


def _bound(text: str) -> Bound:
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"bad sequence number {text[:20]!r}")
    if text == "*":
        return None
    number = int(text)
    if number > MAX_NUMBER:
        raise ValueError(f"sequence number too large: {text[:20]}")
    return number


def _fmt(bound: Bound) -> str:
    return "*" if bound is None else str(bound)
