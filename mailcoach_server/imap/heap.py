"""Giving freed memory back to the system once the last IMAP client has gone.

Serving a big folder or big messages allocates and frees a lot; CPython and
glibc keep freed heap pages for reuse, so the server's RSS would stay at its
peak long after the clients left. glibc's ``malloc_trim`` returns those free
pages (``madvise``), which is what the server asks for, once, when its last
IMAP session closes. Elsewhere (no glibc) it does nothing.

Not here: deciding what to free (the message cache empties itself, ``messages``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["give_back_memory"]


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def give_back_memory() -> None:
    """Return the heap's free pages to the system (glibc; a few ms on a big heap)."""
    if _TRIM is not None:
        _TRIM(0)
