"""Agents doing work: small shell tasks mailed to swe1, each checked on disk or in the reply.

    python bench/agent_tasks.py                      # the bundled Gemma 3 270M on llama.cpp (CPU)
    python bench/agent_tasks.py --model hosted_vllm/NAME@http://gpu:8000/v1   # a vLLM server
    python bench/agent_tasks.py --model openai/gpt-4o-mini                    # a provider (key)
    python bench/agent_tasks.py --scripted           # a scripted model that solves them all

One ``mailcoach serve`` takes every task by SMTP, To swe1@localdomain with an ``X-Rollback``
that keeps swe1's starting memory and forgets earlier tasks (swe1 starts each task from its
shipped memory, or the mbox given with ``--memory``, which is part of what is measured). The
bench makes the task's files in the shell's work directory first, waits for the answer
in the user's mailbox (or a note: the thread stops after ``--rounds`` agent/robot mails),
then checks the file system or the reply. Per task and in total it prints: solved,
model calls, tokens, wall time, model answers that did not parse as mail (no To/Subject
header block; counted where the model is reached through an ``@URL``), and shell
commands that failed (``Exit Code`` not 0); in total also how many model-written mails
carry ``X-Pop-Shell`` (which the shipped memory teaches).

The default model needs ``bash tests/realmodel/setup.sh`` (the test setup runs it): it
caches llama.cpp's server and the GGUF per machine. ``--scripted`` checks the harness,
not a model: its figures are printed apart, under "scripted run".
"""

from __future__ import annotations

import argparse
import email
import email.policy
import email.utils
import importlib.util
import mailbox
import os
import platform
import re
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from importlib import resources
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import (
    PYTHON,
    ROOT,
    child_env,
    require_install,
    scratch,
    scripted_model_server,
    start_server,
    stop,
)

USER, SWE1, SHELL = "user@localdomain", "swe1@localdomain", "shell@localdomain"
REALMODEL = ROOT / "tests" / "realmodel"


def _load(name: str) -> Any:
    """A stdlib-only helper of tests/realmodel, loaded by path (not part of the product)."""
    spec = importlib.util.spec_from_file_location(f"mailcoach_bench_{name}",
                                                  REALMODEL / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- the tasks --------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """One task: what the user asks, the files made first, and the objective check.

    ``commands`` and ``answer`` are what the scripted model does: run these, then mail
    the last output. A real model is told nothing of them.
    """

    name: str
    subject: str
    body: str
    files: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path, str], bool] = lambda work, reply: False
    commands: tuple[str, ...] = ()


def _kernel() -> str:
    return platform.release()


def _pythons() -> set[str]:
    """The versions ``python3`` may name here: on PATH, or the system's in the sandbox."""
    found = set()
    for python in ("python3", "/usr/bin/python3"):
        try:
            out = subprocess.run([python, "--version"], capture_output=True, text=True).stdout
        except OSError:
            continue
        found.update(out.split()[1:2])
    return found


def _names_python(work: Path, reply: str) -> bool:
    return any(re.search(rf"(?<![\d.]){re.escape(v)}(?![\d])", reply) for v in _pythons())


def _file_is(name: str, text: str) -> Callable[[Path, str], bool]:
    return lambda work, reply: (work / name).is_file() and \
        (work / name).read_text(errors="replace").strip() == text


def _reply_has(text: str | Callable[[], str]) -> Callable[[Path, str], bool]:
    return lambda work, reply: (text() if callable(text) else text) in reply


def _reply_number(number: int) -> Callable[[Path, str], bool]:
    # A whole number, not a digit of another ("7" is not solved by "Python 3.11.7").
    pattern = re.compile(rf"(?<![\d.]){number}(?![\d]|\.\d)")
    return lambda work, reply: pattern.search(reply) is not None


def _test_passes(work: Path, reply: str) -> bool:
    test = work / "test_calc.py"
    if test.read_text() != _CALC_TEST:  # the fix must be in calc.py, not the test
        return False
    # Not -P: the test imports calc from its own directory.
    return subprocess.run([sys.executable, str(test)], cwd=work, capture_output=True,
                          timeout=30).returncode == 0


_CALC_TEST = "from calc import add\nassert add(2, 3) == 5, add(2, 3)\nprint('ok')\n"
_POEM = "Roses are red\nViolets are blue\nShells run commands\nAnd agents do too\n"
_NUMBERS = "".join(f"{n}\n" for n in (12, 7, 30, 1, 50))  # 100

