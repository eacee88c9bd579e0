"""Reading stored messages by their span, as the IMAP message cache does."""

from __future__ import annotations

import os
import time

import pytest

from mailcoach_server.errors import StoreError
from mailcoach_server.store.spans import SpanReader
from mailcoach_server.store.store import MessageMeta, Store, WritePlan


async def test_a_span_reads_back_the_stored_message_with_quoting_undone(tmp_path):
    store = Store.open(tmp_path)
    try:
        raw = b"Subject: q\n\nFrom the top\n>From quoted\n"
        meta = MessageMeta(store.allocate_message_id(), "<q@t>", "user@localdomain", (), "q",
                           "", "<q@t>", 0, 0.0, time.time())
        store.ensure_folder("INBOX")
        await store.commit(WritePlan(raw=raw, meta=meta, folders=["INBOX"]))
        ((_, _, _, file, offset, length, _),) = store.folders.folder_rows("INBOX")
        assert b">>From quoted" in (tmp_path / file).read_bytes()  # stored mboxrd-quoted
        with SpanReader(tmp_path) as spans:
            assert spans.read(file, offset, length) == raw
            assert spans.read(file, offset, 10) == raw[:10]  # the same file, opened once
    finally:
        await store.aclose()


@pytest.mark.parametrize("name", ["index.sqlite", "../trace", "lock"])
def test_only_message_files_can_be_read(tmp_path, name):
    (tmp_path / "lock").write_bytes(b"1\n")
    with SpanReader(tmp_path) as spans, pytest.raises(StoreError, match="not a message file"):
        spans.read(name, 0, 1)


async def test_many_spans_read_together_are_what_each_reads_alone(tmp_path, monkeypatch):
    # Neighbours come from one pread per run; a gap, another file, an order going back
    # or a run grown too long starts another. Whatever the runs, each message is itself.
    monkeypatch.setattr("mailcoach_server.store.spans._RUN", 4096)
    store = Store.open(tmp_path)
    try:
        store.ensure_folder("INBOX")
        bodies = [b"Subject: m%d\n\nFrom me\n%s\n" % (n, b"x" * (n * 37 % 900))
                  for n in range(40)]
        for n, raw in enumerate(bodies):
            meta = MessageMeta(store.allocate_message_id(), f"<m{n}@t>", "user@localdomain",
                               (), f"m{n}", "", f"<m{n}@t>", 0, 0.0, time.time())
            await store.commit(WritePlan(raw=raw, meta=meta, folders=["INBOX"]))
        spans = [(file, offset, length)
                 for _, _, _, file, offset, length, _ in store.folders.folder_rows("INBOX")]
        (tmp_path / "imap").write_bytes((tmp_path / spans[3][0]).read_bytes())  # a copy
        picked = [*spans[:10], spans[12], spans[11], ("imap", *spans[3][1:]), *spans[13:],
                  spans[0], (spans[5][0], spans[5][1], 5)]
        reads = []
        with SpanReader(tmp_path) as reader:
            monkeypatch.setattr("mailcoach_server.store.spans.os.pread", _counted(reads))
            together = reader.read_many(picked)
            assert together == [reader.read(*span) for span in picked]
        assert together[:10] == bodies[:10] and together[12] == bodies[3]
        assert together[-1] == bodies[5][:5]
        assert 4 < len(reads) - len(picked) < len(picked) // 2  # runs, not one read each
    finally:
        await store.aclose()


def _counted(reads: list):
    pread = os.pread

    def counting(fd: int, length: int, offset: int) -> bytes:
        reads.append((length, offset))
        return pread(fd, length, offset)
    return counting
