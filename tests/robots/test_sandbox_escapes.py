"""The escapes of issue 10 run against ``mailcoach serve``, shown closed by default.

A real server process, with fake provider keys and other secrets in its
environment, gets each escape as a command mailed over SMTP to
shell@localdomain. With the default config (``sandbox: auto``, here
bubblewrap) every one fails. The same probes against a server configured
without a sandbox succeed: that shows each probe can see the escape it
looks for.
"""

from __future__ import annotations

import os
import smtplib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from tests.robots import require_bwrap
from tests.support import ServerProcess, config_data, mbox_messages, wait_until, write_config

__all__: list[str] = []

SECRETS = {
    "OPENAI_API_KEY": "sk-test-secret",
    "MY_DB_PASS": "db-pass-secret-4711",
    "GITHUB_PAT": "ghp_test_secret_0815",
}
OPEN_ROBOT = {"kind": "shell", "sandbox": "none", "allow_unsandboxed_root": True}


@dataclass
class Running:
    server: ServerProcess
    data_dir: Path

    @property
    def password(self) -> str:
        return (self.data_dir / "login").read_text().strip()

    def ask(self, subject: bytes | str, body: str = "") -> tuple[str, str]:
        """Mail ``subject`` (raw bytes allowed) to the shell; its reply's Subject and body."""
        message_id = f"<{uuid.uuid4().hex}@test>"
        raw_subject = subject if isinstance(subject, bytes) else subject.encode()
        raw = (
            b"From: user@localdomain\r\nTo: shell@localdomain\r\n"
            + b"Message-ID: " + message_id.encode() + b"\r\n"
            + b"Subject: " + raw_subject + b"\r\n\r\n" + body.encode()
        )
        with smtplib.SMTP("127.0.0.1", self.server.smtp_port, timeout=30) as client:
            client.login("user@localdomain", self.password)
            client.sendmail("user@localdomain", ["shell@localdomain"], raw)

        def reply() -> Message | None:
            for message in mbox_messages(self.data_dir / "user@localdomain.mbox"):
                if message["In-Reply-To"] == message_id:
                    return message
            return None

        found = wait_until(reply, timeout=60, what=f"the shell's reply to {subject!r}")
        payload = found.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return str(found["Subject"]), payload.decode("utf-8", "replace")


