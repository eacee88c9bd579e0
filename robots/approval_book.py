"""The approval requests of one robot, kept in a JSON file that survives restarts.

The file is ``<data dir>/robots/<address>/approvals.json``: outside the
work directory, so no command can read or change it (in the sandbox it does
not exist). Each write goes to a temporary file, is fsynced, replaces the
old file and the directory is fsynced: after a crash the file is the old
one or the new one, never half of each. A request is decided once: a
pending one becomes approved, refused or expired, and is kept a while after
(``KEEP_SETTLED``), so a second ``yes`` is told "already approved".

A file that cannot be read is a ``ConfigError`` naming it (nothing is
thrown away); fix or remove it. This module knows nothing about mail
beyond finding a request by the Message-IDs and the token a reply carries.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from mailcoach_server.errors import ConfigError

__all__ = ["KEEP_SETTLED", "ApprovalBook", "Request", "message_ids", "token_in"]

#: seconds a decided request is remembered (for "already approved")
KEEP_SETTLED: Final = 30 * 24 * 3600
#: decided requests remembered at most
MAX_SETTLED: Final = 1000
_TOKEN: Final = re.compile(r"\[approval ([0-9a-f]{8,32})\]")
_MESSAGE_ID: Final = re.compile(r"<[^<>\s]+>")
_STATES: Final = ("pending", "approved", "refused", "expired")


@dataclass(slots=True)
class Request:
    """One command waiting for (or decided by) the approver."""

    token: str
    #: Message-ID of the "Approve:" mail to the approver
    request_id: str
    agent: str
    command: str
    stdin: str
    #: X-Attach paths of the command mail
    attach: list[str]
    #: Message-ID and References of the agent's command mail, for threading the answer
    command_id: str
    command_refs: list[str]
    created: float
    expires: float
    state: str = "pending"
    settled: float | None = None
    reason: str = ""
    #: who decided (the approver's address), or "" for an expiry
    by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        request = cls(**data)
        if request.state not in _STATES or not request.token:
            raise ValueError(f"bad request record {data!r}")
        return request


def token_in(subject: str) -> str | None:
    """The ``[approval TOKEN]`` of a Subject, if it has one."""
    found = _TOKEN.search(subject)
    return found.group(1) if found else None


def message_ids(*values: str | None) -> list[str]:
    """The ``<...>`` Message-IDs in header values, in order."""
    return [m for value in values if value for m in _MESSAGE_ID.findall(value)]


class ApprovalBook:
    """Requests by token, loaded at creation and written after each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: dict[str, Request] = {}
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the approval requests ({exc})") from None
        try:
            records = json.loads(text)["requests"]
            for record in records:
                request = Request.from_json(record)
                self.requests[request.token] = request
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: the approval requests cannot be read ({exc}); "
                              "fix the file or move it away (its pending commands are "
                              "then forgotten)") from None

    def pending(self) -> list[Request]:
        return [r for r in self.requests.values() if r.state == "pending"]

    def find(self, ids: Iterable[str], subject: str) -> Request | None:
        """The request a reply names by Message-ID (In-Reply-To, References) or token."""
        by_id = {r.request_id: r for r in self.requests.values()}
        for message_id in ids:
            if message_id in by_id:
                return by_id[message_id]
        token = token_in(subject)
        return self.requests.get(token) if token else None

    def add(self, request: Request) -> None:
        self.requests[request.token] = request
        self.save()

    def settle(self, request: Request, state: str, *, reason: str = "", by: str = "") -> None:
        """Decide a pending request and write the file."""
        assert request.state == "pending" and state in _STATES[1:]
        request.state, request.reason, request.by = state, reason, by
        request.settled = time.time()
        self.save()

    def save(self) -> None:
        """Write every request durably (temporary file, fsync, rename, fsync of the directory)."""
        self._forget_old()
        data = {"requests": [asdict(r) for r in self.requests.values()]}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".approvals.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(data, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _forget_old(self) -> None:
        now = time.time()
        settled = sorted((r for r in self.requests.values() if r.state != "pending"),
                         key=lambda r: r.settled or 0.0)
        old = [r for r in settled if (r.settled or 0.0) < now - KEEP_SETTLED]
        old += settled[len(old):max(len(old), len(settled) - MAX_SETTLED)]
        for request in old:
            del self.requests[request.token]
