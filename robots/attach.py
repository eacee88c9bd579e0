"""Files back from the shell: ``X-Attach`` paths read safely out of the work directory.

A command mail may carry ``X-Attach: path`` headers (one path each, relative
to the robot's work directory; an absolute path is taken when it lies inside
it, since the sandbox binds the work directory at its own path). After the
command has run, each file is read by the robot on the host side and
attached to the reply. Refused, each with one line in the reply and never
an exception:

- a path that leaves the work directory, by ``..`` or by a symbolic link
  (links that stay inside are followed);
- anything but a regular file: directories, devices, FIFOs, sockets (checked
  before opening, so a FIFO cannot block the robot and a device is never
  opened);
- a file over the size limit, or attachments over it together.

The file is opened one path component at a time with ``O_NOFOLLOW`` below
a descriptor of the work directory, after the path was resolved, so a link
swapped in after the check (by a leftover background job) is refused, not
followed. This module knows nothing about commands; it reads files.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message
from pathlib import Path, PurePath
from typing import Final

__all__ = ["ATTACH_HEADER", "MAX_ATTACHMENTS", "Attachment", "attach_paths", "attach_to",
           "read_attachments"]

ATTACH_HEADER: Final = "X-Attach"
#: X-Attach headers read from one command mail; more are named and skipped
MAX_ATTACHMENTS: Final = 20
_KINDS: Final = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                 (stat.S_ISSOCK, "a socket"))


@dataclass(frozen=True, slots=True)
class Attachment:
    """One file to attach: its name in the reply and its bytes."""

    filename: str
    data: bytes


class _Refused(Exception):
    """Why a path is not attached (the text of the reply's line)."""


def attach_paths(message: Message) -> list[str]:
    """The ``X-Attach`` values of a command mail, in order, blanks dropped."""
    values = [str(v).strip() for v in message.get_all(ATTACH_HEADER, [])]
    return [v for v in values if v]


def read_attachments(workdir: Path, paths: Sequence[str], *, max_bytes: int,
                     used: int = 0) -> tuple[list[Attachment], list[str]]:
    """Read ``paths`` below ``workdir``; blocking (call it in a thread).

    Args:
        workdir: the resolved work directory.
        max_bytes: the largest file, and the most bytes all attachments may have.
        used: bytes already attached (``stdout.txt``).

    Returns:
        The files read, and one line per path for the reply (attached or why not).
    """
    files: list[Attachment] = []
    lines: list[str] = []
    for index, path in enumerate(paths):
        shown = _shown(path)
        if index >= MAX_ATTACHMENTS:
            lines.append(f"--- not attached: {shown}: more than {MAX_ATTACHMENTS} X-Attach "
                         "headers ---")
            continue
        try:
            data = _read_inside(workdir, path, max_bytes=max_bytes)
            if used + len(data) > max_bytes:
                raise _Refused(f"the attachments together would pass {max_bytes} bytes "
                               "(attach_max_bytes)")
        except _Refused as why:
            lines.append(f"--- not attached: {shown}: {why} ---")
            continue
        used += len(data)
        files.append(Attachment(PurePath(path).name, data))
        lines.append(f"--- attached: {shown} ({len(data)} bytes) ---")
    return files, lines


def attach_to(reply: EmailMessage, files: Sequence[Attachment]) -> None:
    """Add ``files`` to ``reply`` with a type guessed from the name (text as UTF-8 when it is)."""
    for file in files:
        kind, _ = mimetypes.guess_type(file.filename)
        maintype, _, subtype = (kind or "application/octet-stream").partition("/")
        if maintype == "text":
            try:
                reply.add_attachment(file.data.decode("utf-8"), subtype=subtype,
                                     filename=file.filename)
                continue
            except UnicodeDecodeError:
                maintype, subtype = "application", "octet-stream"
        reply.add_attachment(file.data, maintype=maintype, subtype=subtype,
                             filename=file.filename)


def _shown(path: str) -> str:
    """The path as the reply names it: one printable line, not too long."""
    printable = "".join(c if c.isprintable() else "?" for c in path)
    return printable if len(printable) <= 200 else printable[:200] + "..."


def _read_inside(workdir: Path, path: str, *, max_bytes: int) -> bytes:
    if "\0" in path or not path.isprintable():
        raise _Refused("not a usable path (control characters)")
    lexical = Path(os.path.normpath(workdir / path))
    resolved = Path(os.path.realpath(workdir / path))
    if not resolved.is_relative_to(workdir) or resolved == workdir:
        if lexical.is_relative_to(workdir) and lexical != workdir:
            raise _Refused("a symbolic link out of the work directory")
        raise _Refused("outside the work directory")
    return _read_regular(workdir, resolved.relative_to(workdir).parts, max_bytes=max_bytes)


def _read_regular(workdir: Path, parts: Sequence[str], *, max_bytes: int) -> bytes:
    """Open ``parts`` below ``workdir`` without following links, read a regular file."""
    directory = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                dir_fd=directory)
            except OSError as exc:
                raise _Refused(f"cannot open it ({exc.strerror})") from None
            os.close(directory)
            directory = inner
        return _read_file(directory, parts[-1], max_bytes=max_bytes)
    finally:
        os.close(directory)


def _read_file(directory: int, name: str, *, max_bytes: int) -> bytes:
    try:
        before = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        raise _Refused("no such file") from None
    except OSError as exc:
        raise _Refused(f"cannot read it ({exc.strerror})") from None
    _check_kind(before, max_bytes)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY,
                     dir_fd=directory)
    except OSError as exc:
        raise _Refused(f"cannot open it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        now = os.fstat(file.fileno())
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise _Refused("it changed while being read")
        _check_kind(now, max_bytes)
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _Refused(f"over {max_bytes} bytes (attach_max_bytes)")
    return data


def _check_kind(info: os.stat_result, max_bytes: int) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise _Refused("it became a symbolic link while being read")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        raise _Refused(f"{kind}, not a regular file")
    if info.st_size > max_bytes:
        raise _Refused(f"{info.st_size} bytes, over the limit of {max_bytes} (attach_max_bytes)")
