"""SequenceSet: parsing, resolving against a mailbox, compact formatting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcoach_server.imap.sequence import SequenceSet

S = SequenceSet.parse


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("1", ((1, 1),)),
        ("*", ((None, None),)),
        ("1:*", ((1, None),)),
        ("5:3,7,9:*", ((5, 3), (7, 7), (9, None))),
        (b"4294967295", ((2**32 - 1, 2**32 - 1),)),
    ],
)
def test_parse(text: str | bytes, ranges: tuple) -> None:
    parsed = S(text)
    assert parsed.ranges == ranges
    assert S(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text", ["", "0", "1:0", "01", "1,", ",1", "1::2", "a", "*1", "4294967296", "$"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        S(text)


def test_iter_seq_clips_and_sorts() -> None:
    assert S("1:*").iter_seq(4) == [1, 2, 3, 4]
    assert S("3,1,2:3").iter_seq(10) == [1, 2, 3]
    assert S("5:3").iter_seq(10) == [3, 4, 5]
    assert S("2:9").iter_seq(4) == [2, 3, 4]
    assert S("*").iter_seq(7) == [7]
    assert S("1:*").iter_seq(0) == []
    assert S("6:*").iter_seq(4) == [4]  # "*" is 4, so 6:* is 4:6
    assert S("2:9").highest(4) == 9


def test_iter_uids_star_semantics() -> None:
    uids = [3, 5, 8, 13]
    assert S("1:*").iter_uids(uids) == uids
    assert S("4:9").iter_uids(uids) == [5, 8]
    assert S("*").iter_uids(uids) == [13]
    # RFC 3501 §6.4.8: n:* includes the highest UID even when n is above it.
    assert S("20:*").iter_uids(uids) == [13]
    assert S("20:30").iter_uids(uids) == []
    assert S("1:*").iter_uids([]) == []


def test_contains() -> None:
    assert S("2:4,9:*").contains(3, 20)
    assert S("2:4,9:*").contains(20, 20)
    assert not S("2:4,9:*").contains(5, 20)
    assert S("30:*").contains(20, 20)


@pytest.mark.parametrize(
    ("numbers", "text"),
    [([1, 2, 3, 7], "1:3,7"), ([7, 3, 1, 2, 2], "1:3,7"), ([5], "5"), ([1, 3, 5], "1,3,5")],
)
def test_from_numbers(numbers: list[int], text: str) -> None:
    built = SequenceSet.from_numbers(numbers)
    assert str(built) == text and bytes(built) == text.encode()
    assert list(built) == sorted(set(numbers))


def test_from_numbers_rejects_empty() -> None:
    with pytest.raises(ValueError):
        SequenceSet.from_numbers([])
    with pytest.raises(ValueError):
        list(S("1:*"))


_bounds = st.one_of(st.none(), st.integers(1, 60))


@settings(max_examples=300, deadline=None)
@given(ranges=st.lists(st.tuples(_bounds, _bounds), min_size=1, max_size=5),
       uids=st.lists(st.integers(1, 80), max_size=40, unique=True), max_seq=st.integers(0, 50))
def test_spans_name_exactly_what_the_iterators_name(ranges, uids, max_seq) -> None:
    numbers = SequenceSet(tuple(ranges))
    uids = sorted(uids)
    uid_spans = numbers.uid_spans(uids)
    assert [uids[i] for start, stop in uid_spans for i in range(start, stop)] == \
        numbers.iter_uids(uids)
    seq_spans = numbers.seq_spans(max_seq)
    assert [i + 1 for start, stop in seq_spans for i in range(start, stop)] == \
        numbers.iter_seq(max_seq)
    for spans in (uid_spans, seq_spans):  # ascending, disjoint, not touching, not empty
        assert all(a < b for a, b in spans)
        assert all(prev[1] < nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False))


def test_one_to_star_on_a_million_is_one_span() -> None:
    from array import array

    uids = array("I", range(3, 3_000_003, 3))
    assert SequenceSet.parse("1:*").uid_spans(uids) == [(0, 1_000_000)]
    assert SequenceSet.parse("1:*").seq_spans(1_000_000) == [(0, 1_000_000)]
    assert SequenceSet.parse("2999998:*,1:5").uid_spans(uids) == [(0, 1), (999_999, 1_000_000)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600), st.integers(0, 600)), max_size=4),
       st.integers(1, 300), st.integers(0, 64))
def test_fetch_ranges_cover_the_spans_growing_from_a_short_first(spans, size, first) -> None:
    from mailcoach_server.imap.selected import SelectedMailbox

    spans = [(min(a, b), max(a, b)) for a, b in spans]
    cut = list(SelectedMailbox.ranges(spans, size, first))
    assert [p for low, high in cut for p in range(low, high)] == [
        p for low, high in spans for p in range(low, high)]
    assert all(0 < high - low <= size for low, high in cut)
    limit = min(first, size) or size  # each range at most twice the one before
    for low, high in cut:
        assert high - low <= limit
        limit = min(2 * limit, size)
