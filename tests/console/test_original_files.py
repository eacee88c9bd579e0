"""The original tool's files load in the console, and ours load with the original's rules.

The fixtures in ``tests/fixtures/original/`` are written in the original's
formats: ``sample0.mbox`` (a memory that starts with a blank line, ``From
----`` separators, no quoting), ``trace_dir/trace`` (its trace) and
``trace_dir/<address>.mbox`` (its saved memories: ``From <sender>`` lines,
the agent's file beginning with the two primer messages, the shell's
empty). What the original would show its model is computed here the way
it read files: the stdlib ``mailbox.mbox`` and ``policy.default``.
"""

from __future__ import annotations

import mailbox
import shutil
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailcoach_server.store import mbox

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "original"
AGENT = "swe1@localdomain"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console as a user runs it, in its own process."""
    return subprocess.run([sys.executable, "-m", "mailcoach_server", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def stdlib_messages(path: Path):
    """The messages as the original read them (``load_mbox``)."""
    box = mailbox.mbox(path, create=False)
    try:
        return [message_from_bytes(box.get_bytes(key), policy=policy.default.clone(utf8=True))
                for key in box.iterkeys()]
    finally:
        box.close()


def original_view(message) -> tuple[str, str, str, str, str]:
    """(role, From, To, Subject, body) of a message in the agent's context, as the original."""
    try:
        body = message.get_content()
    except KeyError:
        body = ""
    role = "assistant" if str(message["From"]).strip() == AGENT else "user"
    return (role, str(message["From"]).strip(), str(message["To"]).strip(),
            str(message["Subject"] or "").strip(), body.strip("\n"))


def seen_view(turn: dict) -> tuple[str, str, str, str, str]:
    """The same five fields of a turn the scripted model received."""
    head, _, body = turn["content"].partition("\n\n")
    fields = dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "")
                  for line in head.split("\n"))
    return (turn["role"], fields.get("From", "").strip(), fields.get("To", "").strip(),
            fields.get("Subject", "").strip(), body.strip("\n"))


def addressed_to_agent(message) -> bool:
    """The original gives an agent, in memory mode, what it sent or was To/Cc on."""
    parties = [str(message["From"]).strip()]
    for name in ("To", "Cc"):
        parties += [a.strip() for a in str(message[name] or "").split(",")]
    return AGENT in parties


def write_queue(path: Path, model: str, body: str) -> Path:
    """A one-message queue; mboxrd (our writer) when the body has From_-like lines."""
    raw = (f"From: user@localdomain\nTo: swe1@localdomain\nSubject: next\n"
           f"X-Hint-Model: {model}\n\n{body}\n").encode()
    if b"From " in raw:
        path.write_bytes(mbox.frame(raw, "user@localdomain", 0)[0])
    else:
        path.write_bytes(b"From ----\n" + raw)  # as the original's README writes one
    return path


def history_seen(model_server) -> list[tuple[str, str, str, str, str]]:
    """The turns of the one model call, after our system turn."""
    assert len(model_server.requests) == 1
    turns = model_server.requests[0]["messages"]
    assert turns[0]["role"] == "system"
    return [seen_view(turn) for turn in turns[1:]]


