"""Robot plug-ins: programs with a mailbox.

A robot is a small class found by entry point (group ``mailcoach.robots``)
or by dotted path in the config. The runtime owns addressing and threading:
a robot only turns one request into one reply (Subject and body); the
runtime forces ``From``, fills ``To`` with the sender when it is missing and
adds Message-ID, Date, In-Reply-To, References and Auto-Submitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Robot", "RobotContext"]


@dataclass(frozen=True, slots=True)
class RobotContext:
    """What the runtime tells a robot about where it lives.

    Attributes:
        address: the robot's own mail address.
        data_dir: the server's data directory (robots keep files below it).
        options: the robot's options from the config (already a plain dict).
    """

    address: str
    data_dir: Path
    options: dict[str, Any] = field(default_factory=dict)


class Robot:
    """Base class of robots. Subclasses set ``kind`` and implement ``handle``.

    ``handle`` is called once per message sent *To* the robot, serially for
    one robot address. Return the reply, or None for no reply. Raising is a
    programmer error: the runtime logs it and mails the sender a short note.
    """

    kind: ClassVar[str] = ""
    #: Option names accepted in the config; anything else is a ConfigError.
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, context: RobotContext) -> None:
        self.context = context

    @property
    def summary(self) -> str:
        """What the banner shows after the address, e.g. ``shell, sandbox: bwrap``."""
        return self.kind

    async def handle(self, message: EmailMessage) -> EmailMessage | None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release resources (kill running children) at shutdown."""
