"""How the console prints a message: separator, headers, body; colours on a terminal."""

from __future__ import annotations

from email.message import Message

from ..mailtext import text_of
from ..postmaster import decoded_header

__all__ = ["Palette", "format_message"]

_SHOWN = ("From", "To", "Cc", "Subject", "Date", "X-Hint-Model", "X-Rollback", "X-Pop-Shell",
          "X-Expect", "X-Drop", "X-Mailcoach-Error", "M-Model", "M-Tokens-Input",
          "M-Tokens-Output", "M-Cost")


class Palette:
    def __init__(self, color: bool) -> None:
        on = color
        self.sep = "\033[95m" if on else ""
        self.name = "\033[94m" if on else ""
        self.value = "\033[92m" if on else ""
        self.body = "\033[93m" if on else ""
        self.reset = "\033[0m" if on else ""


def format_message(message: Message, palette: Palette, width: int = 40) -> str:
    p = palette
    lines = [f"{p.sep}From {'-' * width}{p.reset}"]
    for name in _SHOWN:
        value = message.get(name)
        if value is not None:
            lines.append(f"{p.name}{name}: {p.value}{decoded_header(str(value))}{p.reset}")
    lines.append("")
    lines.append(f"{p.body}{text_of(message).rstrip()}{p.reset}")
    lines.append("")
    return "\n".join(lines)
