"""The shell robot: real /bin/sh processes in tmp_path, and the bubblewrap sandbox.

The robot's default is ``sandbox: auto``, so most tests here run in bwrap
where it is installed. Tests that look at the command's processes from
outside (pids written by ``$$``) need the host's pid namespace and use
``plain_robot``: no sandbox, root allowed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from mailcoach_robots import RobotContext
from mailcoach_robots.sandbox import SANDBOX_UID, allowed_environment, bwrap_argv
from mailcoach_robots.shell import ShellRobot, command_of, stdin_of

from mailcoach_server.errors import ConfigError
from tests.robots import require_bwrap

__all__: list[str] = []


def make_robot(tmp_path: Path, **options: Any) -> ShellRobot:
    return ShellRobot(RobotContext("shell@localdomain", tmp_path, options))


def plain_robot(tmp_path: Path, **options: Any) -> ShellRobot:
    """A robot without a sandbox (also when the tests run as root)."""
    return make_robot(tmp_path, sandbox="none", allow_unsandboxed_root=True, **options)


def request(subject: str, body: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "user@localdomain"
    message["To"] = "shell@localdomain"
    message["Subject"] = subject
    if body is not None:
        message.set_content(body)
    return message


async def run(robot: ShellRobot, subject: str, body: str | None = None) -> tuple[str, str]:
    """Subject and body of the robot's reply."""
    reply = await asyncio.wait_for(robot.handle(request(subject, body)), timeout=60)
    assert reply["From"] is None and reply["To"] is None  # the runtime's business
    text = reply.get_body(preferencelist=("plain",)) if reply.is_multipart() else reply
    return reply["Subject"], text.get_content()


def process_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for init to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and not process_gone(int(entry.name)):
                found.append(int(entry.name))
    return found


