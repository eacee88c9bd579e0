"""The one mbox reader/writer: mboxrd both ways, the original tool's files, odd input."""

from __future__ import annotations

import mailbox

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcoach_server.store import mbox

WHEN = 1_741_032_174.0  # Mon Mar  3 20:02:54 2025 UTC


def write(messages: list[bytes], sender: str = "swe1@localdomain") -> bytes:
    return b"".join(mbox.frame(raw, sender, WHEN)[0] for raw in messages)


def canonical(raw: bytes) -> bytes:
    """What the writer keeps of a message: LF line ends and a final newline."""
    lf = mbox.to_lf(raw)
    return lf if lf.endswith(b"\n") else mbox.to_lf(lf + b"\n")


# -- writing ------------------------------------------------------------------------


def test_frame_quotes_from_lines_mboxrd_and_ends_with_a_blank_line():
    entry, head = mbox.frame(b"Subject: x\r\n\r\nFrom here on\r\n>From there\r\nend",
                             "swe1@localdomain", WHEN)
    assert entry[:head] == b"From swe1@localdomain Mon Mar 03 20:02:54 2025\n"
    assert entry[head:] == b"Subject: x\n\n>From here on\n>>From there\nend\n\n"


def test_from_line_keeps_the_sender_one_word():
    assert mbox.from_line("a b\nc", WHEN).startswith(b"From a_b_c Mon ")
    assert mbox.from_line("", WHEN).startswith(b"From MAILER-DAEMON ")


def test_to_lf_is_idempotent_on_stray_carriage_returns():
    assert mbox.to_lf(b"a\r\r\nb\r\n") == b"a\nb\n"
    assert mbox.to_lf(mbox.to_lf(b"x\r\r\r\ny")) == mbox.to_lf(b"x\r\r\r\ny") == b"x\ny"


# -- reading ------------------------------------------------------------------------


def test_what_we_write_reads_back_exactly():
    messages = [b"Subject: 1\n\nFrom here on\n", b"Subject: 2\n\n>From x\n>>From y\n",
                b"Subject: 3\n\nno final newline"]
    assert mbox.parse(write(messages)) == [canonical(m) for m in messages]
    assert mbox.parse(write(messages))[0].endswith(b"\nFrom here on\n")


def test_the_originals_trace_blank_first_line_and_dash_separators():
    # The original writes "\nFrom " + 32 dashes + "\n" before each message.
    sep = b"\nFrom " + b"-" * 32 + b"\n"
    data = sep + b"From: a@x\n\nfirst\n" + sep + b"From: b@x\n\n>From kept as text\n"
    assert mbox.parse(data) == [b"From: a@x\n\nfirst\n", b"From: b@x\n\n>From kept as text\n"]


def test_the_originals_saved_memory_dateless_from_lines_are_verbatim():
    # save_mbox: "From <sender>\n" + message + "\n", no quoting.
    data = (b"From system@localdomain\nFrom: system@localdomain\n\nWelcome\n\n"
            b"From swe1@localdomain  \nFrom: swe1@localdomain  \n\n>From me\n\n")
    assert mbox.parse(data) == [b"From: system@localdomain\n\nWelcome\n",
                                b"From: swe1@localdomain  \n\n>From me\n"]


def test_dated_and_dateless_messages_in_one_file_each_keep_their_rule():
    data = write([b"S: 1\n\n>From ours\n"]) + b"From ----\nS: 2\n\n>From theirs\n"
    assert mbox.parse(data) == [b"S: 1\n\n>From ours\n", b"S: 2\n\n>From theirs\n"]


@pytest.mark.parametrize("data", [b"", b"\n", b"\n\n  \n", b"\r\n"], ids=repr)
def test_an_empty_or_blank_file_is_an_empty_mailbox(data):
    assert mbox.parse(data) == []


@pytest.mark.parametrize("data", [b"hello\nFrom x\n", b"\nFrom: user@localdomain\n\nhi\n",
                                  b" From x Mon Mar  3 20:02:54 2025\n\n"], ids=repr)
def test_text_before_the_first_from_line_is_refused(data):
    with pytest.raises(mbox.MboxError, match="is not an mbox file"):
        mbox.parse(data)


def test_a_crlf_file_reads_as_its_lf_twin():
    lf = write([b"Subject: 1\n\nFrom x\nbody\n", b"Subject: 2\n\n\n"])
    assert mbox.parse(lf.replace(b"\n", b"\r\n")) == mbox.parse(lf)
    assert mbox.parse(b"\r\n" + lf.replace(b"\n", b"\r\n")) == mbox.parse(lf)


def test_separator_and_end_of_file_cases_match_the_stdlib(tmp_path):
    data = (b"From a Mon Mar  3 20:02:54 2025\n\n"          # empty message
            b"From b Mon Mar  3 20:02:54 2025\nS: 2\n\nx\n\n\n"  # body ends with a blank line
            b"From c Mon Mar  3 20:02:54 2025\nS: 3\n\nlast, no newline")
    path = tmp_path / "box"
    path.write_bytes(data)
    box = mailbox.mbox(path, create=False)
    try:
        stdlib = [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()
    assert mbox.read(path) == stdlib == [b"", b"S: 2\n\nx\n\n", b"S: 3\n\nlast, no newline"]


def test_a_from_line_at_the_very_end_is_an_empty_message():
    assert mbox.parse(b"From ----\nS: 1\n\nx\n\nFrom ----") == [b"S: 1\n\nx\n", b""]


def test_what_we_write_the_stdlib_reads_as_the_same_number_of_text_messages(tmp_path):
    messages = [b"Subject: 1\n\nFrom here on\n", b"Subject: 2\n\n", b"Subject: 3\n\nx"]
    path = tmp_path / "box"
    path.write_bytes(write(messages))
    box = mailbox.mbox(path, create=False)
    try:
        assert [m["Subject"] for m in box] == ["1", "2", "3"]
    finally:
        box.close()


# -- the round trip -------------------------------------------------------------------

_LINES = st.sampled_from([
    b"From here on", b">From here", b">>From there", b">>>From ", b"From ", b"From",
    b"", b" ", b"text", b"\r", b"From: x@y", b">", b">From", b"\xff\xfe binary-ish",
])
_MESSAGE = st.tuples(
    st.lists(st.one_of(_LINES, st.binary(max_size=12)), max_size=8),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
).map(lambda t: t[1].join(t[0]) + (t[1] if t[2] else b""))


@settings(max_examples=300, deadline=None)
@given(st.lists(_MESSAGE, max_size=6), st.integers(min_value=2, max_value=4))
def test_any_message_set_written_and_read_back_n_times_is_byte_identical(messages, times):
    file = write(messages)
    read = mbox.parse(file)
    assert read == [canonical(m) for m in messages]
    for _ in range(times):
        again = write(read)
        assert again == file
        assert mbox.parse(again) == read
