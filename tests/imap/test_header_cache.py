"""Header FETCH through the persistent header cache, over a real server and imaplib.

The first FETCH of a folder reads the messages and fills ``headers.sqlite``; every
later one (same session, a new one, after a restart) must answer the same bytes,
also when the file was deleted, is garbage or has an entry that rotted, and for
messages whose headers are hostile (huge, malformed, 8-bit, no blank line).
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from mailcoach_server.imap.fetch import ITEMS_VERSION
from mailcoach_server.store.header_cache import MAX_VALUE, CachedHeader, HeaderCache
from tests.imap_server.conftest import ThreadedServer
from tests.support import make_config

HOSTILE = {
    "plain": b"From: Ann <ann@example.org>\r\nTo: user@localdomain\r\nSubject: plain\r\n"
             b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <p@x>\r\n\r\nbody\r\n",
    "multipart": b"From: b@x\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
                 b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
                 b"Content-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Type: text/html\r\n\r\n"
                 b"<p>two</p>\r\n--b--\r\n",
    "huge header": b"".join(b"X-Filler-%d: %s\r\n" % (n, b"z" * 100) for n in range(900))
                   + b"Subject: after the filler\r\nFrom: c@x\r\n\r\nbody\r\n",
    "huge field": b"From: d@x\r\nSubject: " + b"s" * (MAX_VALUE + 10) + b"\r\n\r\nbody\r\n",
    "malformed": b"no colon on this line\r\n\tcontinuation with no field\r\nFrom: e@x\r\n"
                 b"Subject:no space\r\nSUBJECT  : spaced name\r\nTo: <<broken@@\r\n\r\nbody\r\n",
    "8-bit": b"From: J\xf6rg <j@x>\r\nSubject: caf\xe9 \xff\xfe\r\nTo: \xc3\xa9@x\r\n\r\n\xe9\r\n",
    "no blank line": b"From: f@x\r\nSubject: a header and nothing else\r\n",
    "blank first": b"\r\nFrom: not-a-header@x\r\n",
    "bare CR and LF": b"Subject: a\rb\nFrom: g@x\n\nbody\r",
    "percent": b"X-%A: percent field\r\nSubject: p\r\n\r\nx\r\n",
}
FETCHES = [
    "(UID FLAGS RFC822.SIZE INTERNALDATE "
    "BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])",  # bench/imap_fetch.py's
    "(ENVELOPE BODY.PEEK[HEADER] RFC822.SIZE)",
    "(BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT X-FILLER-1)])",
    '(BODY.PEEK[HEADER.FIELDS ("X-%A" subject)]<0.20> RFC822.HEADER)',
    "(UID BODY.PEEK[HEADER.FIELDS (subject from)])",  # the same set as the first, another order
]


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n|\r", b"\r\n", raw)


def answers(client) -> list[bytes]:
    """Each FETCH of ``FETCHES`` over the folder, as the bytes imaplib read."""
    out = []
    for items in FETCHES:
        typ, data = client.uid("FETCH", "1:*", items)
        assert typ == "OK", data
        wire = b"".join(part if isinstance(part, bytes) else part[0] + b"\r\n" + part[1]
                        for part in data)
        out.append(re.sub(rb" ?\\Recent", b"", wire))  # recent only for the first session
    return out


def fill(server: ThreadedServer) -> None:
    client = server.imap()
    for raw in HOSTILE.values():
        typ, data = client.append("INBOX", None, None, raw)
        assert typ == "OK", data
    client.select("INBOX")
    client.logout()


def opened(server: ThreadedServer):
    client = server.imap()
    assert client.select("INBOX")[0] == "OK"
    return client


def cache_path(server: ThreadedServer) -> Path:
    return server.config.data_dir / "headers.sqlite"


def entries(path: Path) -> int:
    cache = HeaderCache(path)
    try:
        return cache.count()
    finally:
        cache.close()


def closed(client, path: Path) -> None:
    """LOGOUT, then wait (bounded) for the server to close the cache file: its session
    ends after the client has its BYE, and SQLite removes the WAL file on the last close."""
    client.logout()
    wal = Path(f"{path}-wal")
    for _ in range(400):
        # the WAL file goes before the closing connection lets go of its lock: a read then
        # is busy (a miss, as the cache reads with no wait), so also wait to take the lock
        if not wal.exists() and _unlocked(path):
            return
        time.sleep(0.025)
    raise AssertionError("the server kept the header cache open after its last client left")


def _unlocked(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN EXCLUSIVE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


def remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def check_cold(cold: list[bytes]) -> None:
    """What the first answers must say of every message, worked out here from the raw bytes."""
    first, second = cold[0], cold[1]
    for name, raw in HOSTILE.items():
        wire = crlf(raw)
        assert b"RFC822.SIZE %d " % len(wire) in first, name
        blank = wire.find(b"\r\n\r\n")
        header = wire[:2] if wire.startswith(b"\r\n") else (
            wire if blank < 0 else wire[: blank + 4])
        assert b"BODY[HEADER] {%d}\r\n" % len(header) + header in second, name
    assert b"Subject: after the filler\r\n" in first
    assert b"X-%A: percent" in cold[3]
    assert b"Subject: caf\xe9 \xff\xfe\r\n" in first  # 8-bit bytes as they came


def test_answers_are_the_same_cold_warm_deleted_and_corrupted(tmp_path):
    config = make_config(tmp_path)
    server = ThreadedServer(config).start()
    try:
        fill(server)
        client = opened(server)
        cold = answers(client)  # read from the messages: the cache is empty
        check_cold(cold)
        assert answers(client) == cold  # warm, same session
        path = cache_path(server)
        closed(client, path)  # the last client: the cache file is closed
        assert entries(path) == len(HOSTILE)  # every message has an entry, huge ones too
        client = opened(server)
        assert answers(client) == cold  # warm, a new session
        closed(client, path)
        remove(path)  # deleted between sessions
        client = opened(server)
        assert answers(client) == cold
        assert answers(client) == cold
        closed(client, path)
        assert entries(path) == len(HOSTILE)  # made again
    finally:
        server.stop()

    remove(path)
    path.write_bytes(b"\x00garbage, not SQLite\xff" * 300)  # while the server is down
    server = ThreadedServer(config).start()
    try:
        client = opened(server)
        assert answers(client) == cold  # rebuilt, answered from the messages
        assert answers(client) == cold  # and from the rebuilt cache
        closed(client, path)
        assert entries(path) == len(HOSTILE)
        db = sqlite3.connect(path)
        with db:  # rot in every row: each entry a miss
            for chunk, data in db.execute("SELECT id, data FROM chunk").fetchall():
                rotted = bytearray(data)
                rotted[-3] ^= 0x01
                db.execute("UPDATE chunk SET data = ? WHERE id = ?", (bytes(rotted), chunk))
        db.close()  # closed, as the server's file must be after its last client
        assert entries(path) == 0
        client = opened(server)
        assert answers(client) == cold
        closed(client, path)
        assert entries(path) == len(HOSTILE)  # written again
    finally:
        server.stop()


def test_a_warm_header_fetch_is_answered_from_the_cache(tmp_path):
    # Proof that the cache is what answers: an entry changed behind the server's back
    # (valid, for the same arrival time) shows in the next FETCH, and no other FETCH sees it.
    server = ThreadedServer(make_config(tmp_path)).start()
    try:
        fill(server)
        client = opened(server)
        before = answers(client)
        closed(client, cache_path(server))
        store = server.server.store
        ((_, message, _, _, _, _, received),) = [
            row for row in store.folders.folder_rows("INBOX") if row[0] == 1]
        key = (message, received)
        cache = HeaderCache(cache_path(server), items_version=ITEMS_VERSION)
        entry = cache.get([key])[message]
        planted = b"Subject: planted\r\n\r\n"
        cache.put([(key, CachedHeader(entry.size, planted, {}))])  # no items: made again
        cache.close()
        client = opened(server)
        typ, data = client.uid("FETCH", "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and data[0][1] == b"Subject: planted\r\n\r\n"
        typ, data = client.uid("FETCH", "2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1] == b"Subject: parts\r\n\r\n"
        after = answers(client)
        assert b"BODY[HEADER] {20}\r\nSubject: planted\r\n\r\n" in after[1]
        assert b'ENVELOPE (NIL "planted" NIL' in after[1]  # made again, from what it holds
        assert after[1].split(b")2 (", 1)[1] == before[1].split(b")2 (", 1)[1]  # the others
        typ, data = client.uid("FETCH", "1", "(BODY.PEEK[])")  # the body: from the message
        assert typ == "OK" and data[0][1] == crlf(HOSTILE["plain"])
        client.logout()
    finally:
        server.stop()


def test_the_header_block_is_kept_only_once_a_client_asks_for_it(tmp_path):
    server = ThreadedServer(make_config(tmp_path)).start()
    try:
        fill(server)
        store = server.server.store
        keys = [(m, r) for _, m, _, _, _, _, r in store.folders.folder_rows("INBOX")]
        client = opened(server)
        fields = client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        closed(client, cache_path(server))
        cache = HeaderCache(cache_path(server), items_version=ITEMS_VERSION)
        got = cache.get(keys)
        assert len(got) == len(HOSTILE) and {e.block for e in got.values()} == {None}
        cache.close()
        client = opened(server)
        assert client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])") == fields
        header = client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER])")  # from the messages
        assert header[1][0][1] == crlf(HOSTILE["plain"]).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        closed(client, cache_path(server))
        got = cache.get(keys)
        kept = {m for m, e in got.items() if e.block is not None}
        assert len(kept) == len(HOSTILE) - 2  # all but the two over MAX_VALUE
        client = opened(server)
        assert client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER])") == header  # from the cache
        client.logout()
        cache.close()
    finally:
        server.stop()


def _fetched(client, items: str, *, uid: bool = True) -> dict[int, bytes]:
    """``[UID] FETCH 1:* items`` as {sequence number: the response, literal inlined}."""
    typ, data = client.uid("FETCH", "1:*", items) if uid else client.fetch("1:*", items)
    assert typ == "OK", data
    out, current = {}, b""
    for part in data:
        current += part[0] + b"\r\n" + part[1] if isinstance(part, tuple) else part
        if current.endswith(b")"):
            out[int(current.split(b" ", 1)[0])] = current
            current = b""
    return out


def test_a_header_fetch_from_entries_says_what_one_from_the_messages_says(tmp_path):
    # More than a batch (256): the second FETCH is answered from the entries alone; then
    # a keyword set and a message expunged by another session, which the next FETCH
    # must show and still answer for (RFC 3501 §7.4.1): that batch from its messages.
    server = ThreadedServer(make_config(tmp_path)).start()
    try:
        writer = server.imap()
        for n in range(300):
            assert writer.append("INBOX", None, None, crlf(
                b"From: a@b\nSubject: m%d\nX-N: %d\n\nbody %d\n" % (n, n, n)))[0] == "OK"
        reader = opened(server)  # the first to see them: \Recent for it alone
        first = _fetched(reader, FETCHES[0])
        assert len(first) == 300 and b"\\Recent" in first[1] and b"Subject: m299" in first[300]
        assert _fetched(reader, FETCHES[0]) == first
        subjects = [b"Subject: m%d\r\n\r\n" % n for n in range(300)]
        assert _fetched(reader, "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])") == {
            n + 1: b"%d (UID %d BODY[HEADER.FIELDS (SUBJECT)] {%d}\r\n%s)" % (
                n + 1, n + 1, len(subject), subject) for n, subject in enumerate(subjects)}
        assert writer.select("INBOX")[0] == "OK"
        assert writer.store("3", "+FLAGS.SILENT", "($Label1)")[0] == "OK"
        assert reader.noop()[0] == "OK"  # the other session's flags and FLAGS come here
        assert b"$Label1" in reader.untagged_responses.pop("FLAGS")[-1]
        reader.untagged_responses.clear()
        assert writer.store("280", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
        assert writer.expunge()[0] == "OK"
        third = _fetched(reader, FETCHES[0], uid=False)  # by number: no EXPUNGE meanwhile
        assert "EXPUNGE" not in reader.untagged_responses
        assert third[3] == first[3].replace(b"FLAGS (\\Recent)", b"FLAGS ($Label1 \\Recent)")
        # expunged elsewhere: still answered, with the flags it was last told of
        assert third[280] == first[280].replace(b"FLAGS (\\Recent)", b"FLAGS (\\Deleted \\Recent)")
        assert {seq: line for seq, line in third.items() if seq not in (3, 280)} == {
            seq: line for seq, line in first.items() if seq not in (3, 280)}
        # New mail the cache has not seen: a small one is made alone from its message
        # inside a batch answered from entries; a big one (its line would be streamed)
        # sends that batch the usual way. Either way the same lines.
        assert reader.noop()[0] == "OK"  # the EXPUNGE of 280 is told now
        before = _fetched(reader, FETCHES[0], uid=False)
        assert len(before) == 299
        for subject, body in ((b"new small", b"small\n"), (b"new big", b"x" * 99 + b"\n")):
            if subject == b"new big":
                body *= 12_000  # 1.2 MB: over the size a line is streamed at
            assert writer.append("INBOX", None, None, crlf(
                b"From: a@b\nSubject: %s\n\n%s" % (subject, body)))[0] == "OK"
            assert reader.noop()[0] == "OK"
            now = _fetched(reader, FETCHES[0], uid=False)
            assert {seq: now[seq] for seq in before} == before
            (added,) = set(now) - set(before)
            assert b"Subject: " + subject + b"\r\n" in now[added], now[added]
            assert b"RFC822.SIZE %d " % len(crlf(b"From: a@b\nSubject: %s\n\n%s" % (
                subject, body))) in now[added]
            assert _fetched(reader, FETCHES[0], uid=False) == now  # now from the cache
            before = now
        writer.logout()
        reader.logout()
    finally:
        server.stop()