def _serve(tmp_path: Path, **extra: object) -> Iterator[Running]:
    data_dir = tmp_path / "data"
    config = write_config(tmp_path / "c.yaml", config_data(data_dir, **extra))
    with ServerProcess(config, env=SECRETS) as server:
        yield Running(server, data_dir)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    require_bwrap()
    yield from _serve(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from _serve(
        tmp_path_factory.mktemp("open"), robots={"shell@localdomain": OPEN_ROBOT}
    )


READ_ENVIRONS = (
    "strings /proc/$PPID/environ; cat /proc/*/environ | tr '\\0' '\\n'; env; "
    "cat /proc/$PPID/cmdline | tr '\\0' ' '"
)


def connect_to_smtp(port: int) -> str:
    # bash's /dev/tcp: no python or nc needed inside; prints the server's greeting.
    return f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && head -c 3 <&3'"


def test_the_banner_says_which_sandbox(default_server: Running, open_server: Running) -> None:
    assert "  robots shell@localdomain (shell, sandbox: bwrap)" in default_server.server.banner
    assert "  robots shell@localdomain (shell, sandbox: none (unsandboxed))" in (
        open_server.server.banner
    )


def test_no_secret_in_any_environment(default_server: Running) -> None:
    subject, body = default_server.ask(READ_ENVIRONS)
    assert "PATH=" in body  # the probe read something
    for name, value in SECRETS.items():
        assert value not in body, f"{name} leaked"
    assert "OPENAI_API_KEY" not in body


def test_secrets_are_there_to_find_without_a_sandbox(open_server: Running) -> None:
    _, body = open_server.ask("strings /proc/$PPID/environ")
    assert SECRETS["OPENAI_API_KEY"] in body  # the server's own environment


def test_the_login_file_is_out_of_sight(default_server: Running, open_server: Running) -> None:
    subject, body = default_server.ask("cat ../login")
    assert subject != "Exit Code: 0"
    assert default_server.password not in body
    _, body = default_server.ask("ls -a ..")
    assert body.split() == ["---", "stdout", "---", ".", "..", "work"]
    assert open_server.ask("cat ../login") == (
        "Exit Code: 0",
        f"--- stdout ---\n{open_server.password}\n",
    )


@pytest.mark.parametrize("name", ["trace", "index.sqlite", "login"])
def test_the_data_dir_cannot_be_written(default_server: Running, name: str) -> None:
    target = default_server.data_dir / name
    before = target.read_bytes()
    # printf: the text written ("overwritten") is not in the command, which the trace keeps.
    subject, body = default_server.ask(
        f"printf 'over%s' written >> ../{name}; echo x > ../{name}.new"
    )
    assert subject != "Exit Code: 0", body
    assert target.read_bytes()[: len(before)] == before
    assert b"overwritten" not in target.read_bytes()
    assert not (default_server.data_dir / f"{name}.new").exists()


def test_the_servers_smtp_port_is_unreachable(
    default_server: Running, open_server: Running
) -> None:
    subject, body = default_server.ask(connect_to_smtp(default_server.server.smtp_port))
    assert subject != "Exit Code: 0"
    assert "220" not in body
    assert open_server.ask(connect_to_smtp(open_server.server.smtp_port)) == (
        "Exit Code: 0",
        "--- stdout ---\n220\n",
    )


def test_no_root_powers(default_server: Running) -> None:
    subject, body = default_server.ask(
        "id -u; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status"
    )
    lines = body.splitlines()
    assert subject == "Exit Code: 0", body
    assert lines[1] != "0" and lines[1].isdigit()
    assert "CapEff:\t0000000000000000" in lines
    assert "CapPrm:\t0000000000000000" in lines
    assert "CapBnd:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines


def test_no_setuid_file_of_root_can_be_made(default_server: Running) -> None:
    subject, body = default_server.ask("cp /bin/id ./id-copy && chmod 4755 id-copy")
    assert subject == "Exit Code: 0", body
    # The setuid bit sticks, but on a file of the sandbox's user, never of root.
    assert (default_server.data_dir / "work" / "id-copy").stat().st_uid != 0


@pytest.mark.parametrize("server_name", ["default_server", "open_server"])
def test_an_encoded_line_break_in_the_subject_is_refused(
    request: pytest.FixtureRequest, server_name: str
) -> None:
    running: Running = request.getfixturevalue(server_name)
    marker = f"pwned-{uuid.uuid4().hex[:8]}"
    encoded = f"=?utf-8?q?echo_a=0Atouch_{marker}?=".encode()
    subject, body = running.ask(encoded)
    assert subject == "Exit Code: 2"
    assert f"'echo a\\ntouch {marker}'" in body  # the command as it would have run
    assert "Not run" in body
    assert not (running.data_dir / "work" / marker).exists()
    # The log names the refused command the same way.
    assert f"not run: 'echo a\\ntouch {marker}'" in running.server.stderr()


def test_the_log_shows_the_command_that_runs(default_server: Running) -> None:
    marker = uuid.uuid4().hex[:8]
    assert default_server.ask(f"echo {marker}") == ("Exit Code: 0", f"--- stdout ---\n{marker}\n")
    assert f"runs 'echo {marker}' (sandbox: bwrap)" in default_server.server.stderr()


def test_files_made_belong_to_the_sandbox_user(default_server: Running) -> None:
    # As root the command is 65534 on the host too (setpriv); as a user, that user.
    default_server.ask("touch owned")
    owner = (default_server.data_dir / "work" / "owned").stat().st_uid
    assert owner == (65534 if os.geteuid() == 0 else os.geteuid())
