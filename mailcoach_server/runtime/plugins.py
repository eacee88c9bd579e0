"""Finding robot classes: entry points (group ``mailcoach.robots``) or a dotted path.

Built-in robots register the same way as third-party ones, in
``pyproject.toml``; a config may also name ``package.module:Class``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from mailcoach_robots import Post, Robot, RobotContext

from ..config import RobotSpec
from ..errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "load_robot", "robot_class"]

ENTRY_POINT_GROUP = "mailcoach.robots"


def robot_class(kind: str) -> type[Robot]:
    """The class for ``kind``: an entry point name, or ``module:Class``."""
    if ":" in kind:
        module_name, _, attribute = kind.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"robot kind {kind!r}: cannot load it ({exc})") from None
    else:
        matches = entry_points(group=ENTRY_POINT_GROUP, name=kind)
        if not matches:
            known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise ConfigError(f"unknown robot kind {kind!r} (installed: {', '.join(known)}; "
                              "or give package.module:Class)")
        found = next(iter(matches)).load()
    if not (isinstance(found, type) and issubclass(found, Robot)):
        raise ConfigError(f"robot kind {kind!r} is not a mailcoach_robots.Robot subclass")
    return found


def load_robot(spec: RobotSpec, data_dir: Path, *, user: str = "",
               post: Post | None = None) -> Robot:
    """Instantiate the robot a config entry describes, checking its options.

    ``user`` and ``post`` go to its ``RobotContext`` (who approves, how it
    mails unprompted) where the home has them.
    """
    cls = robot_class(spec.kind)
    unknown = set(spec.options) - set(cls.options)
    if unknown:
        raise ConfigError(
            f"robots.{spec.address}: unknown option(s) {', '.join(sorted(unknown))} for kind "
            f"{spec.kind} (known: {', '.join(sorted(cls.options)) or 'none'})"
        )
    return cls(RobotContext(spec.address, data_dir, dict(spec.options), user=user, post=post))
