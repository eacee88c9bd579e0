"""The remote shell robot against a real ``shell_stub`` process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from mailcoach_robots import RobotContext
from mailcoach_robots.remote_shell import RemoteShellRobot

from mailcoach_server.shell_stub import main as stub_main
from tests.robots import require_bwrap

__all__: list[str] = []

TOKEN = "test-token-1234"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Stub:
    url: str
    workdir: Path
    process: subprocess.Popen[str]
    stderr: str = ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the stub and wait (bounded) for it to exit; its exit code.

        Reads what is left of its output into ``stderr`` and closes the pipes.
        """
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            _, self.stderr = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate(timeout=10)
            raise
        return self.process.returncode


def start_stub(tmp_path: Path, token: str | None, *extra: str) -> Stub:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCOACH_")}
    if token is not None:
        env["MAILCOACH_STUB_TOKEN"] = token
    workdir = tmp_path / "stub-work"
    process = subprocess.Popen(
        [sys.executable, "-m", "mailcoach_server.shell_stub", "--port", "0"]
        + ["--workdir", str(workdir), "--timeout", "20", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 20)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("shell stub listening on http://127.0.0.1:"):
        process.kill()
        _, err = process.communicate(timeout=10)  # closes the pipes
        pytest.fail(f"the stub did not start: {line!r} {err!r}")
    url = line.split()[4]
    assert line.strip().startswith(f"shell stub listening on {url} (workdir {workdir}, sandbox: ")
    return Stub(url=url, workdir=workdir, process=process)


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Stub]:
    started = start_stub(tmp_path, TOKEN)
    try:
        yield started
    finally:
        started.stop()


def make_robot(tmp_path: Path, **options: Any) -> RemoteShellRobot:
    return RemoteShellRobot(RobotContext("remote@localdomain", tmp_path, options))


