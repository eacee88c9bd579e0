"""A real third-party sendmail: msmtp (Debian) submitting to mailcoach with AUTH.

The ``~/.msmtprc`` and the command are the README's ("Piping mail in"), read from
it: only the port is the test's. ``HOME`` is the test's directory and the data
directory is ``~/mailcoach-data``, so ``passwordeval "cat ~/mailcoach-data/login"``
works as written.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from tests.clients.readme import block_after, with_ports
from tests.conftest import require_tool
from tests.sendmail import mbox_bytes, message
from tests.support import ServerProcess, config_data, mbox_messages, wait_until, write_config


def readme_msmtp() -> tuple[str, list[str]]:
    """The README's ``~/.msmtprc`` and the command line shown under it."""
    config, _, command = block_after("`~/.msmtprc` (mode 0600)").rpartition("\n\n")
    [line] = command.strip().splitlines()
    return config + "\n", shlex.split(line.partition("<")[0])


def msmtp_config(home, port):
    config, _ = readme_msmtp()
    path = home / ".msmtprc"
    path.write_text(with_ports(config, smtp=port))
    path.chmod(0o600)  # msmtp refuses a config others can read (the README says 0600)
    return path


def test_msmtp_pipes_a_queue_message_in(tmp_path):
    msmtp = require_tool("msmtp")
    data = tmp_path / "mailcoach-data"
    env = {**os.environ, "HOME": str(tmp_path)}
    _, command = readme_msmtp()
    assert command[0] == "msmtp"
    config = write_config(tmp_path / "c.yaml", config_data(data))
    queued = message("shell@localdomain", "echo via msmtp", Cc="msmtp.notes@localdomain",
                     Message_ID="<msmtp-1@test>")
    queue = tmp_path / "jobs.mbox"
    queue.write_bytes(mbox_bytes(queued))
    with ServerProcess(config) as server:
        msmtp_config(tmp_path, server.smtp_port)
        # A queue file's message, without its From_ line, piped in as sendmail takes it.
        raw = queue.read_bytes().partition(b"\n")[2]
        result = subprocess.run([msmtp, *command[1:]], input=raw, capture_output=True,
                                timeout=60, env=env)
        assert result.returncode == 0, result.stderr.decode()

        def reply():
            return [m for m in mbox_messages(data / "user@localdomain.mbox")
                    if m["In-Reply-To"] == "<msmtp-1@test>"]
        assert wait_until(reply, what="the shell's reply")[0]["Subject"] == "Exit Code: 0"
        memory = mbox_messages(data / "msmtp.notes@localdomain.mbox")
        assert [m["Message-ID"] for m in memory] == ["<msmtp-1@test>"]

        (tmp_path / "wrong").mkdir()
        (tmp_path / "wrong" / "mailcoach-data").mkdir()
        (tmp_path / "wrong" / "mailcoach-data" / "login").write_text("nope\n")
        msmtp_config(tmp_path / "wrong", server.smtp_port)
        result = subprocess.run([msmtp, *command[1:]], input=raw, capture_output=True,
                                timeout=60, env={**env, "HOME": str(tmp_path / "wrong")})
        assert result.returncode != 0
        assert b"authentication failed" in result.stderr.lower()
