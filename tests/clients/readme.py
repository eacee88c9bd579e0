"""The README's mail-client section, read by the tests that follow it.

Snippets are the indented blocks under a client's bullet; the tests run
exactly what a reader would copy, with only the host-specific parts
(port, password file, local paths) replaced where they must be.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["block_after", "client_bullet", "client_section", "snippet", "with_ports"]

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Reading mail in a mail client (IMAP)"


def client_section() -> str:
    text = README.read_text("utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:end if end >= 0 else None]


def client_bullet(client: str) -> str:
    """The text of the ``- **client**`` bullet, up to the next bullet or paragraph."""
    section = client_section()
    match = re.search(rf"^- \*\*{re.escape(client)}\*\*.*?(?=^- \*\*|^\S)", section + "\nEND",
                      re.M | re.S)
    assert match, f"README has no bullet for {client}"
    return match.group(0)


def snippet(client: str, index: int = 0) -> str:
    """The ``index``-th indented code block of ``client``'s bullet, dedented."""
    blocks = re.findall(r"\n\n((?:(?: {6}.*)?\n)+)", client_bullet(client))
    code = [b for b in blocks if b.strip()]
    assert len(code) > index, f"README: {client} has no snippet {index}"
    lines = [line[6:] for line in code[index].splitlines()]
    return "\n".join(lines).strip("\n") + "\n"


def block_after(marker: str) -> str:
    """The first 4-space-indented block after the paragraph holding ``marker``, dedented."""
    text = README.read_text("utf-8")
    start = text.index(marker)
    match = re.search(r"\n\n((?: {4}.*\n|\n)+)", text[start:])
    assert match, f"README: no code block after {marker!r}"
    lines = [line[4:] for line in match.group(1).splitlines()]
    return "\n".join(lines).strip("\n") + "\n"


def with_ports(text: str, **ports: int) -> str:
    """``text`` with the README's default ports replaced; each must be there to replace."""
    defaults = {"imap": "1143", "smtp": "2525"}
    for name, port in ports.items():
        assert defaults[name] in text, f"README snippet lost its {name} port"
        text = text.replace(defaults[name], str(port))
    return text