TASKS = (
    Task("count_lines", "How many lines?", "How many lines does the file lines.txt have? "
         "Answer with the number.", {"lines.txt": "".join(f"line {i}\n" for i in range(37))},
         _reply_number(37), ("wc -l < lines.txt",)),
    Task("write_file", "Write a file", "Create a file named hello.txt that contains exactly "
         "this text: hello from mailcoach", {}, _file_is("hello.txt", "hello from mailcoach"),
         ("printf 'hello from mailcoach\\n' > hello.txt",)),
    Task("kernel", "Kernel version", "Which Linux kernel version runs on this machine? "
         "Answer with the version.", {}, _reply_has(_kernel), ("uname -r",)),
    Task("find_word", "Find a word", "Which file in the directory tree contains the word "
         "zebra? Answer with its path.",
         {"tree/a/notes.txt": "nothing here\n", "tree/b/c/animals.txt": "lion\nzebra\n",
          "tree/b/list.txt": "apple\n"},
         _reply_has("animals.txt"), ("grep -rl zebra tree",)),
    Task("fix_bug", "Fix the bug", "python3 test_calc.py fails. Fix the one-line bug in "
         "calc.py so that the test passes. Do not change test_calc.py.",
         {"calc.py": "def add(a, b):\n    return a - b\n", "test_calc.py": _CALC_TEST},
         _test_passes, ("sed -i 's/a - b/a + b/' calc.py", "python3 test_calc.py")),
    Task("sum_numbers", "Add numbers", "What is the sum of the numbers in numbers.txt "
         "(one per line)? Answer with the number.", {"numbers.txt": _NUMBERS},
         _reply_number(100), ("awk '{s+=$1} END {print s}' numbers.txt",)),
    Task("make_dir", "Make a directory", "Create a directory named out with an empty file "
         "named done inside it.", {},
         lambda work, reply: (work / "out" / "done").is_file(),
         ("mkdir -p out && touch out/done",)),
    Task("count_files", "Count files", "How many files are in the directory files? Answer "
         "with the number.", {f"files/f{i}.dat": "x\n" for i in range(7)},
         _reply_number(7), ("ls files | wc -l",)),
    Task("python_version", "Python version", "Which version of Python 3 is installed? "
         "Answer with the version number.", {}, _names_python, ("python3 --version",)),
    Task("replace_word", "Change a setting", "In the file config.txt, change red to blue.",
         {"config.txt": "color=red\n"}, _file_is("config.txt", "color=blue"),
         ("sed -i 's/red/blue/' config.txt",)),
    Task("first_line", "First line", "What is the first line of the file poem.txt?",
         {"poem.txt": _POEM}, _reply_has("Roses are red"), ("head -n 1 poem.txt",)),
    Task("copy_file", "Copy a file", "Copy the file source.txt to backup.txt.",
         {"source.txt": "keep me safe\n"}, _file_is("backup.txt", "keep me safe"),
         ("cp source.txt backup.txt",)),
)


# -- the scripted model -----------------------------------------------------------------

