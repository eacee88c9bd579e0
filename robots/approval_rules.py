"""Which commands wait for the user's yes: the ``approval`` option of the shell robot.

::

    approval: never            # the default: every command runs at once, as before
    approval: always           # every command from an agent waits for a yes
    approval:                  # rules, read from the top; the first that matches decides
      - run: ["ls", "ls *", "cat *"]
      - ask: "*"
    approval: {run: ["ls *"], ask: ["rm *"]}   # shorthand: the run rules, then the ask rules

Read as a Postfix access table or a firewall is: first match wins, and a
command no rule matches waits for approval (a guard fails closed, as sudo
refuses what no rule allows). Patterns are shell wildcards (``*``, ``?``,
``[...]``, as ``fnmatch``) matched against the whole command line, case
sensitive, blanks collapsed to one space.

A ``run`` rule never lets a line with a shell operator or substitution
through (any of ``; & | < > ( ) $`` and the backquote): ``ls *`` must not
pass ``ls; rm -rf ~``. Such a line goes on to the next rules, so with no
``ask`` rule after it, it waits. Mail from the approver is never held
(``approvals.py``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final, Literal

from mailcoach_server.errors import ConfigError

__all__ = ["ApprovalPolicy", "ApprovalRule"]

#: characters that chain, redirect or substitute: a ``run`` rule never matches a line with one
OPERATORS: Final = frozenset(";&|<>()$`")
_ACTIONS: Final = ("run", "ask")

Action = Literal["run", "ask"]


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    action: Action
    pattern: str

    def matches(self, line: str) -> bool:
        if self.action == "run" and any(char in OPERATORS for char in line):
            return False
        return fnmatchcase(line, self.pattern)

    def __str__(self) -> str:
        return f"{self.action}: {self.pattern!r}"


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """``never``, ``always``, or ordered rules."""

    mode: Literal["never", "always", "rules"] = "never"
    rules: tuple[ApprovalRule, ...] = ()

    @property
    def active(self) -> bool:
        return self.mode != "never"

    def decide(self, command: str) -> tuple[Action, str]:
        """``("run" | "ask", why)`` for a command from an agent."""
        if self.mode == "never":
            return "run", "approval: never"
        if self.mode == "always":
            return "ask", "approval: always"
        line = " ".join(command.split())
        for rule in self.rules:
            if rule.matches(line):
                return rule.action, f"the rule {rule}"
        return "ask", "no rule lets it run"

    @classmethod
    def parse(cls, value: Any, key: str) -> ApprovalPolicy:
        """The policy a config value describes.

        Raises:
            ConfigError: naming ``key`` and what is wrong.
        """
        if value is None or value is False or value == "never":
            return cls()
        if value is True or value == "always":
            return cls("always")
        if isinstance(value, Mapping):
            unknown = set(value) - set(_ACTIONS)
            if unknown:
                raise ConfigError(f"{key}: unknown key(s) {', '.join(map(str, sorted(unknown)))}"
                                  " (run, ask)")
            value = [{action: value[action]} for action in _ACTIONS if action in value]
        if not isinstance(value, Sequence) or isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected never, always or a list of rules "
                              f"such as [{{run: 'ls *'}}, {{ask: '*'}}], got {value!r}")
        rules: list[ApprovalRule] = []
        for index, item in enumerate(value):
            rules.extend(_rules_of(item, f"{key}[{index}]"))
        return cls("rules", tuple(rules))


def _rules_of(item: Any, key: str) -> list[ApprovalRule]:
    if not (isinstance(item, Mapping) and len(item) == 1):
        raise ConfigError(f"{key}: a rule is one of run: PATTERNS or ask: PATTERNS, "
                          f"got {item!r}")
    ((action, patterns),) = item.items()
    if action not in _ACTIONS:
        raise ConfigError(f"{key}: unknown action {action!r} (run or ask)")
    if isinstance(patterns, str):
        patterns = [patterns]
    if not (isinstance(patterns, Sequence) and patterns
            and all(isinstance(p, str) and p.strip() for p in patterns)):
        raise ConfigError(f"{key}.{action}: expected a pattern or a list of patterns, "
                          f"got {patterns!r}")
    return [ApprovalRule(action, " ".join(p.split())) for p in patterns]
