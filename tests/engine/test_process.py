"""``mailcoach serve`` as a real process: swaks, signals, kill -9, config errors."""

from __future__ import annotations

import collections
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from email.message import EmailMessage

from tests.conftest import require_tool
from tests.support import (
    ServerProcess,
    config_data,
    mbox_messages,
    wait_until,
    write_config,
)


def user_replies(data_dir):
    return [m for m in mbox_messages(data_dir / "user@localdomain.mbox")
            if m["From"] != "user@localdomain"]


def test_swaks_to_the_shell_gets_a_threaded_reply(tmp_path):
    swaks = require_tool("swaks")
    config = write_config(tmp_path / "c.yaml", config_data(tmp_path / "data"))
    with ServerProcess(config) as server:
        password = (tmp_path / "data" / "login").read_text().strip()
        result = subprocess.run(
            [swaks, "--server", f"127.0.0.1:{server.smtp_port}", "--auth-user",
             "user@localdomain", "--auth-password", password, "--from", "user@localdomain",
             "--to", "shell@localdomain", "--header", "Subject: uname -a", "--body", "-"],
            input="", capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "250 2.0.0 OK" in result.stdout
        replies = wait_until(lambda: user_replies(tmp_path / "data"), what="shell reply")
        reply = replies[0]
        assert reply["Subject"] == "Exit Code: 0"
        assert os.uname().sysname in reply.get_payload()
        request = mbox_messages(tmp_path / "data" / "trace")[0]
        assert reply["In-Reply-To"] == request["Message-ID"]
    assert server.proc.returncode == 0


def test_banner_and_clean_exit_on_sigint_and_sigterm(tmp_path):
    config = write_config(tmp_path / "c.yaml", config_data(tmp_path / "data"))
    env = {"OPENAI_API_KEY": ""}
    env_clean = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    for sig in (signal.SIGINT, signal.SIGTERM):
        server = ServerProcess(config)
        server.env = env_clean
        server.start()
        text = "\n".join(server.banner)
        assert f"SMTP  127.0.0.1:{server.smtp_port}" in text
        assert str((tmp_path / "data").resolve()) in text
        assert str(tmp_path / "data" / "login") in text
        assert "OPENAI_API_KEY is not set: agents on openai/… will answer with an error" in text
        assert server.stop(sig) == 0
        assert "Traceback" not in server.stderr()
    login = tmp_path / "data" / "login"
    assert oct(login.stat().st_mode & 0o777) == "0o600"
    del env


def test_bad_config_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("smtp:\n  port: twenty-five\n")
    result = subprocess.run([sys.executable, "-m", "mailcoach_server", "serve", "--config",
                             str(bad)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert str(bad) in result.stderr and "smtp.port" in result.stderr
    assert "Traceback" not in result.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("limits:\n  max_hop: 3\n")
    result = subprocess.run([sys.executable, "-m", "mailcoach_server", "serve", "--config",
                             str(typo)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "limits.max_hop" in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "c.yaml", config_data(tmp_path / "data"))
        result = subprocess.run([sys.executable, "-m", "mailcoach_server", "serve", "--config",
                                 str(config), "--smtp-port", str(port)],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def _message(number: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "user@localdomain"
    message["To"] = "swe1@localdomain"
    message["Subject"] = f"job {number}"
    message["Message-ID"] = f"<job-{number}@test>"
    message.set_content(f"job {number}")
    return message


def test_kill_9_while_accepting_and_processing_loses_nothing_and_repeats_nothing(
        tmp_path, model_server):
    def answer(request):
        last = request["messages"][-1]["content"]
        subject = next(line for line in last.splitlines() if line.startswith("Subject: "))
        return f"To: user@localdomain\nSubject: done {subject[9:]}\n\nok"
    model_server.responder = answer
    model_server.delay = 0.3  # calls in flight when the kill comes
    data = tmp_path / "data"
    config = write_config(tmp_path / "c.yaml", config_data(data, model_server.spec(),
                                                           limits={"max_models_in_flight": 4}))
    accepted: list[int] = []
    server = ServerProcess(config).start()
    password = (data / "login").read_text().strip()

    def sender(port: int, numbers: range) -> None:
        for number in numbers:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                    client.login("user@localdomain", password)
                    client.send_message(_message(number))
                accepted.append(number)  # 250 seen: it must survive anything
            except (OSError, smtplib.SMTPException):
                return
    thread = threading.Thread(target=sender, args=(server.smtp_port, range(0, 40)))
    thread.start()
    wait_until(lambda: len(accepted) >= 15, what="some mail accepted")
    wait_until(lambda: len(user_replies(data)) >= 2, what="some answers")
    server.kill9()
    thread.join(30)
    assert 15 <= len(accepted) < 40 or len(accepted) == 40

    restarted = ServerProcess(config).start()
    try:
        wait_until(lambda: len(user_replies(data)) >= len(accepted), timeout=60,
                   what="every accepted message answered")
        time.sleep(1.0)  # nothing more may come
        replies = user_replies(data)
        counts = collections.Counter(r["In-Reply-To"] for r in replies)
        trace = mbox_messages(data / "trace")
        stored = collections.Counter(m["Message-ID"] for m in trace
                                     if m["From"] == "user@localdomain")
        for number in accepted:
            assert stored[f"<job-{number}@test>"] == 1, f"job {number} stored twice or lost"
            assert counts[f"<job-{number}@test>"] == 1, f"job {number} answered {counts}"
        assert all(n == 1 for n in counts.values())
        assert all(n == 1 for n in stored.values())
    finally:
        assert restarted.stop() == 0