async def reply_to(robot: RemoteShellRobot, subject: str, body: str | None = None,
                   sender: str = "user@localdomain") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "remote@localdomain"
    message["Subject"] = subject
    if body is not None:
        message.set_content(body)
    reply = await asyncio.wait_for(robot.handle(message), timeout=60)
    # a round trip through bytes, as the runtime sends it
    parsed = BytesParser(policy=policy.default).parsebytes(reply.as_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(reply: EmailMessage) -> tuple[str, dict[str, bytes]]:
    """The reply's text and its attachments by file name."""
    text = reply.get_body(preferencelist=("plain",)) if reply.is_multipart() else reply
    assert text is not None
    files = {str(part.get_filename()): part.get_payload(decode=True)
             for part in reply.iter_attachments()}
    return text.get_content(), files


async def run(robot: RemoteShellRobot, subject: str, body: str | None = None) -> tuple[str, str]:
    reply = await reply_to(robot, subject, body)
    return reply["Subject"], parts(reply)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with _NO_PROXY.open(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_echo_through_the_stub(tmp_path: Path, stub: Stub) -> None:
    robot = make_robot(tmp_path, url=stub.url, token=TOKEN)
    assert await run(robot, "echo hello") == ("Exit Code: 0", "--- stdout ---\nhello\n")


async def test_token_from_the_environment(
    tmp_path: Path, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILCOACH_STUB_TOKEN", TOKEN)
    robot = make_robot(tmp_path, url=stub.url)
    assert await run(robot, "exit 3") == ("Exit Code: 3", "--- no output ---\n")
    monkeypatch.delenv("MAILCOACH_STUB_TOKEN")
    monkeypatch.setenv("MY_STUB_TOKEN", TOKEN)
    robot = make_robot(tmp_path, url=stub.url, token_env="MY_STUB_TOKEN")
    assert (await run(robot, "true"))[0] == "Exit Code: 0"


async def test_stdin_files_and_stderr(tmp_path: Path, stub: Stub) -> None:
    robot = make_robot(tmp_path, url=stub.url, token=TOKEN)
    assert await run(robot, "cat > poem.txt", "a poem\n") == ("Exit Code: 0", "--- no output ---\n")
    assert (stub.workdir / "poem.txt").read_text() == "a poem\n"
    assert await run(robot, "cat poem.txt; echo oops >&2; exit 1") == (
        "Exit Code: 1",
        "--- stdout ---\na poem\noops\n",
    )


async def test_long_output_is_cut_by_the_stub_and_attached_whole(tmp_path: Path,
                                                                   stub: Stub) -> None:
    robot = make_robot(tmp_path, url=stub.url, token=TOKEN)
    reply = await reply_to(robot, "seq 1 1000")
    body, files = parts(reply)
    expected = "".join(f"{i}\n" for i in range(1, 1001)).encode()
    assert reply["Subject"] == "Exit Code: 0"
    lines = body.splitlines()
    assert lines[51] == "--- stdout: 900 lines skipped ---"
    assert lines[1:51] == [str(i) for i in range(1, 51)]
    assert lines[52:] == [
        *(str(i) for i in range(951, 1001)),
        f"--- stdout.txt: the whole output ({len(expected)} bytes) is attached ---",
    ]
    assert files == {"stdout.txt": expected}


async def test_stdout_txt_is_cut_at_attach_max_bytes(tmp_path: Path, stub: Stub) -> None:
    robot = make_robot(tmp_path, url=stub.url, token=TOKEN, attach_max_bytes=1000)
    body, files = parts(await reply_to(robot, "seq 1 1000"))
    whole = "".join(f"{i}\n" for i in range(1, 1001)).encode()
    assert files == {"stdout.txt": whole[:1000]}
    assert body.splitlines()[-1] == (f"--- stdout.txt: the first 1000 of {len(whole)} bytes "
                                     "of the output are attached (attach_max_bytes) ---")
    # 0 asks the stub for nothing whole: the cut text alone, as the local shell does.
    robot = make_robot(tmp_path, url=stub.url, token=TOKEN, attach_max_bytes=0)
    body, files = parts(await reply_to(robot, "seq 1 1000"))
    assert files == {} and body.splitlines()[-1] == "1000"


async def test_short_output_has_no_stdout_txt(tmp_path: Path, stub: Stub) -> None:
    reply = await reply_to(make_robot(tmp_path, url=stub.url, token=TOKEN), "seq 1 3")
    assert not reply.is_multipart() and parts(reply) == ("--- stdout ---\n1\n2\n3\n", {})


async def test_binary_output_comes_whole_as_bytes(tmp_path: Path, stub: Stub) -> None:
    robot = make_robot(tmp_path, url=stub.url, token=TOKEN)
    command = "i=0; while [ $i -lt 200 ]; do printf 'l\\377\\000\\n'; i=$((i+1)); done"
    body, files = parts(await reply_to(robot, command))
    assert files == {"stdout.txt": b"l\xff\x00\n" * 200}
    assert "--- stdout.txt: the whole output (800 bytes) is attached ---" in body


async def answering_stub(answer: dict[str, Any]) -> asyncio.Server:
    """An HTTP server on 127.0.0.1 that gives every request the same JSON ``answer``."""
    raw = json.dumps(answer).encode()

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(respond, "127.0.0.1", 0)


@pytest.mark.parametrize(("extra", "subject", "files"), [
    ({}, "Exit Code: 0", {}),
    ({"output_bytes": 10, "whole_output_base64": "d2hvbGUgb25lCg=="}, "Exit Code: 0",
     {"stdout.txt": b"whole one\n"}),
    ({"output_bytes": 9, "whole_output_base64": "not base64!"}, "Exit Code: 255", {}),
    ({"output_bytes": -1}, "Exit Code: 255", {}),
    ({"whole_output_base64": 3}, "Exit Code: 255", {}),
], ids=["older-stub", "whole", "bad-base64", "bad-count", "bad-type"])
async def test_the_whole_output_field_is_checked(tmp_path: Path, extra: dict[str, Any],
                                                 subject: str, files: dict[str, bytes]) -> None:
    server = await answering_stub({"exit_code": 0, "output": "cut\n", "timed_out": False,
                                   "seconds": 0.1, **extra})
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        reply = await reply_to(make_robot(tmp_path, url=url), "echo hi")
    finally:
        server.close()
        await server.wait_closed()
    body, attached = parts(reply)
    assert (reply["Subject"], attached) == (subject, files)
    if subject == "Exit Code: 255":
        assert "invalid answer" in body


async def test_timeout_on_the_stub(tmp_path: Path, stub: Stub) -> None:
    robot = make_robot(tmp_path, url=stub.url, token=TOKEN, timeout=1)
    started = time.monotonic()
    subject, body = await run(robot, "echo started; sleep 100")
    assert time.monotonic() - started < 10
    assert subject == "Exit Code: 124"
    assert body.startswith("--- stdout ---\nstarted\n--- killed after 1.0 s (timeout) ---")


async def test_secrets_stay_on_the_stub_side(tmp_path: Path, stub: Stub) -> None:
    robot = make_robot(tmp_path, url=stub.url, token=TOKEN)
    subject, body = await run(robot, "env")
    assert subject == "Exit Code: 0"
    assert "MAILCOACH_STUB_TOKEN" not in body and TOKEN not in body


async def test_bad_token_is_a_255_reply(tmp_path: Path, stub: Stub) -> None:
    robot = make_robot(tmp_path, url=stub.url, token="wrong")
    subject, body = await run(robot, "echo never")
    assert subject == "Exit Code: 255"
    assert stub.url in body
    assert "refused the token (HTTP 401)" in body
    assert "MAILCOACH_STUB_TOKEN" in body
    assert not (stub.workdir / "never").exists()


async def test_missing_token_is_a_255_reply(
    tmp_path: Path, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILCOACH_STUB_TOKEN", raising=False)
    subject, body = await run(make_robot(tmp_path, url=stub.url), "echo never")
    assert subject == "Exit Code: 255" and "HTTP 401" in body


async def test_stub_not_running(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    subject, body = await run(make_robot(tmp_path, url=url, token=TOKEN), "echo hi")
    assert subject == "Exit Code: 255"
    assert url in body
    assert "cannot connect" in body and "refused" in body.lower()
    assert f"mailcoach shell-stub --port {port}" in body


async def test_invalid_answer(tmp_path: Path) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        # the request's body too: closing with it unread makes the kernel send a reset,
        # which can reach the client before the answer does
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nnot json at all")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        subject, body = await run(make_robot(tmp_path, url=url), "echo hi")
    finally:
        server.close()
        await server.wait_closed()
    assert subject == "Exit Code: 255"
    assert url in body and "invalid answer" in body


async def test_empty_subject(tmp_path: Path) -> None:
    subject, body = await run(make_robot(tmp_path, url="http://127.0.0.1:9"), "")
    assert subject == "Exit Code: 2" and "put the command in the Subject" in body


def test_health_and_bad_requests(stub: Stub) -> None:
    with _NO_PROXY.open(stub.url + "/health", timeout=20) as response:
        assert (response.status, response.read()) == (200, b"ok\n")
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    assert post(stub.url + "/run", b"{not json", auth)[0] == 400
    assert post(stub.url + "/run", json.dumps({"command": ""}).encode(), auth)[0] == 400
    assert post(stub.url + "/nowhere", b"{}", auth)[0] == 404
    status, raw = post(stub.url + "/run", json.dumps({"command": "echo ok"}).encode(), {})
    assert status == 401 and b"token" in raw
    status, raw = post(stub.url + "/run", json.dumps({"command": "echo ok"}).encode(), auth)
    assert status == 200
    assert json.loads(raw) == {"exit_code": 0, "output": "ok\n", "timed_out": False} | {
        "seconds": json.loads(raw)["seconds"]
    }
    for bad in (-1, True, "10", 1.5):
        asked = {"command": "echo ok", "keep_whole": bad}
        status, raw = post(stub.url + "/run", json.dumps(asked).encode(), auth)
        assert status == 400 and b"keep_whole" in raw
    # Asked for, the count comes back; the output itself only when the text was cut.
    asked = {"command": "echo ok", "keep_whole": 100}
    status, raw = post(stub.url + "/run", json.dumps(asked).encode(), auth)
    assert status == 200 and json.loads(raw)["output_bytes"] == 3
    assert "whole_output_base64" not in json.loads(raw)


def test_stub_without_token_needs_no_authorization(tmp_path: Path) -> None:
    started = start_stub(tmp_path, None)
    try:
        status, raw = post(started.url + "/run", json.dumps({"command": "echo open"}).encode(), {})
        assert status == 200 and json.loads(raw)["output"] == "open\n"
    finally:
        assert started.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stub_exits_cleanly_on_signals(tmp_path: Path, sig: int) -> None:
    started = start_stub(tmp_path, TOKEN)
    assert started.stop(sig) == 0
    assert "Traceback" not in started.stderr


def test_stub_refuses_to_listen_openly_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MAILCOACH_STUB_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        stub_main(["--host", "0.0.0.0", "--workdir", str(tmp_path / "w")])
    assert exit_info.value.code == 2
    assert "MAILCOACH_STUB_TOKEN" in capsys.readouterr().err


async def test_stub_with_bwrap_sandbox(tmp_path: Path) -> None:
    require_bwrap()
    started = await asyncio.to_thread(start_stub, tmp_path, TOKEN, "--sandbox", "bwrap")
    try:
        robot = make_robot(tmp_path, url=started.url, token=TOKEN)
        subject, body = await run(robot, "id -u; touch /usr/x 2>/dev/null || echo ro")
        assert (subject, body) == ("Exit Code: 0", "--- stdout ---\n65534\nro\n")
    finally:
        await asyncio.to_thread(started.stop)
