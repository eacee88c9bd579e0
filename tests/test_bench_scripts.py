"""The benchmarks run as a user runs them: ``python bench/<name>.py`` from the checkout.

Each runs with its smallest settings in a child process of this Python (the
suite's install: editable, or the wheel under CI), and must exit 0, say it
measured this installed mailcoach and print its figure lines. No speed is
asserted: the figures only have to be there and be numbers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mailcoach_server

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = Path(mailcoach_server.__file__).resolve().parent
NUMBER = r"\d+(?:\.\d+)?"

#: script, its smallest arguments, the figure lines it must print.
BENCHES = {
    "smtp_ingest": (["--messages", "40", "--runs", "2"], [
        rf" 1 session\(s\): bare aiosmtpd +{NUMBER} msg/s, mailcoach +{NUMBER} msg/s, "
        rf"ratio {NUMBER} \({NUMBER}-{NUMBER} over 2 runs\)",
        rf"20 session\(s\): bare aiosmtpd +{NUMBER} msg/s, mailcoach +{NUMBER} msg/s, "
        rf"ratio {NUMBER} \({NUMBER}-{NUMBER} over 2 runs\)",
        rf"mailcoach peak RSS {NUMBER} MiB",
    ]),
    "agent_fanout": (["--agents", "3", "--delay", "0.05"], [
        rf"warm-up answer \(pays the litellm import\): {NUMBER} s",
        rf"3 agents, model latency 50 ms: all answered in {NUMBER} s",
        r"most model calls at once: \d+",
    ]),
    "llm_call_cpu": (["--calls", "2", "--concurrent", "2", "--delay", "0.01", "--warmup", "0"], [
        rf"first call \(imports litellm\): {NUMBER} s",
        rf"LiteLLMModel\.complete +CPU +{NUMBER} ms/call +wall +{NUMBER} ms/call +\d+ Python calls",
        rf"via litellm\.acompletion +CPU +{NUMBER} ms/call +all answered in +{NUMBER} ms",
        rf"bare httpx POST +CPU +{NUMBER} ms/call +wall +{NUMBER} ms/call",
        rf"CPU per call, direct route / acompletion: {NUMBER} in a row, {NUMBER} at once; "
        rf"Python calls {NUMBER}",
    ]),
    "imap_fetch": (["--messages", "50", "--runs", "1"], [
        rf"LOGIN\+SELECT +{NUMBER}ms",
        rf"UID FETCH 1:\* headers +{NUMBER}ms",
        rf"client CPU of it +{NUMBER}ms",
        rf"imaplib waiting for bytes +{NUMBER}ms",
        rf"read raw, not parsed +{NUMBER}ms",
        rf"UID SEARCH ALL +{NUMBER}ms",
        rf"1,000 bodies, one FETCH +{NUMBER}ms",
        # The push may reach the IDLE client before the SMTP client reads its 250: < 0.
        rf"SMTP 250 -> EXISTS \(IDLE\) +-?{NUMBER}ms",
        rf"another client's NOOP, worst +{NUMBER}ms",
        rf"its median +{NUMBER}ms",
    ]),
    "long_memory": (["--messages", "400", "--memory", "200", "--runs", "1"], [
        rf"context of 200 turns: first call {NUMBER} ms, next calls {NUMBER} ms",
        rf"after kill -9 during ingest: SMTP answers {NUMBER} s after start",
        r"\d+ messages got 250 before the kill, 0 missing after restart",
        r"store check: consistent",
    ]),
    "imap_list": (["--runs", "1"], [
        r"tree: \d+ folders of the user's own",
        rf'list_folders LIST "" "\*" +median +{NUMBER} ms +max +{NUMBER} ms',
        rf'imaplib LIST "" "\*" \(round trip\) +median +{NUMBER} ms',
    ]),
    "agent_tasks": (["--scripted", "--tasks", "1"], [
        rf"warm-up answer \(pays the litellm import and loads the model\): {NUMBER} s",
        r"== scripted run: openai/scripted@http://127\.0\.0\.1:\d+/v1 ",
        rf"count_lines +yes +\d+ +\d+ +{NUMBER} +\d+ +\d+  reply",
        r"scripted total: (\d+)/\1 solved, \d+ model calls, \d+ tokens",
    ]),
    "worker_scale": (["--agents", "2", "--delay", "0.05", "--workers", "1"], [
        rf"serve \(one process\) +{NUMBER} s +{NUMBER} msg/s",
        rf"worker x1 +\(Dovecot\) +{NUMBER} s +{NUMBER} msg/s|no Dovecot \+ Postfix here",
        rf"Dovecot \+ Postfix alone +{NUMBER} s +{NUMBER} msg/s|no Dovecot \+ Postfix here",
    ]),
    "startup": (["--runs", "1"], [
        rf"python -c pass +{NUMBER} ms \(baseline\)",
        rf"mailcoach --help +{NUMBER} ms",
        rf"serve until SMTP accepts +{NUMBER} ms",
        r"litellm imported at start: (True|False)",
    ]),
}


def run_bench(name: str, args: list[str]) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.parametrize("name", BENCHES)
def test_bench_prints_its_figures(name: str) -> None:
    args, figures = BENCHES[name]
    out = run_bench(name, args)
    assert f"from {INSTALLED}\n" in out, f"{name} did not measure the installed package:\n{out}"
    for figure in figures:
        assert re.search(figure, out), f"{name}: no line matching {figure!r} in:\n{out}"


def test_imap_fetch_compares_with_dovecot_when_it_is_installed() -> None:
    out = run_bench("imap_fetch", ["--messages", "50", "--runs", "1"])
    if shutil.which("dovecot") or Path("/usr/sbin/dovecot").exists():
        assert re.search(rf"LOGIN\+SELECT +{NUMBER}ms +{NUMBER}ms +{NUMBER}x", out), out
        assert "Dovecot figures: this run" in out, out
    else:
        assert "Dovecot: not installed" in out, out
        assert "Dovecot figures" not in out, out


def test_imap_fetch_without_dovecot_prints_mailcoach_alone() -> None:
    out = run_bench("imap_fetch", ["--messages", "50", "--runs", "1", "--no-dovecot"])
    assert "Dovecot: skipped (--no-dovecot)" in out, out
    assert re.search(rf"LOGIN\+SELECT +{NUMBER}ms +<= 1x Dovecot \(not measured\)", out), out


def test_agent_tasks_starts_swe1_from_the_memory_given(tmp_path: Path) -> None:
    memory = tmp_path / "two.mbox"
    memory.write_text(
        "From user@localdomain Thu Jan  1 00:00:00 2026\nFrom: user@localdomain\n"
        "To: swe1@localdomain\nSubject: hi\n\nhello\n\n"
        "From swe1@localdomain Thu Jan  1 00:00:01 2026\nFrom: swe1@localdomain\n"
        "To: user@localdomain\nSubject: Re: hi\n\nhello to you\n\n")
    out = run_bench("agent_tasks", ["--scripted", "--tasks", "1", "--memory", str(memory)])
    assert f"swe1's memory: {memory} (2 messages)" in out, out
    assert re.search(r"count_lines +yes ", out), out
    missing = subprocess.run([sys.executable, str(ROOT / "bench" / "agent_tasks.py"),
                              "--scripted", "--memory", str(tmp_path / "none.mbox")],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "--memory: no such file" in missing.stderr
