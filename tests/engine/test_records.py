"""The one constructor of each record: header fields, the thread, MessageMeta, system notices.

Pure functions over bytes; the thread lookup is a dict of real ``MessageMeta``
records, as the store's ``find_by_message_id`` hands them out. One test goes
through a real store in ``tmp_path`` and IMAP APPEND on a real socket, so the
callers are checked to use these builders, not only the builders themselves.
"""

from __future__ import annotations

import asyncio
import imaplib

import pytest

from mailcoach_server.mailtext import parse_message, text_of
from mailcoach_server.notices import notice
from mailcoach_server.postmaster import prepare
from mailcoach_server.records import Thread, header_fields, new_meta, resolve_thread
from mailcoach_server.runtime.context import ERROR_HEADER
from tests.support import make_config, serve_in_process

RAW = (
    b"From: Ann <ann@localdomain>\r\n"
    b"To: bob@localdomain, carl@localdomain\r\n"
    b"Cc: carl@localdomain, dee@localdomain\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"  au lait\r\n"
    b"Message-ID: <m3@localdomain>\r\n"
    b"In-Reply-To: <m2@localdomain>\r\n"
    b"References: <m1@localdomain>\r\n <m2@localdomain>\r\n"
    b"\r\n"
    b"Subject: not a header, the body\r\n"
)


def test_header_fields_read_the_header_block_only():
    fields = header_fields(RAW)
    assert fields.sender == "ann@localdomain"
    assert fields.recipients == ("bob@localdomain", "carl@localdomain", "dee@localdomain")
    assert fields.subject == "café au lait"
    assert fields.message_id == "<m3@localdomain>"
    assert fields.in_reply_to == "<m2@localdomain>"
    assert fields.references == ("<m1@localdomain>", "<m2@localdomain>")


@pytest.mark.parametrize("raw", [
    b"", b"no header at all\n", b"From: \xff\xfe <<<\nTo: ,,,\n\n", b"\n\nbody only\n",
    b"From: a@localdomain, b@localdomain\nSubject: =?bogus?x?zz?=\n",
], ids=["empty", "no-colon", "bad-bytes", "no-head", "bad-encoded-word"])
def test_header_fields_of_hostile_input_are_empty_not_an_error(raw):
    fields = header_fields(raw)
    assert fields.message_id == "" and fields.in_reply_to == "" and fields.references == ()
    assert fields.sender in ("", "a@localdomain")
    assert all("@" in r for r in fields.recipients)


def _meta(number, message_id, *, thread, auto_round=0, in_reply_to=""):
    fields = header_fields(
        f"From: ann@localdomain\nTo: bob@localdomain\nMessage-ID: {message_id}\n"
        f"In-Reply-To: {in_reply_to}\n\n".encode())
    return new_meta(fields, id=number, thread=Thread(thread, auto_round), received_at=1.0)


def test_new_meta_copies_the_fields_and_the_thread():
    fields = header_fields(RAW)
    meta = new_meta(fields, id=7, thread=Thread("<m1@localdomain>", 3), cost=0.25,
                    received_at=12.5)
    assert (meta.id, meta.message_id, meta.sender, meta.recipients, meta.subject,
            meta.in_reply_to, meta.thread, meta.auto_round, meta.cost, meta.received_at) == (
        7, "<m3@localdomain>", "ann@localdomain", fields.recipients, "café au lait",
        "<m2@localdomain>", "<m1@localdomain>", 3, 0.25, 12.5)


def test_new_meta_is_received_now_by_default():
    import time
    before = time.time()
    meta = new_meta(header_fields(RAW), id=1, thread=Thread("t", 0))
    assert before <= meta.received_at <= time.time()


def test_a_message_nobody_knows_starts_its_own_thread_or_its_first_reference():
    fields = header_fields(RAW)
    assert resolve_thread(fields, {}.get, auto=False) == Thread("<m1@localdomain>", 0)
    assert resolve_thread(fields, {}.get, auto=True) == Thread("<m1@localdomain>", 1)
    alone = header_fields(b"From: ann@localdomain\nMessage-ID: <solo@localdomain>\n\n")
    assert resolve_thread(alone, {}.get, auto=False) == Thread("<solo@localdomain>", 0)


