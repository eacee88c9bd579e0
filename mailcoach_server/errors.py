"""The exception tree of mailcoach.

    MailcoachError
     ├── ConfigError        a config file or flag is wrong (names file and key)
     ├── StoreError         the data directory cannot be read or written
     ├── SubmitError        a message was refused (carries an SMTP code)
     ├── ProtocolError      a client broke the protocol
     └── AgentError
          └── ModelError    a model call failed (says what and how to fix it)

Mistakes of models and robots become mail; only programmer bugs raise past
the runtime.
"""

from __future__ import annotations

__all__ = [
    "MailcoachError",
    "ConfigError",
    "StoreError",
    "SubmitError",
    "ProtocolError",
    "AgentError",
    "ModelError",
]


class MailcoachError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MailcoachError):
    """A configuration file or command-line value is invalid."""


class StoreError(MailcoachError):
    """The data directory cannot be used."""


class SubmitError(MailcoachError):
    """A message was refused by the postmaster.

    Attributes:
        code: the SMTP reply code (550, 552, 554, ...).
        status: the enhanced status code (RFC 3463), e.g. "5.7.1".
        reason: human-readable text.
    """

    def __init__(self, code: int, status: str, reason: str) -> None:
        super().__init__(f"{code} {status} {reason}")
        self.code = code
        self.status = status
        self.reason = reason

    def smtp_reply(self) -> str:
        return f"{self.code} {self.status} {self.reason}"


class ProtocolError(MailcoachError):
    """A client sent something the protocol does not allow."""


class AgentError(MailcoachError):
    """An agent could not do its work."""


class ModelError(AgentError):
    """A model call failed after retries.

    Attributes:
        retryable: the failure looked transient (rate limit, 5xx, timeout).
        hint: what the user can do about it, e.g. which key to set.
        context_exceeded: the provider said the input is longer than the model takes.
    """

    def __init__(self, message: str, *, retryable: bool = False, hint: str = "",
                 context_exceeded: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.hint = hint
        self.context_exceeded = context_exceeded
