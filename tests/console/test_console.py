"""The console as a user runs it: a real process, a pseudo-terminal, the scripted model."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pexpect

from tests.support import mbox_messages, wait_until


def mailcoach(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailcoach_server", *args]


def run(*args: str, cwd: Path, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(mailcoach(*args), input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def spawn(*args: str, cwd: Path) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "mailcoach_server", *args], cwd=str(cwd),
                          encoding="utf-8", timeout=30, dimensions=(40, 200))
    return child


def senders(trace_dir: Path) -> list[str]:
    return [str(m["From"]) for m in mbox_messages(trace_dir / "trace")]


def fortune_task(path: Path, model: str) -> Path:
    # The original README's queue example, verbatim but for the model.
    path.write_text(
        "From ----\n"
        "From: user@localdomain\n"
        "To: swe1@localdomain\n"
        f"X-Hint-Model: {model}\n"
        "\n"
        "Generate a fortune using command line.\n"
    )
    return path


def test_queue_runs_the_original_readme_example(tmp_path, model_server):
    model_server.enqueue("To: shell@localdomain\nSubject: echo 'You will write good tests.'\n\n")
    model_server.enqueue("To: user@localdomain\nSubject: your fortune\n\nYou will write good "
                         "tests.")
    task = fortune_task(tmp_path / "task.mbox", model_server.spec())
    result = run("-q", str(task), "-t", "trace", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trace = tmp_path / "trace"
    assert senders(trace) == ["user@localdomain", "swe1@localdomain", "shell@localdomain",
                              "swe1@localdomain"]
    shell_reply = mbox_messages(trace / "trace")[2]
    assert shell_reply["Subject"] == "Exit Code: 0"
    assert "You will write good tests." in shell_reply.get_payload()
    assert "From: shell@localdomain" in result.stdout  # printed as it flowed
    # The default memory was loaded and its path printed.
    assert "memory: " in result.stdout and "(default)" in result.stdout
    first_call = model_server.requests[0]["messages"]
    assert any("Subject: nproc" in m["content"] for m in first_call)  # its first command
    for name in ("trace", "user@localdomain.mbox", "swe1@localdomain.mbox",
                 "shell@localdomain.mbox"):
        assert (trace / name).exists()


def test_a_finished_trace_loads_and_continues(tmp_path, model_server):
    model_server.enqueue("To: user@localdomain\nSubject: fortune\n\nA fortune: patience.")
    task = fortune_task(tmp_path / "task.mbox", model_server.spec())
    assert run("-q", str(task), "-t", "first", cwd=tmp_path).returncode == 0
    # In place: the same directory goes on.
    model_server.enqueue("To: user@localdomain\nSubject: again\n\nIt was patience.")
    result = run("-m", "first", "--model", model_server.spec(), cwd=tmp_path,
                 stdin="What was the fortune?\n")
    assert result.returncode == 0, result.stderr
    seen = "\n".join(m["content"] for m in model_server.requests[-1]["messages"])
    assert "Generate a fortune" in seen and "A fortune: patience." in seen
    assert senders(tmp_path / "first")[-1] == "swe1@localdomain"
    # Into a new trace: the party files become the agents' memories.
    model_server.enqueue("To: user@localdomain\nSubject: third\n\nStill patience.")
    result = run("-m", "first", "-t", "second", "--model", model_server.spec(), cwd=tmp_path,
                 stdin="And now?\n")
    assert result.returncode == 0, result.stderr
    seen = "\n".join(m["content"] for m in model_server.requests[-1]["messages"])
    assert "What was the fortune?" in seen and "It was patience." in seen
    memory = mbox_messages(tmp_path / "second" / "swe1@localdomain.mbox")
    assert memory[-1]["Subject"] == "third"


def test_chat_menu_continuation_and_ctrl_d(tmp_path, model_server):
    model_server.responder = lambda request: "To: user@localdomain\nSubject: ok\n\nnoted"
    child = spawn("-t", "chat", "--model", model_server.spec(), cwd=tmp_path)
    try:
        child.expect("To: .*swe1@localdomain.* Model: .*scripted")
        child.expect("> ")
        child.sendline("first line\\")
        child.sendline("second line")
        child.expect("noted")
        assert model_server.requests[-1]["messages"][-1]["content"].endswith(
            "first line\nsecond line\n")
        child.expect("> ")
        # Menu: pick the shell by letter, set a subject, send.
        child.sendline("")
        child.expect(r"c: shell@localdomain")
        child.expect(r"\? ")
        child.sendline("c")
        child.expect("> ")
        child.sendline("")
        child.expect(r"\? ")
        child.sendline(":echo from-the-chat")
        child.expect("> ")
        child.sendline("ignored stdin")
        child.expect("Exit Code: 0")
        child.expect("from-the-chat")
        child.expect("> ")
        # Menu: a model typed by hand (0), a new address (z) makes a new agent.
        child.sendline("")
        child.expect(r"\? ")
        child.sendline("0")
        child.expect("model: ")
        child.sendline(model_server.spec("typed"))
        child.expect("> ")
        child.sendline("")
        child.expect(r"\? ")
        child.sendline("z")
        child.expect("address: ")
        child.sendline("helper")
        child.expect("To: .*helper@localdomain")
        child.expect("> ")
        child.sendline("hi helper")
        child.expect("From: .*helper@localdomain")
        child.expect("> ")
        assert model_server.requests[-1]["model"] == "typed"
        child.sendeof()
        child.expect("trace saved in chat")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    trace = mbox_messages(tmp_path / "chat" / "trace")
    assert [m["To"] for m in trace if m["From"] == "user@localdomain"] == [
        "swe1@localdomain", "shell@localdomain", "helper@localdomain"]
    assert (tmp_path / "chat" / "helper@localdomain.mbox").exists()


def test_ctrl_c_cancels_the_model_call_not_the_session(tmp_path, model_server):
    model_server.responder = lambda request: "To: user@localdomain\nSubject: late\n\nlate"
    model_server.delay = 5.0
    child = spawn("-t", "cc", "--model", model_server.spec(), cwd=tmp_path)
    try:
        child.expect("> ")
        child.sendline("take your time")
        assert model_server.wait_for_requests(1, timeout=20)
        child.sendintr()
        child.expect("cancelled 1 model call")
        child.expect("cancelled by the user")
        child.expect("> ")
        model_server.delay = 0
        child.sendline("again")
        child.expect("late")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_debug_waits_for_enter_before_each_model_call(tmp_path, model_server):
    model_server.responder = lambda request: "To: user@localdomain\nSubject: ok\n\nanswered"
    child = spawn("-t", "dbg", "--debug", "--model", model_server.spec(), cwd=tmp_path)
    try:
        child.expect("> ")
        child.sendline("hello")
        child.expect("about to call .*scripted")
        child.expect("Press Enter")
        time.sleep(0.5)
        assert model_server.requests == []
        child.sendline("")
        child.expect("answered")
        assert len(model_server.requests) == 1
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()


def ping_pong(request):
    system = request["messages"][0]["content"]
    me = system.split()[2].rstrip(",")
    other = "bob@localdomain" if me == "alice@localdomain" else "alice@localdomain"
    return f"To: {other}\nSubject: ping\n\nyour turn"


def test_budget_stops_a_two_agent_conversation(tmp_path, model_server, tmp_path_factory):
    model_server.responder = ping_pong
    config = tmp_path / "c.yaml"
    config.write_text(f"prices:\n  {model_server.spec()}: {{input: 1000, output: 1000}}\n")
    queue = tmp_path / "q.mbox"
    queue.write_text("From user@localdomain Thu Jan  1 00:00:00 2026\nFrom: user@localdomain\n"
                     "To: alice@localdomain\nCc: bob@localdomain\nSubject: talk\n\nTalk.\n")
    # 10 + 5 tokens at 1000 USD per million = 0.015 per call: 0.05 allows 4 calls.
    result = run("-q", str(queue), "--budget", "0.05", "--config", str(config),
                 "--model", model_server.spec(), "-t", "t", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "budget reached" in result.stdout
    assert len(model_server.requests) == 4


def test_auto_needs_a_budget(tmp_path):
    result = run("--auto", "-q", "whatever.mbox", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--budget" in result.stderr
    assert not list(tmp_path.iterdir())


def test_auto_pilot_plays_the_user_until_the_budget(tmp_path, model_server):
    def both(request):
        system = request["messages"][0]["content"]
        if system.startswith("You play user@localdomain"):
            return "To: swe1@localdomain\nSubject: more\n\nBetter, but go on."
        return "To: user@localdomain\nSubject: work\n\nHere is my work."
    model_server.responder = both
    config = tmp_path / "c.yaml"
    config.write_text(f"prices:\n  {model_server.spec()}: {{input: 1000, output: 1000}}\n")
    task = fortune_task(tmp_path / "task.mbox", model_server.spec())
    result = run("-m", str(task), "--auto", "--budget", "0.07", "--config", str(config),
                 "--model", model_server.spec(), "-t", "auto", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "budget reached" in result.stdout
    assert len(model_server.requests) == 5
    played = [m for m in mbox_messages(tmp_path / "auto" / "trace")
              if m["From"] == "user@localdomain" and m["M-Model"]]
    assert len(played) == 2


def test_bad_inputs_get_one_line_and_leave_nothing(tmp_path):
    (tmp_path / "notmbox.txt").write_text("hello\n")
    (tmp_path / "noto.mbox").write_text("From x\nFrom: user@localdomain\nSubject: s\n\nbody\n")
    cases = [
        (["-m", "notmbox.txt"], "is not an mbox file"),
        (["-m", "missing.mbox"], "no such file"),
        (["-q", "noto.mbox"], "has no To header"),
        (["--frobnicate"], "unrecognized arguments"),
    ]
    for args, expected in cases:
        result = run(*args, "-t", "never", cwd=tmp_path)
        assert result.returncode != 0, args
        assert expected in result.stderr, (args, result.stderr)
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "never").exists()
    (tmp_path / "afile").write_text("")
    result = run("-t", "afile", cwd=tmp_path)
    assert result.returncode != 0 and "not a directory" in result.stderr


def test_kill_9_mid_queue_leaves_a_trace_that_resumes(tmp_path, model_server):
    def answer(request):
        last = request["messages"][-1]["content"]
        subject = next(line for line in last.splitlines() if line.startswith("Subject: "))
        return f"To: user@localdomain\nSubject: done {subject[9:]}\n\nok"
    model_server.responder = answer
    model_server.delay = 0.3
    queue = tmp_path / "q.mbox"
    queue.write_text("".join(
        f"From user@localdomain Thu Jan  1 00:00:00 2026\nFrom: user@localdomain\n"
        f"To: swe1@localdomain\nSubject: job {n}\n\nDo job {n}.\n\n" for n in range(8)))
    proc = subprocess.Popen(mailcoach("-q", str(queue), "-t", "t", "--model",
                                      model_server.spec()),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(model_server.requests) >= 3, timeout=30)
    finally:
        proc.kill()
        proc.wait(10)
    result = run("-m", "t", "-q", str(queue), "--model", model_server.spec(), cwd=tmp_path,
                 timeout=120)
    assert result.returncode == 0, result.stderr
    trace = mbox_messages(tmp_path / "t" / "trace")
    jobs = [m["Subject"] for m in trace if m["From"] == "user@localdomain"]
    answers = [m["Subject"] for m in trace if m["From"] == "swe1@localdomain"]
    assert sorted(jobs) == sorted(f"job {n}" for n in range(8))
    assert sorted(answers) == sorted(f"done job {n}" for n in range(8))


def test_serve_lets_a_mail_client_join_the_chat(tmp_path, model_server):
    import re
    import smtplib

    model_server.responder = lambda request: "To: user@localdomain\nSubject: seen\n\nhello client"
    child = spawn("-t", "srv", "--serve", "--smtp-port", "0", "--imap-port", "0",
                  "--model", model_server.spec(), cwd=tmp_path)
    try:
        child.expect(r"serving: SMTP 127\.0\.0\.1:(\d+)")
        port = int(child.match.group(1))
        child.expect("> ")
        password = (tmp_path / "srv" / "login").read_text().strip()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.login("user@localdomain", password)
            client.sendmail("user@localdomain", ["swe1@localdomain"],
                            b"From: user@localdomain\nTo: swe1@localdomain\n"
                            b"Subject: from a mail client\n\nhi\n")
        child.expect("Subject: .*from a mail client")  # the console shows it as it flows
        child.expect("hello client")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert re.search("from a mail client", (tmp_path / "srv" / "trace").read_text())