async def eventually(check: Any, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
def robot(tmp_path: Path) -> ShellRobot:
    return make_robot(tmp_path)


# --- the basic contract -----------------------------------------------------


async def test_echo(robot: ShellRobot) -> None:
    assert await run(robot, "echo hello") == ("Exit Code: 0", "--- stdout ---\nhello\n")


async def test_uname(robot: ShellRobot) -> None:
    subject, body = await run(robot, "uname")
    assert subject == "Exit Code: 0"
    assert body == "--- stdout ---\nLinux\n" or body.startswith("--- stdout ---\n")


async def test_exit_code(robot: ShellRobot) -> None:
    assert await run(robot, "exit 3") == ("Exit Code: 3", "--- no output ---\n")


async def test_stderr_is_merged_in_order(robot: ShellRobot) -> None:
    subject, body = await run(robot, "echo a; echo b >&2; echo c; ls /nonexistent")
    assert subject == "Exit Code: 2"
    lines = body.splitlines()
    assert lines[:4] == ["--- stdout ---", "a", "b", "c"]
    assert "nonexistent" in lines[4]


async def test_pipes_and_shell_syntax(robot: ShellRobot) -> None:
    assert await run(robot, "printf 'b\\na\\n' | sort | tr a-z A-Z") == (
        "Exit Code: 0",
        "--- stdout ---\nA\nB\n",
    )


async def test_body_is_stdin(robot: ShellRobot) -> None:
    assert await run(robot, "cat", "line one\nline two\n") == (
        "Exit Code: 0",
        "--- stdout ---\nline one\nline two\n",
    )


async def test_no_body_is_empty_stdin(robot: ShellRobot) -> None:
    assert await run(robot, "wc -c") == ("Exit Code: 0", "--- stdout ---\n0\n")


async def test_files_stay_in_the_workdir(tmp_path: Path, robot: ShellRobot) -> None:
    poem = "Roses are red,\nshells are grey.\n"
    assert await run(robot, "cat > poem.txt", poem) == ("Exit Code: 0", "--- no output ---\n")
    assert (tmp_path / "work" / "poem.txt").read_text() == poem
    assert await run(robot, "cat poem.txt") == ("Exit Code: 0", "--- stdout ---\n" + poem)
    assert await run(robot, "pwd") == ("Exit Code: 0", f"--- stdout ---\n{tmp_path / 'work'}\n")


async def test_workdir_option(tmp_path: Path) -> None:
    robot = make_robot(tmp_path, workdir="deep/er")
    assert await run(robot, "pwd") == ("Exit Code: 0", f"--- stdout ---\n{tmp_path}/deep/er\n")


async def test_empty_subject_explains(robot: ShellRobot) -> None:
    subject, body = await run(robot, "   ", "echo hi\n")
    assert subject == "Exit Code: 2"
    assert "put the command in the Subject" in body


async def test_folded_subject_is_unfolded(robot: ShellRobot) -> None:
    raw = b"From: user@localdomain\r\nTo: shell@localdomain\r\nSubject: echo one\r\n  two\r\n\r\n"
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    reply = await robot.handle(message)
    assert reply.get_content() == "--- stdout ---\none two\n"


async def test_utf8_in_subject_body_and_output(robot: ShellRobot) -> None:
    assert await run(robot, "echo café; cat", "naïve\n") == (
        "Exit Code: 0",
        "--- stdout ---\ncafé\nnaïve\n",
    )


def test_stdin_of_html_only_mail_is_empty() -> None:
    message = request("cat")
    message.set_content("<p>hi</p>", subtype="html")
    assert stdin_of(message) == b""
    message = request("cat")
    message.set_content("text\r\nbody\r\n")
    message.add_alternative("<p>html</p>", subtype="html")
    assert stdin_of(message) == b"text\nbody\n"


async def test_killed_by_a_signal_is_128_plus_n(robot: ShellRobot) -> None:
    assert (await run(robot, "kill -9 $$"))[0] == "Exit Code: 137"
    assert (await run(robot, "kill -TERM $$"))[0] == "Exit Code: 143"


async def test_shell_option(tmp_path: Path) -> None:
    if shutil.which("bash", path="/bin") is None:
        pytest.skip("no /bin/bash")
    robot = make_robot(tmp_path, shell="/bin/bash")
    subject, body = await run(robot, 'echo "${BASH_VERSION:+bash}"')
    assert (subject, body) == ("Exit Code: 0", "--- stdout ---\nbash\n")


async def test_missing_shell_is_mail_not_a_crash(tmp_path: Path) -> None:
    robot = make_robot(tmp_path, shell="/nonexistent/sh")
    subject, body = await run(robot, "echo hi")
    assert subject == "Exit Code: 127"
    assert "/nonexistent/sh" in body


# --- long output ------------------------------------------------------------


async def test_long_output_is_cut(robot: ShellRobot) -> None:
    subject, body = await run(robot, "seq 1 1000")
    lines = body.splitlines()
    assert subject == "Exit Code: 0"
    assert lines[0] == "--- stdout ---"
    assert lines[1:51] == [str(i) for i in range(1, 51)]
    assert lines[51] == "--- stdout: 900 lines skipped ---"
    assert lines[52:102] == [str(i) for i in range(951, 1001)]
    assert lines[102:] == ["--- stdout.txt: the whole output (3893 bytes) is attached ---"]


async def test_nine_lines_are_not_worth_cutting(robot: ShellRobot) -> None:
    _, body = await run(robot, "seq 1 109")
    assert body.splitlines()[1:] == [str(i) for i in range(1, 110)]


async def test_head_and_tail_options(tmp_path: Path) -> None:
    robot = make_robot(tmp_path, head_lines=2, tail_lines=1)
    _, body = await run(robot, "seq 1 100")
    assert body == ("--- stdout ---\n1\n2\n--- stdout: 97 lines skipped ---\n100\n"
                    "--- stdout.txt: the whole output (292 bytes) is attached ---\n")


async def test_huge_output_stays_bounded(robot: ShellRobot) -> None:
    subject, body = await run(robot, "yes | head -c 50000000")
    assert subject == "Exit Code: 0"
    assert "--- stdout: 24999900 lines skipped ---" in body
    assert len(body) < 1000


async def test_endless_line_is_cut(robot: ShellRobot) -> None:
    subject, body = await run(robot, "head -c 10000000 /dev/zero | tr '\\0' x")
    assert subject == "Exit Code: 0"
    assert body == ("--- stdout ---\n" + "x" * 4000 + " [... line cut: 9996000 more bytes]\n"
                    "--- stdout.txt: the first 5242880 of 10000000 bytes of the output are "
                    "attached (attach_max_bytes) ---\n")


async def test_large_stdin_to_a_command_that_does_not_read_it(robot: ShellRobot) -> None:
    subject, body = await run(
        robot, "echo ignored", "x" * 70 + "\n" * 1 + ("y" * 79 + "\n") * 100000
    )
    assert (subject, body) == ("Exit Code: 0", "--- stdout ---\nignored\n")


# --- time limit and process groups ------------------------------------------


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    robot = plain_robot(tmp_path, timeout=1)
    subject, body = await run(robot, "echo $$ > pids; sleep 100 & echo $! >> pids; wait")
    assert subject == "Exit Code: 124"
    assert "killed after 1.0 s (timeout)" in body
    pids = [int(p) for p in (tmp_path / "work" / "pids").read_text().split()]
    assert len(pids) == 2  # the shell and its background child
    for pid in pids:
        assert await eventually(lambda pid=pid: process_gone(pid)), f"pid {pid} still runs"


async def test_timeout_kills_sleep_and_sleep(tmp_path: Path) -> None:
    robot = make_robot(tmp_path, timeout=1)
    marker = f"{os.getpid() % 1000}.{time.time_ns() % 10**6}"  # a unique sleep length
    subject, body = await run(robot, f"sleep {marker} & sleep {marker}; ")
    assert subject == "Exit Code: 124"
    assert "killed after" in body
    assert await eventually(lambda: not processes_with(f"sleep\0{marker}"))


async def test_background_job_does_not_hold_the_reply(tmp_path: Path) -> None:
    robot = plain_robot(tmp_path)
    # run() gives up after 60 s: a job that held the reply would fail it.
    subject, body = await run(robot, "sleep 100 & echo $! > bg; echo hi")
    assert (subject, body) == ("Exit Code: 0", "--- stdout ---\nhi\n")
    pid = int((tmp_path / "work" / "bg").read_text())
    assert await eventually(lambda: process_gone(pid)), "the background job outlived the command"


async def test_escaped_session_still_cannot_hold_the_reply(tmp_path: Path) -> None:
    # setsid leaves the process group, so it is not killed; reading still stops.
    robot = plain_robot(tmp_path, timeout=2)
    subject, body = await run(robot, "setsid sleep 100 & echo $! > escaped; echo hi")
    pid = int((tmp_path / "work" / "escaped").read_text())
    try:
        assert subject == "Exit Code: 0"
        assert body.startswith("--- stdout ---\nhi\n")
    finally:
        if not process_gone(pid):
            os.kill(pid, 9)  # started by this test


async def test_aclose_kills_running_commands(robot: ShellRobot) -> None:
    task = asyncio.create_task(robot.handle(request("sleep 100")))
    assert await eventually(lambda: bool(robot._groups))
    await robot.aclose()
    reply = await asyncio.wait_for(task, timeout=10)
    assert reply["Subject"] == "Exit Code: 137"


async def test_cancelled_run_kills_its_group(tmp_path: Path) -> None:
    robot = plain_robot(tmp_path)
    task = asyncio.create_task(robot.handle(request("echo $$ > pid; sleep 100")))
    pidfile = tmp_path / "work" / "pid"
    assert await eventually(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = int(pidfile.read_text())
    assert await eventually(lambda: process_gone(pid))


# --- environment ------------------------------------------------------------


async def test_environment_is_an_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb", "TZ": "UTC",
            "HOME": "/home/someone"}
    dropped = {
        "OPENAI_API_KEY": "sk-test",
        "GITHUB_PAT": "ghp",  # a secret no deny list would have caught
        "MY_DB_PASS": "hunter2",
        "AWS_ACCESS_KEY_ID": "a",
        "MAILCOACH_STUB_TOKEN": "t",
        "VISIBLE_SETTING": "yes",
    }
    for name, value in {**kept, **dropped}.items():
        monkeypatch.setenv(name, value)
    subject, body = await run(plain_robot(tmp_path), "env")
    assert subject == "Exit Code: 0"
    lines = body.splitlines()
    names = {line.partition("=")[0] for line in lines}
    assert not names & set(dropped)
    assert {f"{k}={v}" for k, v in kept.items()} <= set(lines)
    assert f"PATH={os.environ['PATH']}" in lines


def test_allowed_environment() -> None:
    base = {"PATH": "/bin", "X_API_KEY": "k", "LC_TIME": "C", "DB_PASS": "p", "MINE": "m"}
    assert allowed_environment(base, names=["MINE", "ABSENT"], values={"EXTRA": "1"}) == {
        "PATH": "/bin",
        "LC_TIME": "C",
        "MINE": "m",
        "EXTRA": "1",
    }


async def test_env_option(tmp_path: Path) -> None:
    robot = make_robot(tmp_path, env={"GREETING": "hello there", "N": 3})
    assert await run(robot, 'echo "$GREETING $N"') == (
        "Exit Code: 0",
        "--- stdout ---\nhello there 3\n",
    )


@pytest.mark.parametrize("form", ["list", "null"])
async def test_env_option_passes_named_variables_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    monkeypatch.setenv("PROJECT_SETTING", "on")
    monkeypatch.setenv("OTHER_SETTING", "off")
    env: Any = ["PROJECT_SETTING"] if form == "list" else {"PROJECT_SETTING": None}
    robot = make_robot(tmp_path, env=env)
    assert await run(robot, 'echo "${PROJECT_SETTING-unset} ${OTHER_SETTING-unset}"') == (
        "Exit Code: 0",
        "--- stdout ---\non unset\n",
    )


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": "60"},
        {"sandbox": "docker"},
        {"head_lines": -1},
        {"network": "yes"},
        {"env": ["A=1"]},
        {"env": {"A": ["x"]}},
        {"workdir": ""},
        {"workdir": "."},
        {"workdir": ".."},
        {"allow_unsandboxed_root": "yes"},
    ],
    ids=str,
)
def test_bad_options_are_config_errors(tmp_path: Path, options: dict[str, Any]) -> None:
    (name,) = options
    with pytest.raises(ConfigError, match=rf"robots\.shell@localdomain\.{name}"):
        make_robot(tmp_path, **options)


