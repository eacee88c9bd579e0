"""LIST on the biggest folder tree the limits allow: how long the event loop is busy.

    python bench/imap_list.py [--runs 20]

Fills a fresh store with ``MAX_FOLDERS`` folders of the user's own, in
chains ``MAX_FOLDER_DEPTH`` levels deep whose full names are close to
``MAX_FOLDER_NAME`` bytes (the worst tree CREATE accepts), beside the default parties'
``Agents/...``. Then times, median and max of ``--runs``:

* ``LIST "" "*"`` and ``LSUB "" "*"`` as one call of the IMAP layer's
  ``list_folders`` (the time the event loop cannot serve anyone else);
* the same ``LIST "" "*"`` over the wire with imaplib against a server in
  this process (includes formatting, the socket and the client's parsing);
* ``LIST "" "*a*a*a*a*a*a*b"``, a pattern that makes a backtracking matcher
  crawl (linear here).

Target: under 100 ms each (issue 10: a 3,000-level folder made every LIST
take 43-59 s and blocked the loop meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import require_install

require_install()
from mailcoach_server.app import running  # noqa: E402
from mailcoach_server.config import load_config  # noqa: E402
from mailcoach_server.imap.folders import (  # noqa: E402
    MAX_FOLDER_DEPTH,
    MAX_FOLDER_NAME,
    MAX_FOLDERS,
)
from mailcoach_server.imap.listing import list_folders  # noqa: E402


def worst_tree() -> list[str]:
    """``MAX_FOLDERS`` names: chains of ``MAX_FOLDER_DEPTH`` levels, ~``MAX_FOLDER_NAME`` bytes."""
    level = (MAX_FOLDER_NAME - MAX_FOLDER_DEPTH) // MAX_FOLDER_DEPTH
    names: list[str] = []
    chain = 0
    while len(names) < MAX_FOLDERS:
        parts = [f"c{chain:04d}".ljust(level, "a")]
        for depth in range(1, MAX_FOLDER_DEPTH):
            parts.append(f"l{depth:02d}".ljust(level, "a"))
        for depth in range(1, MAX_FOLDER_DEPTH + 1):
            if len(names) < MAX_FOLDERS:
                names.append("/".join(parts[:depth]))
        chain += 1
    assert max(len(n.encode()) for n in names) <= MAX_FOLDER_NAME
    return names


def timed(run, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples)


async def main(runs: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="mailcoach-bench-"))
    path = workdir / "bench.yaml"
    path.write_text(json.dumps({"data_dir": str(workdir / "data"), "smtp": {"port": 0},
                                "imap": {"port": 0}}))
    async with running(load_config(path)) as server:
        store = server.store
        names = worst_tree()
        for name in names:  # through the store's own operation, as CREATE does
            await store.folders.create_folder(name)
        count = len(list_folders(store, "", ["*"]))
        print(f"tree: {len(names)} folders of the user's own, depth {MAX_FOLDER_DEPTH}, "
              f"names up to {max(len(n.encode()) for n in names)} bytes; LIST * gives {count}")
        for label, run in [
            ('list_folders LIST "" "*"', lambda: list_folders(store, "", ["*"])),
            ('list_folders LSUB "" "*"', lambda: list_folders(store, "", ["*"], lsub=True)),
            ('list_folders LIST "" "*a*a*a*a*a*a*b"',
             lambda: list_folders(store, "", ["*a*a*a*a*a*a*b"])),
        ]:
            median, worst = timed(run, runs)
            print(f"{label:40s} median {median:7.1f} ms   max {worst:7.1f} ms")
        host, port = server.imap_address

        def over_the_wire() -> tuple[float, float]:
            client = imaplib.IMAP4(host, port)
            client.login("user@localdomain", server.credentials.password)
            result = timed(lambda: client.list('""', "*"), runs)
            client.logout()
            return result

        median, worst = await asyncio.to_thread(over_the_wire)
        label = 'imaplib LIST "" "*" (round trip)'
        print(f"{label:40s} median {median:7.1f} ms   max {worst:7.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
