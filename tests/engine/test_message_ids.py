"""Message-IDs the postmaster makes: well formed and never the same twice, from any thread."""

from __future__ import annotations

import re
import threading

from mailcoach_server.postmaster import new_message_id

_SHAPE = re.compile(r"<\d{14}\.[0-9a-f]{12}@localdomain>\Z")


def test_message_ids_from_many_threads_are_all_different():
    made: list[list[str]] = [[] for _ in range(8)]

    def make(into: list[str]) -> None:
        into.extend(new_message_id("localdomain") for _ in range(2000))  # > one 4 KiB pool

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [mid for into in made for mid in into]
    assert len(ids) == 16000 and len(set(ids)) == len(ids)
    assert all(_SHAPE.match(mid) for mid in ids), ids[0]
    # the random part is random: all 16 hex digits appear in each position
    for position in range(16, 28):
        assert len({mid[position] for mid in ids}) == 16, position
