"""Output cut to head and tail: the pure function and the streaming collector."""

from __future__ import annotations

import pytest
from mailcoach_robots.output import OutputCollector, cut_output, skip_marker

__all__: list[str] = []


def numbered(n: int) -> list[str]:
    return [str(i) for i in range(1, n + 1)]


def feed_in_chunks(data: bytes, size: int, **kwargs: int) -> str:
    collector = OutputCollector(**kwargs)
    for start in range(0, len(data), size):
        collector.feed(data[start : start + size])
    return collector.finish()


def test_short_output_is_kept_whole() -> None:
    assert cut_output("a\nb\nc\n") == "a\nb\nc\n"
    assert cut_output([]) == ""


@pytest.mark.parametrize(
    ("n", "skipped"),
    [(100, None), (109, None), (110, 10), (1000, 900)],
    ids=["100-lines", "9-would-go", "10-go", "1000-lines"],
)
def test_cut_only_when_ten_lines_would_go(n: int, skipped: int | None) -> None:
    lines = cut_output(numbered(n)).splitlines()
    if skipped is None:
        assert lines == numbered(n)
    else:
        assert lines[:50] == numbered(50)
        assert lines[50] == f"--- stdout: {skipped} lines skipped ---"
        assert lines[51:] == numbered(n)[-50:]


def test_head_and_tail_sizes_and_label() -> None:
    text = cut_output(numbered(30), head=2, tail=3, min_skip=1, label="output")
    assert text == "1\n2\n--- output: 25 lines skipped ---\n28\n29\n30\n"


def test_no_tail_at_all() -> None:
    assert cut_output(numbered(30), head=2, tail=0) == "1\n2\n" + skip_marker(28) + "\n"


def test_long_line_is_cut_with_a_note() -> None:
    (line,) = cut_output(["x" * 5000]).splitlines()
    assert line == "x" * 4000 + " [... line cut: 1000 more characters]"


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
@pytest.mark.parametrize("n", [0, 1, 60, 109, 110, 111, 1000])
def test_collector_agrees_with_cut_output(chunk: int, n: int) -> None:
    data = "".join(f"{i}\n" for i in numbered(n)).encode()
    assert feed_in_chunks(data, chunk) == cut_output(numbered(n))


def test_collector_counts_a_last_line_without_newline() -> None:
    assert feed_in_chunks(b"a\nb", 1) == "a\nb\n"


def test_collector_decodes_utf8_split_across_chunks_and_replaces_garbage() -> None:
    data = "café ünïcode\n".encode() + b"bad \xff byte\n"
    assert feed_in_chunks(data, 1) == "café ünïcode\nbad \ufffd byte\n"


def test_collector_cuts_long_lines_at_a_character_boundary() -> None:
    data = ("é" * 10 + "\n").encode()  # 20 bytes a line
    assert feed_in_chunks(data, 3, max_line=7) == "ééé [... line cut: 14 more bytes]\n"


def test_collector_memory_stays_bounded_on_huge_output() -> None:
    collector = OutputCollector()
    chunk = b"y\n" * 32768
    for _ in range(800):  # 50 MiB, 26 million lines
        collector.feed(chunk)
        assert len(collector._window) <= 59 and len(collector._partial) <= 4000
    text = collector.finish()
    assert collector.total_lines == 800 * 32768
    assert f"--- stdout: {800 * 32768 - 100} lines skipped ---" in text
    assert len(text) < 1000


def test_collector_bounds_one_endless_line() -> None:
    collector = OutputCollector()
    for _ in range(1000):
        collector.feed(b"z" * 65536)
    assert len(collector._partial) == 4000
    assert collector.finish() == "z" * 4000 + f" [... line cut: {65536000 - 4000} more bytes]\n"
