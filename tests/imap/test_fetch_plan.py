"""What a FETCH plan says the header cache can answer, and INTERNALDATE made once a minute."""

from __future__ import annotations

import time

import pytest

from mailcoach_server.imap import fetch
from mailcoach_server.imap.fetch import FetchPlan, MessageView
from mailcoach_server.imap.parser import FetchCommand, parse_command
from mailcoach_server.imap.wire import format_timestamp


def plan(items: bytes) -> FetchPlan:
    result = parse_command(b"a FETCH 1 " + items + b"\r\n", max_literal=100)
    assert isinstance(result, tuple) and isinstance(result[0], FetchCommand)
    return FetchPlan(result[0].attributes)


@pytest.mark.parametrize("items, from_header, keys", [
    (b"(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])", True,
     ("HEADER.FIELDS FROM SUBJECT",)),
    (b"(BODY.PEEK[HEADER.FIELDS (subject from from)])", True, ("HEADER.FIELDS FROM SUBJECT",)),
    (b"(ENVELOPE RFC822.HEADER BODY[HEADER])", True, ("ENVELOPE",)),
    (b"(BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS.NOT (X)])", True,
     ("BODYSTRUCTURE", "HEADER.FIELDS.NOT X")),
    (b"(UID BODY.PEEK[])", False, ()),
    (b"(BODY.PEEK[1.HEADER.FIELDS (SUBJECT)])", False, ()),
    (b"(RFC822.TEXT)", False, ()),
    (b"(ENVELOPE BODY[TEXT])", False, ("ENVELOPE",)),
], ids=["bench", "same set", "envelope", "structure", "body", "part", "text", "mixed"])
def test_a_plan_says_what_the_header_cache_can_answer(items, from_header, keys):
    made = plan(items)
    assert (made.from_header, made.cache_keys) == (from_header, keys)
    assert made.tree_keys == frozenset(k for k in keys if k == "BODYSTRUCTURE")


def test_a_view_from_the_cache_answers_a_header_plan_like_the_message():
    raw = b"Subject: s\nFrom: a@b\nX-%A: pct\n\nbody\n"
    whole = MessageView(raw)
    header_plan = plan(b'(UID RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS ("X-%A" FROM)])')
    expected = header_plan.line(3, whole, uid=9, flags=(), internaldate=1.7e9)
    cached = MessageView.from_cache(whole.size, whole.header_block, {})
    assert header_plan.line(3, cached, uid=9, flags=(), internaldate=1.7e9) == expected
    assert b"X-%A: pct\r\n" in expected and b"RFC822.SIZE %d" % len(raw.replace(b"\n", b"\r\n"))\
        in expected
    with pytest.raises(RuntimeError):
        cached.raw  # noqa: B018 - a body plan must never get such a view


@pytest.fixture
def zone(monkeypatch):
    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()
        fetch._MINUTES.clear()
    yield use
    monkeypatch.undo()
    time.tzset()
    fetch._MINUTES.clear()


@pytest.mark.parametrize("name", [
    "UTC", "Europe/Berlin", "America/St_Johns", "Australia/Lord_Howe"])
def test_internaldate_made_once_a_minute_is_format_timestamp(zone, name):
    zone(name)
    # Around DST changes of these zones in 2024, fractions that round up, the epoch.
    starts = [1711846800, 1729990800, 1710054000, 1712415600, 1728187200, 0, 86400 * 365]
    moments = [start + offset + fraction for start in starts for offset in range(-90, 91, 7)
               for fraction in (0.0, 0.25, 0.9999994, 0.9999996, 0.99999999)]
    assert [fetch._timestamp(m) for m in moments] == [format_timestamp(m) for m in moments]
    if name != "UTC":  # the zone data is there: the moments do cross a change of offset
        assert len({format_timestamp(m)[-6:] for m in moments}) > 1


@pytest.mark.parametrize("items, needs_block", [
    (b"(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM)] ENVELOPE)", False),
    (b"(BODY.PEEK[HEADER])", True),
    (b"(RFC822.HEADER)", True),
    (b"(BODYSTRUCTURE)", False),
])
def test_a_plan_says_when_it_sends_the_header_block_itself(items, needs_block):
    assert plan(items).needs_block is needs_block
