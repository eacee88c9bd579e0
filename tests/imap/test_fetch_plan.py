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


MESSAGE = b"Subject: s\nFrom: a@b\nTo: c@d\nX-%A: pct\nContent-Type: text/plain\n\nbody\n"


@pytest.mark.parametrize("items", [
    b"(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT)])",
    b"(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)] FLAGS UID)",
    b'(UID BODY.PEEK[HEADER.FIELDS ("X-%A")])',
    b"(UID ENVELOPE)",
    b"(FLAGS BODYSTRUCTURE INTERNALDATE)",
    b"(UID BODY RFC822.SIZE)",
    b"(RFC822.SIZE INTERNALDATE)",
], ids=["thunderbird", "not", "percent", "envelope", "structure", "body", "no item"])
@pytest.mark.parametrize("text, recent", [("", False), ("\\Seen $Label1", False),
                                          ("\\Answered", True)])
def test_a_line_from_an_entry_is_the_line_from_the_message(items, text, recent):
    made = plan(items)
    assert made.from_entries
    whole = MessageView(MESSAGE)
    flags = (*text.split(), "\\Recent") if recent else tuple(text.split())
    when = 1_700_000_123.5
    expected = made.line(41, whole, uid=77, flags=flags, internaldate=when)
    entry = (whole.size, None, whole.items(made.cache_keys))
    assert len(entry[2]) == len(made.cache_keys)  # the line above made each item
    rows = [(76, 5, "", when - 60), (77, 6, text, when)]
    lines = made.entry_lines(40, rows, {5: entry, 6: entry}, {77} if recent else set())
    assert lines[1] == expected
    assert lines[0] == made.line(40, whole, uid=76, flags=(), internaldate=when - 60)


def test_a_line_from_an_entry_is_none_where_the_entry_is_missing_or_lacks_the_item():
    made = plan(b"(UID ENVELOPE)")
    rows = [(1, 10, "", 1.0), (2, 11, "", 1.0), (3, 12, "", 1.0)]
    entries = {10: (100, None, {"ENVELOPE": b"(NIL)"}), 12: (100, b"S: x\r\n\r\n", {})}
    lines = made.entry_lines(1, rows, entries, set())
    assert lines == [b"* 1 FETCH (UID 1 ENVELOPE (NIL))\r\n", None, None]


@pytest.mark.parametrize("items", [
    b"(UID RFC822.HEADER)", b"(BODY.PEEK[HEADER])", b"(BODY.PEEK[HEADER.FIELDS (TO)]<0.10>)",
    b"(ENVELOPE BODY.PEEK[HEADER.FIELDS (TO)])", b"(UID BODY.PEEK[])", b"(RFC822.TEXT)",
    b"(BODY.PEEK[1.MIME])",
], ids=["rfc822.header", "header", "partial", "two items", "body", "text", "part"])
def test_a_plan_an_entry_cannot_answer_alone_says_so(items):
    made = plan(items)
    assert not made.from_entries
    with pytest.raises(ValueError):
        made.entry_lines(1, [(1, 1, "", 1.0)], {1: (1, None, {})}, set())


@pytest.mark.parametrize("items", [
    b"(UID BODY.PEEK[])", b"(BODY[] UID FLAGS)", b"(FLAGS RFC822 RFC822.SIZE INTERNALDATE)",
    b"(BODY.PEEK[])", b"(UID RFC822.SIZE BODY.PEEK[] INTERNALDATE FLAGS)",
], ids=["peek", "after", "rfc822", "alone", "both sides"])
@pytest.mark.parametrize("flags", [(), ("\\Seen", "$Label1", "\\Recent")])
def test_the_pieces_of_a_line_around_the_message_make_the_line(items, flags):
    made = plan(items)
    assert made.from_message
    view = MessageView(MESSAGE)
    expected = made.line(12, view, uid=34, flags=flags, internaldate=1_700_000_000.75)
    pieces = made.message_pieces(12, view.raw, 34, flags, 1_700_000_000.75)
    assert b"".join(pieces) == expected
    assert pieces[1] is view.raw  # the message is not copied into the line


@pytest.mark.parametrize("items", [
    b"(UID BODY.PEEK[]<0.100>)", b"(BODY.PEEK[TEXT])", b"(BODY.PEEK[1])", b"(UID ENVELOPE)",
    b"(BODY.PEEK[] RFC822)", b"(BODY.PEEK[] ENVELOPE)", b"(UID FLAGS)",
], ids=["partial", "text", "part", "envelope", "twice", "and more", "no message"])
def test_a_plan_that_needs_more_than_the_message_is_not_made_in_pieces(items):
    made = plan(items)
    assert not made.from_message
    with pytest.raises(ValueError):
        made.message_pieces(1, b"x\r\n", 1, (), 1.0)
