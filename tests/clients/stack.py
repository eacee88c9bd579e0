"""``mailcoach serve --debug`` with a scripted model, as a desktop client's test needs it.

The model plays an agent that asks the shell: any mail to ``swe1@localdomain``
makes it mail ``shell@localdomain`` a command whose output (``ROUND-TRIP-42``)
only a shell can produce, and the shell's answer makes it write to the user
with that output. A reply holding ``ROUND-TRIP-42`` has therefore been through
the whole round trip. ``--debug`` puts the IMAP and SMTP dialogues in the
server's log, which the tests read to see what a client did.
"""

from __future__ import annotations

import ast
import imaplib
import smtplib
from email.message import Message
from pathlib import Path
from typing import Any

from tests.fakellm import ScriptedModelServer
from tests.support import ServerProcess, config_data, mbox_messages, write_config

__all__ = ["ROUND_TRIP_OUTPUT", "MailStack", "USER"]

USER = "user@localdomain"
ROUND_TRIP_OUTPUT = "ROUND-TRIP-42"
_COMMAND = "echo ROUND-TRIP-$((6*7))"


def _agent(body: dict[str, Any]) -> str:
    last = str(body["messages"][-1]["content"])
    if ROUND_TRIP_OUTPUT in last:  # the shell's answer: tell the user
        return f"To: {USER}\nSubject: shell answer\n\nThe shell printed {ROUND_TRIP_OUTPUT}.\n"
    return f"To: shell@localdomain\nSubject: {_COMMAND}\n\n"


class MailStack:
    """A scripted model and a ``mailcoach serve`` subprocess on free ports."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.model = ScriptedModelServer()
        self.model.responder = _agent
        self.server: ServerProcess | None = None

    def start(self) -> MailStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.model.start()
        config = write_config(self.workdir / "mailcoach.yaml",
                              config_data(self.data, self.model.spec()))
        self.server = ServerProcess(config, "--debug").start()
        return self

    def stop(self) -> None:
        try:
            if self.server is not None and self.server.proc is not None \
                    and self.server.proc.poll() is None:
                self.server.stop()
        finally:
            self.model.close()

    def __enter__(self) -> MailStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def password(self) -> str:
        return (self.data / "login").read_text().strip()

    @property
    def imap_port(self) -> int:
        assert self.server is not None
        return self.server.imap_port

    @property
    def smtp_port(self) -> int:
        assert self.server is not None
        return self.server.smtp_port

    def log(self) -> str:
        """The server's log so far: with ``--debug``, every IMAP and SMTP line."""
        assert self.server is not None
        return self.server.stderr()

    def errors(self) -> list[str]:
        """Lines where the server logged an error or a traceback (litellm's debug chatter aside)."""
        return [line for line in self.log().splitlines()
                if line.startswith("Traceback (most recent call last)")
                or " ERROR mailcoach" in line]

    def imap_commands(self) -> list[str]:
        """What IMAP clients sent, one line each without its tag (credentials are redacted)."""
        commands = []
        for line in self.log().splitlines():
            _, sep, wire = line.partition(" -->| ")
            if not sep or " mailcoach.imap: " not in line:
                continue
            raw = ast.literal_eval(wire)  # the log shows the bytes' repr
            for command in raw.decode("utf-8", "replace").splitlines():
                commands.append(command.partition(" ")[2])
        return commands

    def imap(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=20)
        client.login(USER, self.password)
        return client

    def send(self, raw: bytes, to: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=20) as smtp:
            smtp.login(USER, self.password)
            smtp.sendmail(USER, to, raw)

    def mbox(self, address: str) -> list[Message]:
        return mbox_messages(self.data / f"{address}.mbox")

    def folder_message_ids(self, folder: str) -> list[str]:
        """The Message-ID of every message in ``folder``, read over IMAP."""
        client = self.imap()
        try:
            typ, count = client.select(f'"{folder}"', readonly=True)
            assert typ == "OK", folder
            if count == [b"0"]:
                return []
            typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            ids = []
            for item in data:
                if isinstance(item, tuple):
                    value = item[1].decode().partition(":")[2].strip()
                    ids.append(value)
            return ids
        finally:
            client.logout()

    def uid_of(self, folder: str, message_id: str) -> int:
        """The UID of the message with ``message_id`` in ``folder``, read over IMAP."""
        client = self.imap()
        try:
            typ, _ = client.select(f'"{folder}"', readonly=True)
            assert typ == "OK", folder
            typ, data = client.uid("SEARCH", "HEADER", "Message-ID", f'"{message_id}"')
            assert typ == "OK" and data[0], (folder, message_id)
            [uid] = data[0].split()
            return int(uid)
        finally:
            client.logout()
