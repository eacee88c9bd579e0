"""Command output cut to its head and tail, as the shell robot mails it.

Long output keeps its first ``head`` lines and its last ``tail`` lines with
one marker line between them (``--- stdout: 900 lines skipped ---``); it is
cut only when at least ``min_skip`` lines would go, so a reply never hides
three lines behind a marker. Lines longer than ``max_line`` characters are
cut too, with a note of how much was dropped.

``OutputCollector`` does the same over a byte stream, in bounded memory:
it keeps the head, a short deque of the latest lines and counts the rest,
so ``yes`` cannot fill the server's memory. With ``keep_whole`` it also
keeps the stream's first ``keep_whole`` bytes as they came, for the shell
robot to attach as ``stdout.txt`` when the text was cut. This module runs
no processes and knows nothing about mail.
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Iterable
from typing import Final

__all__ = ["OutputCollector", "cut_output", "skip_marker"]

HEAD_LINES: Final = 50
TAIL_LINES: Final = 50
#: cut only when at least this many lines would be skipped
MIN_SKIP: Final = 10
#: longest line kept whole (bytes for the collector, characters for cut_output)
MAX_LINE: Final = 4000


_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def skip_marker(skipped: int, label: str = "stdout") -> str:
    """The line that stands for the lines left out of the middle."""
    return f"--- {label}: {skipped} lines skipped ---"


def _line_cut_note(dropped: int, unit: str) -> str:
    return f" [... line cut: {dropped} more {unit}]"


def _assemble(
    head: list[str], tail: list[str], total: int, *, tail_lines: int, min_skip: int, label: str
) -> str:
    """Join head and tail lines; ``tail`` holds every line after the head that was kept."""
    skipped = total - len(head) - tail_lines
    if skipped >= max(min_skip, 1):
        kept_tail = tail[len(tail) - tail_lines :] if tail_lines else []
        lines = [*head, skip_marker(skipped, label), *kept_tail]
    else:
        lines = [*head, *tail]
    return "".join(line + "\n" for line in lines)


def cut_output(
    output: str | Iterable[str],
    head: int = HEAD_LINES,
    tail: int = TAIL_LINES,
    min_skip: int = MIN_SKIP,
    *,
    max_line: int = MAX_LINE,
    label: str = "stdout",
) -> str:
    """Cut text (or an iterable of lines without their newlines) to head and tail.

    Returns the kept lines, each ending in a newline (empty output gives "").
    """
    lines = output.splitlines() if isinstance(output, str) else output
    collected_head: list[str] = []
    window: deque[str] = deque(maxlen=tail + max(min_skip, 1) - 1)
    total = 0
    for line in lines:
        if len(line) > max_line:
            line = line[:max_line] + _line_cut_note(len(line) - max_line, "characters")
        if len(collected_head) < head:
            collected_head.append(line)
        else:
            window.append(line)
        total += 1
    return _assemble(
        collected_head, list(window), total, tail_lines=tail, min_skip=min_skip, label=label
    )


class OutputCollector:
    """Collects a process's output stream in bounded memory and cuts it like ``cut_output``.

    Memory use is at most about ``(head + tail + min_skip) * max_line`` bytes
    whatever the stream's length. Bytes are decoded as UTF-8 with
    ``errors="replace"`` one line at a time, when a line is kept.
    """

    def __init__(
        self,
        head: int = HEAD_LINES,
        tail: int = TAIL_LINES,
        min_skip: int = MIN_SKIP,
        *,
        max_line: int = MAX_LINE,
        label: str = "stdout",
        keep_whole: int = 0,
    ) -> None:
        if head < 0 or tail < 0 or max_line < 1:
            raise ValueError("head and tail must be >= 0 and max_line >= 1")
        self._head_lines = head
        self._tail_lines = tail
        self._min_skip = min_skip
        self._max_line = max_line
        self._label = label
        self._head: list[str] = []
        # Holds every line after the head as long as the output could still
        # turn out too short to cut; after that only the newest ones.
        self._window: deque[str] = deque(maxlen=tail + max(min_skip, 1) - 1)
        self._total = 0  # complete lines seen
        self._partial = bytearray()  # the current line, at most max_line bytes
        self._partial_dropped = 0  # bytes of the current line beyond max_line
        self._bytes = 0
        self._keep_whole = keep_whole
        self._whole = bytearray()  # the first keep_whole bytes of the stream
        self._line_cut = False  # a line lost bytes beyond max_line

    @property
    def cut(self) -> bool:
        """The text ``finish`` returns leaves something out (lines skipped or cut)."""
        skipped = self._total - len(self._head) - self._tail_lines
        return self._line_cut or skipped >= max(self._min_skip, 1)

    @property
    def whole(self) -> bytes:
        """The stream's first ``keep_whole`` bytes, unchanged (all of it if it was no longer)."""
        return bytes(self._whole)

    @property
    def total_lines(self) -> int:
        """Lines seen so far (a last line without a newline counts after ``finish``)."""
        return self._total

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def feed(self, data: bytes) -> None:
        """Take the next chunk of the stream."""
        self._bytes += len(data)
        room = self._keep_whole - len(self._whole)
        if room > 0:
            self._whole += data[:room]
        view = memoryview(data)
        pos = 0
        # Fill the head line by line.
        while len(self._head) < self._head_lines:
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._add_to_partial(view[pos:])
                return
            self._add_to_partial(view[pos:newline])
            self._end_line()
            pos = newline + 1
        # Past the head only the newest window's worth of lines can survive, so
        # lines of this chunk older than that are counted, never decoded.
        last = data.rfind(b"\n", pos)
        if last < 0:
            self._add_to_partial(view[pos:])
            return
        complete = data.count(b"\n", pos, last + 1)
        keep = self._window.maxlen or 0
        if complete > keep:
            start = last
            for _ in range(keep):
                start = data.rfind(b"\n", pos, start)
            self._total += complete - keep
            self._partial.clear()
            self._partial_dropped = 0
            pos = start + 1
        while pos <= last:
            newline = data.find(b"\n", pos, last + 1)
            self._add_to_partial(view[pos:newline])
            self._end_line()
            pos = newline + 1
        self._add_to_partial(view[last + 1 :])

    def finish(self) -> str:
        """The cut output: kept lines, each ending in a newline ("" when there was none)."""
        if self._partial or self._partial_dropped:
            self._end_line()
        return _assemble(
            self._head,
            list(self._window),
            self._total,
            tail_lines=self._tail_lines,
            min_skip=self._min_skip,
            label=self._label,
        )

    def _add_to_partial(self, chunk: memoryview) -> None:
        room = self._max_line - len(self._partial)
        if len(chunk) <= room:
            self._partial += chunk
        else:
            self._partial += chunk[: max(room, 0)]
            self._partial_dropped += len(chunk) - max(room, 0)

    def _end_line(self) -> None:
        dropped = self._partial_dropped
        decoder = _utf8_decoder("replace")
        # final=False holds back a UTF-8 sequence cut in half at max_line.
        line = decoder.decode(self._partial, final=not dropped)
        if dropped:
            self._line_cut = True
            dropped += len(decoder.getstate()[0])
            line += _line_cut_note(dropped, "bytes")
        if len(self._head) < self._head_lines:
            self._head.append(line)
        else:
            self._window.append(line)
        self._total += 1
        self._partial.clear()
        self._partial_dropped = 0