# --- bubblewrap sandbox -----------------------------------------------------


async def test_bwrap_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_bwrap()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-outside")
    monkeypatch.setenv("VISIBLE_SETTING", "yes")
    robot = make_robot(tmp_path, sandbox="bwrap", env={"GREETING": "hi"})
    workdir = tmp_path / "work"
    subject, body = await run(
        robot,
        "id -u; touch /usr/x || echo usr-read-only; echo inside > made.txt && cat made.txt; "
        "grep CapEff /proc/self/status; env; pwd; test -e /etc/shadow || echo no-shadow; cat",
        "from stdin\n",
    )
    lines = body.splitlines()
    assert subject == "Exit Code: 0", body
    assert "no-shadow" in lines  # only a few files of /etc are visible
    assert lines[1] == "65534"
    assert "usr-read-only" in lines
    assert "inside" in lines
    assert "CapEff:\t0000000000000000" in lines
    assert f"HOME={workdir}" in lines
    assert "GREETING=hi" in lines
    assert not any(line.startswith(("OPENAI_API_KEY", "VISIBLE_SETTING")) for line in lines)
    assert str(workdir) in lines
    assert lines[-1] == "from stdin"
    assert (workdir / "made.txt").read_text() == "inside\n"


async def test_bwrap_sees_files_written_outside(tmp_path: Path) -> None:
    require_bwrap()
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "given.txt").write_text("given\n")
    robot = make_robot(tmp_path, sandbox="bwrap")
    assert await run(robot, "cat given.txt; cat /etc/passwd | grep -c root") == (
        "Exit Code: 0",
        "--- stdout ---\ngiven\n1\n",
    )