def _turn_headers(text: str) -> tuple[dict[str, str], str]:
    head, _, body = text.partition("\n\n")
    headers = {}
    for line in head.split("\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, body


def scripted_answer(request: dict[str, Any]) -> str:
    """Solve the task the conversation is at: the next command, or mail the last output."""
    turns = [str(m.get("content") or "") for m in request.get("messages", [])]
    parsed = [_turn_headers(t) for t in turns]
    start = max((i for i, (h, _) in enumerate(parsed) if h.get("from") == USER), default=0)
    task = next((t for t in TASKS if t.subject == parsed[start][0].get("subject")), None)
    outputs = [body for h, body in parsed[start + 1:] if h.get("from") == SHELL]
    if task is None:
        return f"To: {USER}\nSubject: Re: ?\n\nI do not know this task."
    if len(outputs) < len(task.commands):
        return f"To: {SHELL}\nSubject: {task.commands[len(outputs)]}\n\n"
    last = outputs[-1] if outputs else ""
    return f"To: {USER}\nSubject: Re: {task.subject}\n\nDone. The output was:\n{last}"


# -- running and measuring --------------------------------------------------------------

@dataclass
class Result:
    task: str
    solved: bool = False
    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0
    unparsed: int | None = None
    failed_commands: int = 0
    #: model-written mails in the thread, and those with ``X-Pop-Shell`` (the memory shows it)
    mails: int = 0
    popping: int = 0
    ended: str = ""


def read_mbox(path: Path) -> list[EmailMessage]:
    if not path.exists():
        return []
    box = mailbox.mbox(path, create=False)
    try:
        return [email.message_from_bytes(box.get_bytes(k), policy=email.policy.default)
                for k in box.keys()]
    finally:
        box.close()


def in_thread(message: EmailMessage, root: str) -> bool:
    ids = " ".join(str(message.get(h, "")) for h in ("Message-ID", "In-Reply-To", "References"))
    return root in ids


def make_files(work: Path, files: dict[str, str]) -> None:
    # The shell may run as another user (bwrap as root drops to 65534): give it the files.
    work.mkdir(exist_ok=True)  # the shell makes it at its first command
    owner = work.stat()
    for name, text in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for made in (path, *[p for p in path.parents if work in p.parents]):
            os.chown(made, owner.st_uid, owner.st_gid)


def shipped_memory() -> Path:
    """swe1's memory as installed (``config/memory`` in a checkout)."""
    return Path(str(resources.files("mailcoach_server.defaults").joinpath(
        "memory", f"{SWE1}.mbox")))


def memory_length(path: Path) -> int:
    box = mailbox.mbox(path, create=False)
    try:
        return len(box.keys())
    finally:
        box.close()


def seed_memory(data: Path, memory: Path, work: Path) -> None:
    """Start ``data`` with ``memory`` as swe1's (the console's ``-m``), so serve ships none."""
    empty = work / "empty-queue.mbox"
    empty.write_bytes(b"")
    done = subprocess.run(
        [*PYTHON, "-m", "mailcoach_server", "-m", str(memory), "-q", str(empty), "-t", str(data)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=work, env=child_env(),
        timeout=120)
    if done.returncode != 0 or memory_length(data / f"{SWE1}.mbox") != memory_length(memory):
        raise SystemExit(f"could not load {memory} as swe1's memory:\n{done.stderr[-2000:]}")


def send_task(port: int, password: str, task: Task, root: str, memory: int) -> None:
    """Mail ``task`` to swe1; ``memory`` is how many messages its starting memory has."""
    message = EmailMessage()
    message["From"], message["To"] = USER, SWE1
    message["Subject"] = task.subject
    message["Message-ID"] = root
    # Forget earlier tasks: position N + 1 is the memory's last message (README, X-Rollback).
    message["X-Rollback"] = str(memory + 1)
    message.set_content(task.body)
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.login(USER, password)
        client.send_message(message)


@dataclass
class Run:
    """One server, one model, the proxy that counts its calls (None: no @URL to put it in)."""

    data: Path
    port: int
    password: str
    proxy: Any
    task_timeout: float
    #: messages in swe1's starting memory
    memory: int

    @property
    def work(self) -> Path:
        return self.data / "work"

    def thread(self, root: str) -> list[EmailMessage]:
        return [m for m in read_mbox(self.data / "trace") if in_thread(m, root)]

    def answered(self, root: str) -> EmailMessage | None:
        """The first message in the thread that reached the user (a reply or a note)."""
        for message in self.thread(root):
            if email.utils.parseaddr(str(message["From"]))[1] != USER and \
                    USER in str(message["To"]):
                return message
        return None

    def wait(self, predicate: Callable[[], Any], limit: float) -> Any:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(0.1)
        return None


def _asks(request: dict[str, Any], task: Task) -> bool:
    """Whether a model call was made for ``task`` (its context holds the task's text)."""
    return any(task.body in str(m.get("content") or "") for m in request.get("messages", []))


def warm_up(run: Run) -> float:
    """One question to a throwaway agent, so the first task does not pay litellm's import."""
    root = "<warm-up@bench.localdomain>"
    started = time.perf_counter()
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = USER, "warmup@localdomain", "hello"
    message["Message-ID"] = root
    message.set_content("Say hello.")
    with smtplib.SMTP("127.0.0.1", run.port) as client:
        client.login(USER, run.password)
        client.send_message(message)
    if run.wait(lambda: run.answered(root), run.task_timeout) is None:
        raise SystemExit("no answer to the warm-up message: see the server's log")
    if run.proxy is not None:
        run.wait(lambda: run.proxy.in_flight == 0, 60)
    return time.perf_counter() - started


def measure(run: Run, task: Task, index: int) -> Result:
    """Send one task, wait for the user to hear back, then check and count."""
    root = f"<task-{index}-{task.name}@bench.localdomain>"
    make_files(run.work, task.files)
    started = time.perf_counter()
    send_task(run.port, run.password, task, root, run.memory)
    heard = run.wait(lambda: run.answered(root), run.task_timeout)
    result = Result(task.name, seconds=time.perf_counter() - started)
    if run.proxy is not None:  # let the last call land (a reply may go to the shell too)
        run.wait(lambda: run.proxy.in_flight == 0, 60)
    thread = run.thread(root)
    written = [m for m in thread if m["M-Model"] is not None]
    result.tokens = sum(int(str(m.get(h, 0) or 0)) for m in written
                        for h in ("M-Tokens-Input", "M-Tokens-Output"))
    result.calls = len(written)
    result.mails = len(written)
    result.popping = sum(1 for m in written if m["X-Pop-Shell"] is not None)
    if run.proxy is not None:
        calls = [x for x in run.proxy.since(0) if _asks(x.request, task)]
        result.calls = len(calls)
        result.unparsed = sum(1 for x in calls if x.text is not None and not x.parsed_as_mail)
    result.failed_commands = sum(
        1 for m in thread if email.utils.parseaddr(str(m["From"]))[1] == SHELL
        and re.fullmatch(r"Exit Code: (\d+)", str(m["Subject"])) and
        str(m["Subject"]) != "Exit Code: 0")
    replies = [m for m in thread if email.utils.parseaddr(str(m["From"]))[1] == SWE1
               and USER in str(m["To"])]
    reply = replies[-1].get_body(("plain",)).get_content() if replies else ""
    result.ended = "reply" if replies else ("note" if heard is not None else "timeout")
    try:
        result.solved = bool(task.check(run.work, reply))
    except OSError:
        result.solved = False
    return result



# -- the model under test ---------------------------------------------------------------

def _split(spec: str) -> tuple[str, str | None]:
    name, sep, base = spec.partition("@")
    return (name, base) if sep and base.startswith(("http://", "https://")) else (spec, None)


class Model:
    """Starts what the run talks to: the scripted server, the bundled Gemma, or nothing."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.kind = "scripted" if args.scripted else "real"
        self._stack: list[Any] = []
        self.proxy: Any = None
        self.spec = args.model or ""
        self.about = ""

    def __enter__(self) -> Model:
        upstream: str | None = None
        if self.args.scripted:
            scripted = scripted_model_server()().start()
            scripted.responder = scripted_answer
            self._stack.append(scripted)
            name, upstream = "openai/scripted", scripted.base_url
            self.about = "the tests' scripted model: it knows every answer (checks the harness)"
        elif not self.args.model:
            server_mod = _load("llamaserver")
            try:
                setup = server_mod.find_setup()
            except server_mod.RealModelMissing as missing:
                raise SystemExit(str(missing)) from None
            gemma = server_mod.LlamaServer(setup, self.work / "llama-server.log",
                                           n_ctx=self.args.n_ctx).start()
            self._stack.append(gemma)
            name, upstream = "openai/gemma-3-270m", gemma.url
            self.about = (f"Gemma 3 270M Q4_K_M on llama.cpp, CPU, n_ctx {self.args.n_ctx}, "
                          "greedy")
        else:
            name, upstream = _split(self.args.model)
            self.about = "as given"
        if upstream is not None:
            self.proxy = _load("recorder").RecordingProxy(upstream).start()
            self._stack.append(self.proxy)
            self.spec = f"{name}@{self.proxy.url}"
        return self

    def __exit__(self, *exc: object) -> None:
        for thing in reversed(self._stack):
            (getattr(thing, "stop", None) or thing.close)()


# -- output -----------------------------------------------------------------------------

_COLUMNS = f"{'task':<16}{'solved':>7}{'calls':>7}{'tokens':>9}{'seconds':>9}" \
    f"{'unparsed':>10}{'failed cmds':>13}  ended"


def _row(name: str, solved: str, r: Result | None, totals: dict[str, float]) -> str:
    calls = r.calls if r else totals["calls"]
    tokens = r.tokens if r else totals["tokens"]
    seconds = r.seconds if r else totals["seconds"]
    unparsed = (r.unparsed if r else totals.get("unparsed"))
    failed = r.failed_commands if r else totals["failed"]
    shown = "n/a" if unparsed is None else f"{unparsed:.0f}"
    return (f"{name:<16}{solved:>7}{calls:>7.0f}{tokens:>9.0f}{seconds:>9.1f}{shown:>10}"
            f"{failed:>13.0f}  {r.ended if r else ''}")


def report(kind: str, spec: str, about: str, results: list[Result]) -> None:
    print(f"== {kind} run: {spec} ({about})")
    print(_COLUMNS)
    for r in results:
        print(_row(r.task, "yes" if r.solved else "no", r, {}))
    totals: dict[str, Any] = {
        "calls": sum(r.calls for r in results), "tokens": sum(r.tokens for r in results),
        "seconds": sum(r.seconds for r in results),
        "failed": sum(r.failed_commands for r in results),
        "unparsed": None if any(r.unparsed is None for r in results)
        else sum(r.unparsed or 0 for r in results),
    }
    solved = f"{sum(r.solved for r in results)}/{len(results)}"
    print(_row("total", solved, None, totals))
    print(f"X-Pop-Shell in {sum(r.popping for r in results)} of "
          f"{sum(r.mails for r in results)} model-written mails")
    print(f"{kind} total: {solved} solved, {totals['calls']} model calls, "
          f"{totals['tokens']} tokens, {totals['seconds']:.1f} s")


# -- main -------------------------------------------------------------------------------

def _chosen(spec: str | None) -> tuple[Task, ...]:
    if not spec:
        return TASKS
    if spec.isdigit():
        return TASKS[: int(spec)]
    names = spec.split(",")
    unknown = [n for n in names if n not in {t.name for t in TASKS}]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; known: {', '.join(t.name for t in TASKS)}")
    return tuple(t for t in TASKS if t.name in names)


def _config(data: Path, spec: str, rounds: int) -> dict[str, Any]:
    return {
        "data_dir": str(data), "smtp": {"port": 0}, "imap": {"port": 0},
        "models": {"default": spec, "timeout": 600, "retries": 1, "backoff": 0.5},
        "prices": {spec: {"input": 0.0, "output": 0.0}},
        "limits": {"max_auto_rounds": rounds},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model spec, provider/name[@api_base] "
                        "(default: the bundled Gemma on llama.cpp)")
    parser.add_argument("--scripted", action="store_true",
                        help="a scripted model that solves every task (checks the harness)")
    parser.add_argument("--tasks", help="how many tasks (from the first), or names, comma "
                        f"separated: {', '.join(t.name for t in TASKS)}")
    parser.add_argument("--rounds", type=int, default=8,
                        help="agent/robot mails in a task's thread before the runtime stops it")
    parser.add_argument("--task-timeout", type=float, default=900.0,
                        help="seconds to wait for the user to hear back, per task")
    parser.add_argument("--n-ctx", type=int, default=4096,
                        help="context of the bundled model's server, in tokens")
    parser.add_argument("--memory", type=Path,
                        help="an mbox to start swe1 from instead of its shipped memory "
                        "(ours or a mail client's; not the original tool's, whose primer "
                        "X-Rollback counts differently)")
    args = parser.parse_args()
    if args.scripted and args.model:
        parser.error("--scripted and --model exclude each other")
    require_install()
    tasks = _chosen(args.tasks)
    work = scratch()
    memory = args.memory or shipped_memory()
    if not memory.is_file():
        parser.error(f"--memory: no such file: {memory}")
    with Model(args, work) as model:
        data = work / "data"
        if args.memory:
            seed_memory(data, args.memory, work)
        proc, port, password = start_server(_config(data, model.spec, args.rounds), work)
        try:
            run = Run(data, port, password, model.proxy, args.task_timeout,
                      memory_length(memory))
            warm = warm_up(run)
            results = [measure(run, task, i) for i, task in enumerate(tasks, 1)]
        finally:
            stop(proc)
    print(f"swe1's memory: {memory} ({memory_length(memory)} messages)")
    print(f"warm-up answer (pays the litellm import and loads the model): {warm:.1f} s")
    report(model.kind, model.spec, model.about, results)


if __name__ == "__main__":
    main()
