"""A claws-mail 4.1 profile written by hand, and the remote control of a running claws.

What the first-start wizard would write, without the wizard: ``accountrc``
(one IMAP account, SMTP AUTH, no TLS), ``passwordstorerc`` (claws reads a
password that is not ``{...}``-encrypted as plain text when no primary
passphrase is set), ``clawsrc`` (the check interval, no spell checker, no
confirmations) and ``folderlist.xml`` with the local MH mailbox claws insists
on (without a folder list it runs the wizard). All files are
``config_version=4``: without it claws "upgrades" them (the account's
protocol number and the check interval change meaning).

A second ``claws-mail --alternate-config-dir DIR`` hands its flags
(``--compose``, ``--select``, ``--status-full``, ``--exit``) to the running
one over its socket and exits, which is how the tests drive it.
"""

from __future__ import annotations

from pathlib import Path

from tests.clients.desktop import Display, GuiProcess
from tests.conftest import require_tool

__all__ = ["Claws", "write_profile"]

#: enum RecvProtocol of claws 4.x (config_version 4): POP3 0, IMAP4 1
_IMAP4 = 1


def write_profile(config: Path, home: Path, *, imap_port: int, smtp_port: int, password: str,
                  check_seconds: int) -> None:
    config.mkdir(parents=True)
    (home / "Mail").mkdir(parents=True)
    (config / "accountrc").write_text(f"""[Account: 1]
config_version=4
account_name=mailcoach
is_default=1
name=User
address=user@localdomain
protocol={_IMAP4}
receive_server=127.0.0.1
set_imapport=1
imap_port={imap_port}
ssl_imap=0
user_id=user@localdomain
imap_auth_method=0
imap_subsonly=0
smtp_server=127.0.0.1
set_smtpport=1
smtp_port={smtp_port}
ssl_smtp=0
use_smtp_auth=1
smtp_auth_method=0
smtp_user_id=user@localdomain
autochk_use_default=1
""")
    (config / "passwordstorerc").write_text(
        f"[config_version:4]\n\n[account:1]\nrecv {password}\nsend {password}\n")
    (config / "passwordstorerc").chmod(0o600)
    (config / "clawsrc").write_text(f"""[Common]
config_version=4
autochk_newmail=1
autochk_interval={check_seconds}
check_on_startup=1
use_master_passphrase=0
confirm_on_exit=0
warn_queued_on_exit=0
enable_aspell=0
""")
    mailbox = home / "Mail"
    items = "".join(f'<folderitem type="{kind}" name="{name}" path="{name}"/>\n'
                    for kind, name in (("inbox", "inbox"), ("outbox", "sent"), ("queue", "queue"),
                                       ("trash", "trash"), ("draft", "draft")))
    (config / "folderlist.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<folderlist>\n'
        f'<folder type="mh" name="Mailbox" path="{mailbox}" collapsed="0">\n{items}</folder>\n'
        "</folderlist>\n")


class Claws:
    """claws-mail on ``display`` with the profile in ``config``."""

    def __init__(self, display: Display, config: Path, home: Path) -> None:
        self.display = display
        self.config = config
        self.home = home
        self.program = require_tool("claws-mail")
        self.process: GuiProcess | None = None

    def start(self) -> Claws:
        self.process = self.display.launch(
            [self.program, "--alternate-config-dir", str(self.config)],
            self.config.parent / "claws-mail.log", HOME=str(self.home))
        return self

    def remote(self, *args: str) -> str:
        """Hand ``args`` to the running claws (it must be up: else this one would start)."""
        assert self.process is not None and self.process.alive(), self.log()
        result = self.display.run([self.program, "--alternate-config-dir", str(self.config),
                                   *args], HOME=str(self.home))
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def folders(self, *folders: str) -> dict[str, tuple[int, int, int]]:
        """claws' own (new, unread, total) of its IMAP folders (all, or those named)."""
        report = self.remote("--status-full", *(f"#imap/mailcoach/{f}" for f in folders))
        counts = {}
        for line in report.splitlines():
            fields = line.split()
            if len(fields) == 4 and fields[3].startswith("#imap/mailcoach/"):
                new, unread, total = (int(f) for f in fields[:3])
                counts[fields[3].removeprefix("#imap/mailcoach/")] = (new, unread, total)
        return counts

    def status(self, folder: str) -> tuple[int, int, int] | None:
        """claws' own (new, unread, total) for one folder of the account."""
        return self.folders(folder).get(folder)

    def cached(self, folder: str, uid: int) -> Path:
        """Where claws keeps the body of a message it fetched."""
        return self.config / "imapcache" / "127.0.0.1" / "user@localdomain" / folder / str(uid)

    def log(self) -> str:
        return self.process.output() if self.process is not None else ""

    def quit(self) -> None:
        """Ask claws to exit (it writes its caches then); the group is killed after."""
        if self.process is None:
            return
        if self.process.alive():
            self.display.run([self.program, "--alternate-config-dir", str(self.config), "--exit"],
                             HOME=str(self.home))
        self.process.stop(grace=15)