async def test_bwrap_has_no_network_unless_asked(tmp_path: Path) -> None:
    require_bwrap()
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no python3 in /usr/bin to test connections with")
    accepted = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connect = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3)\""
    try:
        subject, body = await run(make_robot(tmp_path, sandbox="bwrap"), connect)
        assert subject == "Exit Code: 1" and "ConnectionRefusedError" in body
        assert not accepted.is_set()
        subject, body = await run(make_robot(tmp_path, sandbox="bwrap", network=True), connect)
        assert subject == "Exit Code: 0", body
        await asyncio.wait_for(accepted.wait(), timeout=5)
    finally:
        server.close()
        await server.wait_closed()


async def test_bwrap_timeout_kills_the_sandbox(tmp_path: Path) -> None:
    require_bwrap()
    robot = make_robot(tmp_path, sandbox="bwrap", timeout=1)
    marker = f"{os.getpid() % 1000}.{time.time_ns() % 10**6}"
    subject, body = await run(robot, f"sleep {marker} & sleep {marker}")
    assert subject == "Exit Code: 124" and "killed after" in body
    assert await eventually(lambda: not processes_with(f"sleep\0{marker}"))


async def test_bwrap_background_job_dies_with_the_command(tmp_path: Path) -> None:
    require_bwrap()
    robot = make_robot(tmp_path, sandbox="bwrap")
    marker = f"{100 + os.getpid() % 1000}.{time.time_ns() % 10**6 + 1}"  # > run()'s 60 s
    assert await run(robot, f"sleep {marker} & echo hi") == ("Exit Code: 0", "--- stdout ---\nhi\n")
    assert await eventually(lambda: not processes_with(f"sleep\0{marker}"))


def test_bwrap_argv_handles_merged_usr(tmp_path: Path) -> None:
    argv = bwrap_argv(tmp_path, network=True, env={"A": "1"})
    assert argv[:4] == ["bwrap", "--die-with-parent", "--new-session", "--unshare-all"]
    assert "--share-net" in argv and argv[-1] == "--"
    for name in ("bin", "lib"):
        top = Path("/", name)
        if top.is_symlink():
            i = argv.index(f"/{name}")
            assert argv[i - 2 : i + 1] == ["--symlink", os.readlink(top), f"/{name}"]
    # The working directory is bound after /tmp's tmpfs, so it may live below /tmp.
    assert argv.index("--tmpfs") < argv.index("--bind")
    assert "--share-net" not in bwrap_argv(tmp_path)


