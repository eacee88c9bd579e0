"""A real third-party sendmail: msmtp (Debian) submitting to mailcoach with AUTH."""

from __future__ import annotations

import subprocess

from tests.conftest import require_tool
from tests.sendmail import mbox_bytes, message
from tests.support import ServerProcess, config_data, mbox_messages, wait_until, write_config


def msmtp_config(path, port, login):
    # AUTH PLAIN by name: with "auth on" and no TLS, msmtp refuses every method that
    # sends the password in clear text, and mailcoach offers only those (on loopback).
    path.write_text(
        "defaults\n"
        "tls off\n"
        "account mailcoach\n"
        "host 127.0.0.1\n"
        f"port {port}\n"
        "auth plain\n"
        "user user@localdomain\n"
        f'passwordeval "cat {login}"\n'
        "from user@localdomain\n"
        "account default : mailcoach\n"
    )
    path.chmod(0o600)  # msmtp refuses a config others can read
    return path


def test_msmtp_pipes_a_queue_message_in(tmp_path):
    msmtp = require_tool("msmtp")
    data = tmp_path / "data"
    config = write_config(tmp_path / "c.yaml", config_data(data))
    queued = message("shell@localdomain", "echo via msmtp", Cc="msmtp.notes@localdomain",
                     Message_ID="<msmtp-1@test>")
    queue = tmp_path / "jobs.mbox"
    queue.write_bytes(mbox_bytes(queued))
    with ServerProcess(config) as server:
        rc = msmtp_config(tmp_path / "msmtprc", server.smtp_port, data / "login")
        # A queue file's message, without its From_ line, piped in as sendmail takes it.
        raw = queue.read_bytes().partition(b"\n")[2]
        result = subprocess.run([msmtp, "-C", str(rc), "-t"], input=raw, capture_output=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr.decode()

        def reply():
            return [m for m in mbox_messages(data / "user@localdomain.mbox")
                    if m["In-Reply-To"] == "<msmtp-1@test>"]
        assert wait_until(reply, what="the shell's reply")[0]["Subject"] == "Exit Code: 0"
        memory = mbox_messages(data / "msmtp.notes@localdomain.mbox")
        assert [m["Message-ID"] for m in memory] == ["<msmtp-1@test>"]

        wrong = tmp_path / "wrong-login"
        wrong.write_text("nope\n")
        rc = msmtp_config(tmp_path / "msmtprc-wrong", server.smtp_port, wrong)
        result = subprocess.run([msmtp, "-C", str(rc), "-t"], input=raw, capture_output=True,
                                timeout=60)
        assert result.returncode != 0
        assert b"authentication failed" in result.stderr.lower()
