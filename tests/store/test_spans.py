"""Reading stored messages by their span, as the IMAP message cache does."""

from __future__ import annotations

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