def test_bwrap_sandbox_without_bwrap_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap here
    with pytest.raises(ConfigError, match="bubblewrap"):
        make_robot(tmp_path, sandbox="bwrap")


def test_no_sandbox_as_root_needs_the_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap: auto falls back to none
    if os.geteuid() == 0:
        for options in ({}, {"sandbox": "none"}):
            with pytest.raises(ConfigError, match=r"allow_unsandboxed_root: true") as info:
                make_robot(tmp_path, **options)
            assert "as root without a sandbox" in str(info.value)
        robot = make_robot(tmp_path, allow_unsandboxed_root=True)
    else:
        robot = make_robot(tmp_path)
    assert robot.summary.startswith("shell, sandbox: none (unsandboxed")
    assert "bubblewrap is not installed" in robot.summary  # why auto found no sandbox
    assert plain_robot(tmp_path).summary == "shell, sandbox: none (unsandboxed)"


def test_summary_names_the_sandbox(tmp_path: Path) -> None:
    require_bwrap()
    assert make_robot(tmp_path).summary == "shell, sandbox: bwrap"
    assert make_robot(tmp_path, network=True).summary == "shell, sandbox: bwrap, network"


async def test_workdir_belongs_to_the_sandbox_user_as_root(tmp_path: Path) -> None:
    require_bwrap()
    robot = make_robot(tmp_path)
    subject, body = await run(robot, "id -u; touch mine; cd / && ls $HOME")
    assert (subject, body) == ("Exit Code: 0", f"--- stdout ---\n{SANDBOX_UID}\nmine\n")
    owner = (tmp_path / "work" / "mine").stat().st_uid
    # As root the command really is 65534 on the host; otherwise it is the caller.
    assert owner == (SANDBOX_UID if os.geteuid() == 0 else os.geteuid())


def test_bwrap_argv_for_root_drops_to_nobody_with_setpriv(tmp_path: Path) -> None:
    argv = bwrap_argv(tmp_path / "w", env={"A": "1"}, setpriv="/usr/bin/setpriv")
    assert "--unshare-all" not in argv and "--unshare-user" not in argv
    assert {"--unshare-pid", "--unshare-net", "--unshare-ipc", "--clearenv"} <= set(argv)
    tail = argv[argv.index("--") + 1 :]
    assert tail == [
        "/usr/bin/setpriv",
        f"--reuid={SANDBOX_UID}",
        f"--regid={SANDBOX_UID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ]
    i = argv.index("A")
    assert argv[i - 1 : i + 2] == ["--setenv", "A", "1"]
    # Every parent of the work dir is made traversable for "nobody".
    assert ["--perms", "0755", "--dir", str(tmp_path)] == argv[
        argv.index(str(tmp_path)) - 3 : argv.index(str(tmp_path)) + 1
    ]


SUBJECTS_NOT_RUN = {
    "encoded line feed": b"=?utf-8?q?echo_a=0Aecho_b?=",
    "encoded carriage return": b"=?utf-8?q?echo_a=0Decho_b?=",
    "base64 line feed": b"=?utf-8?b?" + __import__("base64").b64encode(b"true\nid") + b"?=",
    "bidi override": b"=?utf-8?q?echo_safe_=E2=80=AE;id?=",
    "escape": b"=?utf-8?q?echo_=1B[2Ksafe?=",
}


@pytest.mark.parametrize("subject", SUBJECTS_NOT_RUN.values(), ids=SUBJECTS_NOT_RUN.keys())
async def test_a_subject_that_would_hide_a_command_is_refused(
    tmp_path: Path, subject: bytes
) -> None:
    raw = b"From: user@localdomain\r\nTo: shell@localdomain\r\nSubject: " + subject + b"\r\n\r\n"
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    command = command_of(message)
    robot = plain_robot(tmp_path)
    reply = await robot.handle(message)
    body = reply.get_content()
    assert reply["Subject"] == "Exit Code: 2"
    assert body.startswith("Not run: the Subject holds U+")
    assert repr(command) in body  # shown exactly, escapes and all
    assert not (tmp_path / "work").exists()  # nothing ran


async def test_a_tab_in_the_subject_is_fine(robot: ShellRobot) -> None:
    assert await run(robot, "printf '%s|%s\\n' a\tb") == ("Exit Code: 0", "--- stdout ---\na|b\n")
