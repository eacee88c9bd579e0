"""Robot plug-ins: programs with a mailbox.

A robot is a small class found by entry point (group ``mailcoach.robots``)
or by dotted path in the config. The runtime owns addressing and threading:
a robot only turns one request into one reply (Subject and body); the
runtime forces ``From``, fills ``To`` with the sender when it is missing and
adds Message-ID, Date, In-Reply-To, References and Auto-Submitted. A reply
that answers another message than the one it is a reply to (the shell's
output after a user's ``yes``) sets its own In-Reply-To and References, and
the runtime keeps them; a Message-ID the robot sets is kept too.

A robot that must speak unprompted (an approval request that expired) uses
``RobotContext.post``, where its home offers one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Post", "Robot", "RobotContext"]

#: sends a message of the robot's own (not a reply); the runtime sets From and stamps it
Post = Callable[[EmailMessage], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RobotContext:
    """What the runtime tells a robot about where it lives.

    Attributes:
        address: the robot's own mail address.
        data_dir: the server's data directory (robots keep files below it).
        options: the robot's options from the config (already a plain dict).
        user: the human user's address ("" where the home does not say).
        post: how the robot sends mail nobody asked for (None where the home has no way).
    """

    address: str
    data_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    user: str = ""
    post: Post | None = None


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

    async def start(self) -> None:
        """Begin background work (timers) once the home runs; called before any mail."""

    async def aclose(self) -> None:
        """Release resources (kill running children, stop timers) at shutdown."""