def test_in_reply_to_names_the_parent_and_auto_mail_counts_rounds():
    known = {"<m2@localdomain>": _meta(2, "<m2@localdomain>", thread="<root>", auto_round=4)}
    fields = header_fields(RAW)
    assert resolve_thread(fields, known.get, auto=True) == Thread("<root>", 5)
    # a human's message keeps the thread and starts the count again
    assert resolve_thread(fields, known.get, auto=False) == Thread("<root>", 0)


def test_rounds_follow_the_later_of_the_parent_and_the_last_reference():
    # A reply to the user answers the user's question (In-Reply-To) but follows the
    # latest known message of References: the rounds count from the larger.
    known = {
        "<q@localdomain>": _meta(1, "<q@localdomain>", thread="<q@localdomain>"),
        "<r@localdomain>": _meta(2, "<r@localdomain>", thread="<q@localdomain>", auto_round=6),
    }
    fields = header_fields(b"From: swe1@localdomain\nMessage-ID: <a@localdomain>\n"
                           b"In-Reply-To: <q@localdomain>\n"
                           b"References: <q@localdomain> <r@localdomain> <unknown@x>\n\n")
    assert resolve_thread(fields, known.get, auto=True) == Thread("<q@localdomain>", 7)


def test_notice_is_a_message_the_postmaster_accepts_with_its_headers_intact():
    subject = "Stopped: é " + "long " * 30  # non-ASCII and longer than a line: encoded, folded
    raw = notice("postmaster@localdomain", "user@localdomain", subject, "Body é\n",
                 message_id="<n1@localdomain>", in_reply_to="<m3@localdomain>",
                 references=("<m1@localdomain>", "<m3@localdomain>"),
                 headers={ERROR_HEADER: "auto-round limit"})
    assert raw.isascii() is False  # the body is 8bit UTF-8, as before
    head = raw.partition(b"\n\n")[0]
    assert b"\r" not in raw and all(len(line) <= 78 for line in head.split(b"\n"))
    sub = prepare(raw, domain="localdomain", max_size=1 << 20, max_hops=30, origin="system")
    assert sub.sender == "postmaster@localdomain"
    assert sub.to == ("user@localdomain",)
    assert sub.subject == " ".join(subject.split())
    assert sub.message_id == "<n1@localdomain>"
    assert sub.in_reply_to == "<m3@localdomain>"
    assert sub.references == ("<m1@localdomain>", "<m3@localdomain>")
    assert sub.message["Auto-Submitted"] == "auto-generated"
    assert sub.message[ERROR_HEADER] == "auto-round limit"
    message = parse_message(sub.raw)
    assert message["From"].addresses[0].display_name == "Mail Delivery System"
    assert text_of(message) == "Body é\n"


def test_notice_without_threading_has_no_threading_headers():
    raw = notice("postmaster@localdomain", "user@localdomain", "s", "b\n",
                 message_id="<n2@localdomain>")
    message = parse_message(raw)
    assert message["In-Reply-To"] is None and message["References"] is None
    assert message["Message-ID"] == "<n2@localdomain>"


def test_notice_refuses_a_line_break_in_a_header():
    with pytest.raises(ValueError):
        notice("postmaster@localdomain", "user@localdomain", "x\nBcc: eve@localdomain", "b\n",
               message_id="<n3@localdomain>")


async def test_imap_append_threads_with_the_one_resolver(tmp_path):
    """APPEND follows References too, as the router does for submitted mail."""
    config = make_config(tmp_path)
    async with serve_in_process(config) as server:
        root = await server.engine.submit(
            b"From: user@localdomain\nTo: swe1@localdomain\nSubject: q\n\nhi\n",
            origin="console", act=False)
        appended = (f"From: user@localdomain\r\nTo: swe1@localdomain\r\n"
                    f"Subject: =?utf-8?q?r=C3=A9?=\r\nMessage-ID: <draft@localdomain>\r\n"
                    f"References: {root.message_id} <unknown@localdomain>\r\n\r\nbody\r\n"
                    ).encode()

        def append() -> str:
            host, port = server.imap_address
            with imaplib.IMAP4(host, port) as client:
                client.login(config.user, server.credentials.password)
                status, _ = client.append("Drafts", "", None, appended)
                return status

        assert await asyncio.to_thread(append) == "OK"
        meta = server.store.find_by_message_id("<draft@localdomain>")
        assert meta is not None
        assert (meta.thread, meta.auto_round, meta.subject, meta.recipients) == (
            root.thread, 0, "ré", ("swe1@localdomain",))
