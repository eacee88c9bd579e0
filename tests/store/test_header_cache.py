"""The header cache on a real SQLite file: what it returns, and that no bad file is an error."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat

from mailcoach_server.store.header_cache import MAX_VALUE, CachedHeader, HeaderCache

KEY = (7, 1700000000.25)  # message id, received_at
BLOCK = b"From: a@b\r\nSubject: hi\r\n\r\n"


def cache_in(tmp_path, **kwargs) -> HeaderCache:
    return HeaderCache(tmp_path / "headers.sqlite", **kwargs)


def test_an_entry_comes_back_for_the_same_arrival_time_and_only_for_it(tmp_path):
    cache = cache_in(tmp_path)
    cache.put([(KEY, CachedHeader(2100, BLOCK, {"ENVELOPE": b"(NIL)"}))])
    got = cache.get([KEY, (8, 1.0)])
    assert list(got) == [7]
    assert (got[7].size, got[7].block, got[7].items) == (2100, BLOCK, {"ENVELOPE": b"(NIL)"})
    # Another arrival time for the id: an index rebuilt with other ids, another store in
    # the same directory, an id given again after a crash. Never answered from this entry.
    for other in [(7, 1.5), (7, KEY[1] + 1e-6), (7, KEY[1] - 1)]:
        assert cache.get([other]) == {}, other
    cache.close()
    assert cache_in(tmp_path).get([KEY])[7].block == BLOCK  # kept across opening


def test_the_file_is_private(tmp_path):
    cache = cache_in(tmp_path)
    cache.put([(KEY, CachedHeader(1, BLOCK))])
    assert stat.S_IMODE((tmp_path / "headers.sqlite").stat().st_mode) == 0o600
    cache.close()


def test_items_of_another_code_version_are_not_returned(tmp_path):
    cache_in(tmp_path, items_version=1).put([(KEY, CachedHeader(5, BLOCK, {"ENVELOPE": b"x"}))])
    got = cache_in(tmp_path, items_version=2).get([KEY])
    assert got[7].items == {} and got[7].block == BLOCK  # size and block do not depend on it


def test_values_over_the_limit_are_left_out(tmp_path):
    cache = cache_in(tmp_path)
    huge = b"X-Big: " + b"y" * MAX_VALUE + b"\r\n\r\n"
    cache.put([(KEY, CachedHeader(len(huge), huge, {"BIG": huge, "SMALL": b"s"}))])
    got = cache.get([KEY])[7]
    assert (got.size, got.block, got.items) == (len(huge), None, {"SMALL": b"s"})
    assert (tmp_path / "headers.sqlite").stat().st_size < MAX_VALUE


def test_a_rotted_row_is_a_miss_and_the_others_are_kept(tmp_path):
    cache = cache_in(tmp_path)
    far = (7 + 64 * 5, 2.0)  # ids far apart: rows of their own
    cache.put([(KEY, CachedHeader(1, BLOCK)), (far, CachedHeader(2, BLOCK))])
    cache.close()
    with sqlite3.connect(tmp_path / "headers.sqlite") as db:
        rows = db.execute("SELECT id, data FROM chunk").fetchall()
        assert len(rows) == 2
        chunk, data = min(rows)  # the row of message 7
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x20  # one bit, somewhere in the block
        db.execute("UPDATE chunk SET data = ? WHERE id = ?", (bytes(flipped), chunk))
    assert list(cache.get([KEY, far])) == [far[0]]
    cache.put([(KEY, CachedHeader(1, BLOCK))])  # made again when read again
    assert list(cache.get([KEY, far])) == [7, far[0]]


def test_entries_written_apart_are_all_kept(tmp_path):
    # Neighbouring ids share a row: writing one must keep the others, from any connection.
    first, second = cache_in(tmp_path), cache_in(tmp_path)
    spans = [(n, 1.0) for n in range(1, 200)]
    for n, span in enumerate(spans):
        (first if n % 2 else second).put([(span, CachedHeader(n, BLOCK))])
    assert {m: e.size for m, e in first.get(spans).items()} == {
        span[0]: n for n, span in enumerate(spans)}
    assert first.count() == len(spans)
    first.close()
    second.close()


def test_a_file_that_is_not_a_database_is_rebuilt(tmp_path, caplog):
    path = tmp_path / "headers.sqlite"
    path.write_bytes(b"this is not SQLite " * 500)
    cache = cache_in(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert cache.get([KEY]) == {}  # a miss, not an exception
    assert "rebuilding" in caplog.text
    cache.put([(KEY, CachedHeader(3, BLOCK))])
    assert cache.get([KEY])[7].size == 3
    assert path.read_bytes().startswith(b"SQLite format 3")
    cache.close()


def test_a_truncated_database_is_rebuilt(tmp_path):
    cache = cache_in(tmp_path)
    cache.put([((n, 1.0), CachedHeader(n, BLOCK * 20))
               for n in range(1, 400)])
    cache.close()
    with sqlite3.connect(tmp_path / "headers.sqlite") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / "headers.sqlite"
    with open(path, "r+b") as f:  # keep the first pages, lose the rest
        f.truncate(path.stat().st_size // 3)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.unlink(f"{path}{suffix}")
    cache = cache_in(tmp_path)
    spans = [(n, 1.0) for n in range(1, 400)]
    got = cache.get(spans)  # whatever is readable, or a rebuild: never an exception
    assert all(got[n].size == n for n in got)
    cache.put([(spans[0], CachedHeader(1, BLOCK))])
    assert cache.get(spans[:1])[1].block == BLOCK


def test_a_file_being_written_elsewhere_is_a_miss_and_kept(tmp_path):
    cache = cache_in(tmp_path)
    cache.put([(KEY, CachedHeader(1, BLOCK))])
    other = sqlite3.connect(tmp_path / "headers.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        cache.put([((8, 1.0), CachedHeader(2, BLOCK))])  # no wait, no error
        assert not cache.disabled
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert list(cache.get([KEY, (8, 1.0)])) == [7]  # nothing was thrown away


def test_a_directory_it_cannot_use_turns_the_cache_off(tmp_path, caplog):
    (tmp_path / "headers.sqlite").mkdir()  # in the way, and not removable as a file
    cache = cache_in(tmp_path)
    with caplog.at_level(logging.WARNING):
        for _ in range(6):
            assert cache.get([KEY]) == {}
            cache.put([(KEY, CachedHeader(1, BLOCK))])
    assert cache.disabled
    assert "off until restart" in caplog.text or "cannot remove" in caplog.text
