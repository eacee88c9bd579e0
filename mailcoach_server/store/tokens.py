"""Tokens a stored message cost, read once from its header: the index's ``tokens`` column.

Every message a model wrote carries ``M-Tokens-Input`` and ``M-Tokens-Output``.
Only model-written mail of this server counts: the postmaster's own ``Received``
line (always the first header) says ``with local (agent)`` for it, which a
sender cannot forge and which history loaded with ``-m`` (``local (memory)``)
and cloned memories (the ``copies`` file) do not have.

The store calls :func:`tokens_of` at commit (and once per old message when it
migrates an index without the column), so a token budget is a sum over the
index, as the USD budget sums ``cost``.

Not here: budgets themselves (``runtime.budgets``).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["HEAD_PROBE", "tokens_of"]

#: Bytes read from a message to find its header when migrating (a longer header is read whole).
HEAD_PROBE: Final = 64 * 1024

_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
# postmaster.prepare stamps "Received: from ... by <domain> (mailcoach) with local (agent);"
_AGENT_STAMP: Final = re.compile(rb"\AReceived:[^\n]*\(mailcoach\) with local \(agent\)",
                                 re.IGNORECASE)
_TOKENS: Final = re.compile(rb"^M-Tokens-(?:Input|Output):[ \t]*(\d{1,12})[ \t]*\r?$",
                            re.IGNORECASE | re.MULTILINE)


def tokens_of(raw: bytes) -> int:
    """Input + output tokens a stored message cost; 0 unless a model of ours wrote it."""
    if not _AGENT_STAMP.match(raw):  # nearly every message: no header scan at all
        return 0
    match = _HEADER_END.search(raw)
    head = raw[: match.start()] if match else raw
    return sum(int(value) for value in _TOKENS.findall(head))
