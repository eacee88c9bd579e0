"""The remote shell robot: the shell robot's contract, run by a stub over HTTP.

The command (Subject) and stdin (text/plain body) go as JSON in a POST to
``<url>/run`` of a ``mailcoach shell-stub`` on another machine or in a
container; the answer ``{"exit_code", "output", "timed_out", "seconds"}``
becomes the same reply the local shell robot sends. When the stub cannot
be reached, refuses the token or answers nonsense, the reply is
``Exit Code: 255`` with the url, the error and how to start the stub.

Options: ``url`` (default http://127.0.0.1:8642), ``token`` or
``token_env`` (the variable holding it, default MAILCOACH_STUB_TOKEN),
``timeout`` (seconds the stub may run the command), and as for the local
shell ``attach_max_bytes``, ``approval``, ``approver`` and
``approval_timeout`` (``command_robot.py``: the same flow, the same mail).
Approval requests are kept in ``<data dir>/robots/<address>/approvals.json``
on this side; the stub never sees them. The stub cuts the output; it
also sends the first ``attach_max_bytes`` of it whole, attached as
``stdout.txt`` when the text was cut (a stub too old to send it gives a
reply without). ``X-Attach`` is not read: the files are on the stub's side.

Uses stdlib ``urllib`` in a thread; proxies from the environment are
ignored, since the stub is usually on loopback or a private network.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from typing import Any, ClassVar, Final

from mailcoach_robots import RobotContext
from mailcoach_robots.command_mail import CommandResult, error_reply
from mailcoach_robots.command_robot import (
    ATTACH_MAX_BYTES,
    CommandRobot,
    approvals_from_options,
    is_count,
    is_number,
    option,
    reply_with_files,
    stdout_attachment,
)

__all__ = ["RemoteShellRobot", "StubError", "call_stub"]

DEFAULT_URL: Final = "http://127.0.0.1:8642"
TOKEN_ENV: Final = "MAILCOACH_STUB_TOKEN"
#: exit code of a reply when the command could not be run remotely (as ssh does)
EXIT_REMOTE_FAILED: Final = 255
#: the stub gets this long beyond the command's own limit to answer
_HTTP_SLACK: Final = 15.0
_MAX_RESPONSE: Final = 16 * 1024 * 1024

# No proxies: an http_proxy variable must not route the command elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StubError(Exception):
    """The stub could not be used; the message says why, for the reply."""


def call_stub(
    url: str, command: str, stdin: str, *, token: str | None, timeout: float,
    keep_whole: int = 0,
) -> CommandResult:
    """POST one command to ``<url>/run`` and read the result (blocking).

    Args:
        keep_whole: bytes of a cut output the stub should send back whole.

    Raises:
        StubError: unreachable, refused (401), an HTTP error or an invalid answer.
    """
    fields: dict[str, Any] = {"command": command, "stdin": stdin, "timeout": timeout}
    if keep_whole:
        fields["keep_whole"] = keep_whole
    payload = json.dumps(fields).encode()
    # base64 makes the whole output a third larger
    most = _MAX_RESPONSE + 4 * (keep_whole // 3 + 1)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url.rstrip("/") + "/run", data=payload, headers=headers, method="POST"
    )
    try:
        with _OPENER.open(request, timeout=timeout + _HTTP_SLACK) as response:
            raw = response.read(most + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise StubError(
                f"the stub refused the token (HTTP 401): set {TOKEN_ENV} to the same value "
                "for the stub and for mailcoach (or the robot's token option)"
            ) from None
        raise StubError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise StubError(f"cannot connect: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed url
        raise StubError(f"{type(exc).__name__}: {exc}") from None
    if len(raw) > most:
        raise StubError(f"the answer is larger than {most} bytes")
    try:
        return _result(json.loads(raw), keep_whole)
    except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
        raise StubError(f"invalid answer ({exc}): {raw[:200]!r}") from None


def _result(answer: dict[str, Any], keep_whole: int) -> CommandResult:
    """The stub's JSON answer as a result; the whole output only as much as was asked."""
    whole: bytes | None = None
    encoded = answer.get("whole_output_base64")
    if encoded is not None:
        if not isinstance(encoded, str):
            raise ValueError(f"'whole_output_base64' should be str, got {encoded!r:.80}")
        whole = base64.b64decode(encoded, validate=True)[:keep_whole] if keep_whole else None
    output_bytes = answer.get("output_bytes", 0)
    if not isinstance(output_bytes, int) or isinstance(output_bytes, bool) or output_bytes < 0:
        raise ValueError(f"'output_bytes' should be a count, got {output_bytes!r:.80}")
    return CommandResult(
        exit_code=_field(answer, "exit_code", int),
        output_text=_field(answer, "output", str),
        timed_out=_field(answer, "timed_out", bool),
        seconds=float(answer.get("seconds", 0.0)),
        whole_output=whole,
        output_bytes=max(output_bytes, len(whole or b"")),
    )


def _field(answer: dict[str, Any], name: str, kind: type) -> Any:
    value = answer[name] if name in answer else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name!r} should be {kind.__name__}, got {value!r}")
    return value


def _is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class RemoteShellRobot(CommandRobot):
    """Runs the Subject on a remote ``mailcoach shell-stub`` and mails back the result."""

    kind: ClassVar[str] = "remote-shell"
    options: ClassVar[frozenset[str]] = CommandRobot.options | frozenset(
        {"url", "token", "token_env", "timeout"})

    def __init__(self, context: RobotContext) -> None:
        super().__init__(context)
        self.url: str = option(context, "url", DEFAULT_URL, _is_url, "an http:// url")
        self.timeout: float = option(context, "timeout", 60, is_number, "seconds > 0")
        self._token: str | None = option(
            context, "token", None, lambda v: v is None or isinstance(v, str), "a string"
        )
        self.token_env: str = option(
            context, "token_env", TOKEN_ENV, lambda v: isinstance(v, str) and v, "a variable name"
        )
        self.attach_max_bytes: int = option(context, "attach_max_bytes", ATTACH_MAX_BYTES,
                                            is_count, "a number of bytes")
        # The commands run on the stub's machine: no local directory they could write.
        self.approvals = approvals_from_options(context, workdir=None, run=self.run_approved)

    @property
    def summary(self) -> str:
        approval = ", approval" if self.approvals.policy.active else ""
        return f"{self.kind}, {self.url}{approval}"

    @property
    def token(self) -> str | None:
        """The configured token, else the variable's value now (None: send no token)."""
        return self._token or os.environ.get(self.token_env) or None

    async def execute(self, command: str, stdin: bytes, attach: list[str]) -> EmailMessage:
        """Run ``command`` on the stub now; ``attach`` is not read (the files are there)."""
        try:
            result = await asyncio.to_thread(
                call_stub, self.url, command, stdin.decode("utf-8", "replace"),
                token=self.token, timeout=self.timeout, keep_whole=self.attach_max_bytes,
            )
        except StubError as exc:
            port = urllib.parse.urlsplit(self.url).port or 8642
            return error_reply(
                EXIT_REMOTE_FAILED,
                f"--- error ---\n"
                f"The remote shell at {self.url} could not run the command: {exc}\n\n"
                f"Start the stub where the command should run with:\n"
                f"    mailcoach shell-stub --port {port}\n"
                f"(with {self.token_env} set to the same token on both sides).\n",
            )
        return reply_with_files(result, *stdout_attachment(result))