@pytest.mark.parametrize("memory", ["sample0.mbox", "trace_dir/trace"])
def test_an_original_memory_file_shows_the_model_the_originals_history(
        tmp_path, model_server, memory):
    model_server.enqueue("To: user@localdomain\nSubject: ok\n\nok")
    queue = write_queue(tmp_path / "queue.mbox", model_server.spec(), "What did we do?")
    result = run("-m", str(FIXTURES / memory), "-q", str(queue), "-t", "out",
                 "--model", model_server.spec(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    memory_messages = [m for m in stdlib_messages(FIXTURES / memory) if addressed_to_agent(m)]
    expected = [original_view(m) for m in memory_messages + stdlib_messages(queue)]
    assert history_seen(model_server) == expected
    # The original's mboxo text is not un-quoted: its ">From" line reaches the model as is.
    assert any("\n>From small beginnings" in "\n" + view[4] for view in expected)


def test_an_original_trace_directory_loads_with_its_empty_shell_file(tmp_path, model_server):
    source = FIXTURES / "trace_dir"
    assert (source / "shell@localdomain.mbox").stat().st_size == 0
    model_server.enqueue("To: user@localdomain\nSubject: ok\n\nok")
    queue = write_queue(tmp_path / "queue.mbox", model_server.spec(), "And now?")
    result = run("-m", str(source), "-q", str(queue), "-t", "out",
                 "--model", model_server.spec(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    # The agent's saved context is its whole file, primer messages first.
    saved = stdlib_messages(source / f"{AGENT}.mbox")
    assert [str(m["Subject"]) for m in saved[:2]] == ["Welcome to the system!",
                                                     "RE: Welcome to the system"]
    expected = [original_view(m) for m in saved + stdlib_messages(queue)]
    assert history_seen(model_server) == expected


def test_quoted_from_lines_do_not_drift_across_reloads(tmp_path, model_server):
    sent = "From here on\n>From there\n>>From everywhere"
    answer = "From the model\n>From quoted"
    model_server.responder = lambda request: f"To: user@localdomain\nSubject: ok\n\n{answer}"
    (tmp_path / "empty.mbox").write_bytes(b"")  # a 0-byte memory is an empty one
    # A trace of ours, reloaded as a directory, then that one's memory file reloaded.
    runs = [("first", "empty.mbox", "empty.mbox"), ("second", "first", "first"),
            ("third", f"second/{AGENT}.mbox", "second")]
    remembered: dict[str, list[str]] = {"empty.mbox": []}
    for number, (trace, memory, history_of) in enumerate(runs):
        question = f"{sent}\nrun {number}"
        queue = write_queue(tmp_path / f"q{number}.mbox", model_server.spec(), question)
        result = run("-m", memory, "-q", str(queue), "-t", trace,
                     "--model", model_server.spec(), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        bodies = [view[4] for view in
                  (seen_view(t) for t in model_server.requests[-1]["messages"][1:])]
        # The earlier questions and answers byte for byte, then this question.
        assert bodies == [*remembered[history_of], question]
        remembered[trace] = [*bodies, answer]


def test_a_trace_we_write_loads_with_the_originals_reader(tmp_path, model_server):
    model_server.responder = lambda request: "To: user@localdomain\nSubject: ok\n\nFrom me\n"
    queue = write_queue(tmp_path / "queue.mbox", model_server.spec(), "From you\nbye")
    result = run("-q", str(queue), "-t", "out", "--model", model_server.spec(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "out"
    for name in ("trace", "user@localdomain.mbox", f"{AGENT}.mbox"):
        data = (out / name).read_bytes()
        text = data.decode("utf-8")  # text, nothing binary
        assert not any(ch < " " and ch not in "\n\t" for ch in text), name
        ours = mbox.read(out / name)
        theirs = stdlib_messages(out / name)
        assert len(theirs) == len(ours) >= 2, name
        # Plain "From " separators: every message starts at one, none inside a body.
        assert text.count("\nFrom ") + text.startswith("From ") == len(ours), name
        assert [str(m["Subject"]) for m in theirs] == [
            str(message_from_bytes(raw)["Subject"]) for raw in ours]


def test_a_copied_original_trace_directory_is_not_changed_by_loading(tmp_path, model_server):
    source = tmp_path / "theirs"
    shutil.copytree(FIXTURES / "trace_dir", source)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    model_server.enqueue("To: user@localdomain\nSubject: ok\n\nok")
    queue = write_queue(tmp_path / "queue.mbox", model_server.spec(), "Hello")
    result = run("-m", str(source), "-q", str(queue), "--model", model_server.spec(),
                 cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
