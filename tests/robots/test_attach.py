"""Files back from the shell: X-Attach and stdout.txt, on the robot and end to end.

The robot tests call ``ShellRobot.handle`` with real files in tmp_path (and
real escapes: ``..``, links out, a FIFO, a directory, /dev). The end-to-end
tests send mail over SMTP to ``serve_in_process``, in the bubblewrap sandbox,
and read the reply from the user's mbox; the last one has an agent (the
scripted model server through litellm) ask for a file.
"""

from __future__ import annotations

import asyncio
import smtplib
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from mailcoach_robots import RobotContext
from mailcoach_robots.shell import ShellRobot

from tests.robots import require_bwrap
from tests.support import make_config, mbox_messages, serve_in_process, wait_for

__all__: list[str] = []


def make_robot(tmp_path: Path, **options: Any) -> ShellRobot:
    options.setdefault("sandbox", "none")
    options.setdefault("allow_unsandboxed_root", True)
    return ShellRobot(RobotContext("shell@localdomain", tmp_path, options))


def command(subject: str, *attach: str, body: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "user@localdomain"
    message["To"] = "shell@localdomain"
    message["Subject"] = subject
    for path in attach:
        message["X-Attach"] = path
    if body is not None:
        message.set_content(body)
    return message


def parts(reply: EmailMessage) -> tuple[str, dict[str, bytes]]:
    """The reply's text and its attachments by file name."""
    text = reply.get_body(preferencelist=("plain",)) if reply.is_multipart() else reply
    files = {part.get_filename(): part.get_payload(decode=True)
             for part in reply.iter_attachments()} if reply.is_multipart() else {}
    return text.get_content(), files


async def handle(robot: ShellRobot, message: EmailMessage) -> tuple[str, dict[str, bytes]]:
    reply = await asyncio.wait_for(robot.handle(message), timeout=60)
    # a round trip through bytes, as the runtime sends it
    parsed = BytesParser(policy=policy.default).parsebytes(reply.as_bytes())
    assert isinstance(parsed, EmailMessage)
    return parts(parsed)


# --- on the robot -----------------------------------------------------------


async def test_a_file_the_command_wrote_is_attached(tmp_path: Path) -> None:
    robot = make_robot(tmp_path)
    text, files = await handle(robot, command("mkdir -p out && printf 'a,b\\n1,2\\n' > "
                                              "out/table.csv", "out/table.csv"))
    assert files == {"table.csv": b"a,b\n1,2\n"}
    assert "--- attached: out/table.csv (8 bytes) ---" in text
    assert text.startswith("--- no output ---\n")


async def test_several_files_and_binary_data(tmp_path: Path) -> None:
    robot = make_robot(tmp_path)
    (robot.workdir).mkdir(parents=True, exist_ok=True)
    (robot.workdir / "blob.bin").write_bytes(bytes(range(256)))
    (robot.workdir / "notes.txt").write_text("héllo\n", "utf-8")
    _, files = await handle(robot, command("true", "blob.bin", "notes.txt"))
    assert files == {"blob.bin": bytes(range(256)), "notes.txt": "héllo\n".encode()}


async def test_an_absolute_path_inside_the_work_directory_is_taken(tmp_path: Path) -> None:
    robot = make_robot(tmp_path)
    _, files = await handle(robot, command("echo hi > abs.txt", str(tmp_path / "work/abs.txt")))
    assert files == {"abs.txt": b"hi\n"}


@pytest.mark.parametrize(("setup", "path", "why"), [
    ("true", "../login", "outside the work directory"),
    ("true", "/etc/passwd", "outside the work directory"),
    ("ln -s /etc/passwd link", "link", "a symbolic link out of the work directory"),
    ("ln -s .. up", "up/login", "a symbolic link out of the work directory"),
    ("true", "missing.txt", "no such file"),
    ("mkdir -p sub", "sub", "a directory, not a regular file"),
    ("mkfifo pipe", "pipe", "a FIFO, not a regular file"),
    ("ln -s /dev/zero zero", "zero", "a symbolic link out of the work directory"),
    ("true", "", None),  # an empty header is no request at all
], ids=["dotdot", "absolute-outside", "link-out", "link-dir-out", "missing", "directory",
        "fifo", "device-link", "empty"])
async def test_paths_that_are_refused(tmp_path: Path, setup: str, path: str,
                                      why: str | None) -> None:
    (tmp_path / "login").write_text("secret\n")
    robot = make_robot(tmp_path)
    text, files = await handle(robot, command(setup, path))
    assert files == {}
    if why is None:
        assert "attached" not in text
    else:
        assert f"--- not attached: {path}: {why} ---" in text
    assert "secret" not in text


async def test_a_link_that_stays_inside_is_followed(tmp_path: Path) -> None:
    robot = make_robot(tmp_path)
    _, files = await handle(robot, command("echo data > real.txt && ln -sf real.txt alias.txt",
                                           "alias.txt"))
    assert files == {"alias.txt": b"data\n"}


async def test_size_limits_per_file_and_together(tmp_path: Path) -> None:
    robot = make_robot(tmp_path, attach_max_bytes=10)
    text, files = await handle(robot, command("printf 123456 > a; printf 1234567890X > big; "
                                              "printf 12345 > b", "a", "big", "b"))
    assert files == {"a": b"123456"}
    assert "--- not attached: big: 11 bytes, over the limit of 10 (attach_max_bytes) ---" in text
    assert ("--- not attached: b: the attachments together would pass 10 bytes "
            "(attach_max_bytes) ---") in text


async def test_long_output_comes_whole_as_stdout_txt(tmp_path: Path) -> None:
    robot = make_robot(tmp_path)
    text, files = await handle(robot, command("seq 1 1000"))
    assert "--- stdout: 900 lines skipped ---" in text
    expected = "".join(f"{i}\n" for i in range(1, 1001)).encode()
    assert files == {"stdout.txt": expected}
    assert f"--- stdout.txt: the whole output ({len(expected)} bytes) is attached ---" in text


async def test_short_output_has_no_stdout_txt(tmp_path: Path) -> None:
    robot = make_robot(tmp_path)
    text, files = await handle(robot, command("seq 1 100"))
    assert files == {} and "stdout.txt" not in text


async def test_stdout_txt_is_bounded_by_the_limit(tmp_path: Path) -> None:
    robot = make_robot(tmp_path, attach_max_bytes=1000)
    text, files = await handle(robot, command("seq 1 100000"))
    assert files["stdout.txt"] == "".join(f"{i}\n" for i in range(1, 1001)).encode()[:1000]
    assert "--- stdout.txt: the first 1000 of 588895 bytes of the output are attached" in text


async def test_attachments_in_the_sandbox(tmp_path: Path) -> None:
    require_bwrap()
    robot = make_robot(tmp_path, sandbox="bwrap")
    (tmp_path / "login").write_text("secret\n")
    text, files = await handle(robot, command(
        "id -u > uid.txt; ln -s ../login link; ls .. > up.txt 2>&1", "uid.txt", "link",
        "up.txt"))
    assert files["uid.txt"] == b"65534\n"  # written inside the sandbox, read from the host
    assert "--- not attached: link: a symbolic link out of the work directory ---" in text
    assert b"login" not in files["up.txt"]  # the data directory is not there inside


# --- end to end ---------------------------------------------------------------


def submit(server: Any, message: EmailMessage) -> None:
    host, port = server.smtp_address
    with smtplib.SMTP(host, port) as smtp:
        smtp.login(server.config.user, server.credentials.password)
        smtp.send_message(message)


def replies(server: Any, sender: str = "shell@localdomain") -> list[Any]:
    box = mbox_messages(server.config.data_dir / "user@localdomain.mbox")
    return [m for m in box if m["From"] == sender]


async def test_x_attach_over_smtp_in_the_sandbox(tmp_path: Path) -> None:
    require_bwrap()
    config = make_config(tmp_path, robots={"shell@localdomain": {"sandbox": "bwrap"}})
    async with serve_in_process(config) as server:
        await asyncio.to_thread(submit, server, command(
            "seq 1 300 > n.txt; seq 1 200", "n.txt", "../trace"))
        reply = (await wait_for(lambda: replies(server), what="the shell's reply"))[0]
        assert reply["Subject"] == "Exit Code: 0"
        assert reply.get_content_type() == "multipart/mixed"
        files = {p.get_filename(): p.get_payload(decode=True) for p in reply.walk()
                 if p.get_filename()}
        assert files == {"stdout.txt": "".join(f"{i}\n" for i in range(1, 201)).encode(),
                         "n.txt": "".join(f"{i}\n" for i in range(1, 301)).encode()}
        text = next(p for p in reply.walk() if p.get_content_type() == "text/plain"
                    and not p.get_filename()).get_payload(decode=True).decode()
        assert "--- not attached: ../trace: outside the work directory ---" in text


async def test_an_agent_gets_the_file_it_asked_for(tmp_path: Path, model_server: Any) -> None:
    model_server.enqueue("To: shell@localdomain\nSubject: printf 'x=1\\ny=2\\n' > vars.env\n"
                         "X-Attach: vars.env\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: done\n\nThe file is attached above.")
    config = make_config(tmp_path, model_server.spec(),
                         robots={"shell@localdomain": {"sandbox": "none",
                                                        "allow_unsandboxed_root": True}})
    async with serve_in_process(config) as server:
        ask = EmailMessage()
        ask["From"], ask["To"], ask["Subject"] = config.user, "swe1@localdomain", "vars"
        ask.set_content("Write vars.env and show it to me.")
        await asyncio.to_thread(submit, server, ask)
        await wait_for(lambda: replies(server, "swe1@localdomain"), what="the agent's answer")
        memory = mbox_messages(config.data_dir / "swe1@localdomain.mbox")
        output = [m for m in memory if m["From"] == "shell@localdomain"][-1]
        attached = [p for p in output.walk() if p.get_filename() == "vars.env"]
        assert [p.get_payload(decode=True) for p in attached] == [b"x=1\ny=2\n"]
        # The agent's next model call was shown the attachment.
        seen = model_server.requests[1]["messages"][-1]["content"]
        assert "vars.env" in seen
