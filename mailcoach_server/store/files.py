"""The data directory's files: private modes, party file paths, appends that can be undone.

Mail is private: the directory is 0700 and every file the store writes is
0600, from the moment it is created (``os.open`` with the mode, never a
later chmod), and looser modes left by older versions are tightened at
open. A party's file name comes from ``address_file_name`` and is checked
again here (one name, inside the directory, short enough), so no address,
whatever path it took, can make the store write elsewhere.

Not here: what goes in the files (``store``, ``mbox``).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import BinaryIO

from ..addresses import MAX_FILE_NAME, address_file_name
from ..errors import StoreError

__all__ = [
    "DIR_MODE", "FILE_MODE", "open_append", "open_new", "party_path", "private_dir",
    "truncate_to",
]

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


@functools.lru_cache(maxsize=1024)  # asked for each party of each message, on two threads
def party_path(data_dir: Path, address: str) -> Path:
    """``<data dir>/<encoded address>.mbox``; StoreError if that would not be a plain file name."""
    name = address_file_name(address)
    path = data_dir / name
    if (not address or "/" in name or "\0" in name or name.startswith(".")
            or len(name.encode("utf-8", "surrogateescape")) > MAX_FILE_NAME
            or path.parent != data_dir):
        raise StoreError(f"refusing the party address {address[:80]!r}: it does not make a "
                         "safe file name in the data directory")
    return path


def private_dir(data_dir: Path, files: list[str]) -> None:
    """Create ``data_dir`` 0700 (or tighten it) and tighten the store's files to 0600."""
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(data_dir, DIR_MODE)
    for name in files:
        _tighten(data_dir / name, FILE_MODE)
    for path in data_dir.glob("*.mbox"):
        _tighten(path, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    try:
        current = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return
    if current & ~mode:
        try:
            os.chmod(path, mode)
        except OSError as exc:  # not ours (a mounted volume): say so, go on
            log.warning("cannot make %s private (mode %o): %s", path, current, exc.strerror)


def open_append(path: Path) -> BinaryIO:
    """Open for appending, created 0600; the position is the end of the file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    f = os.fdopen(fd, "ab")
    f.seek(0, os.SEEK_END)  # fdopen on O_APPEND starts at 0; tell() must say the size
    return f


def open_new(path: Path) -> BinaryIO:
    """Open empty for writing, 0600 even if a stale file of another mode was there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "wb")


def truncate_to(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (an append that was never acknowledged)."""
    with open(path, "r+b") as f:
        f.truncate(size)
        os.fsync(f.fileno())
