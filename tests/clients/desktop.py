"""An X display of the test's own (Xvfb) and the GUI programs run on it.

Every program is started in a new session (its own process group) and
stopped by that group, by PID: nothing the test did not start is touched.
Screenshots are kept in ``build/test-artifacts`` (``MAILCOACH_TEST_ARTIFACTS``
picks another directory), so a run leaves a picture of each client.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import require_tool
from tests.support import wait_until

__all__ = ["Display", "GuiProcess", "artifacts_dir", "poll", "stop_group"]

SOURCE_TREE = Path(__file__).resolve().parents[2]


def artifacts_dir() -> Path:
    default = SOURCE_TREE / "build" / "test-artifacts"
    path = Path(os.environ.get("MAILCOACH_TEST_ARTIFACTS") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Call ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    return wait_until(predicate, timeout, what, interval)


def stop_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the process group the test started, then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # GUI programs leave helpers behind (and may ignore SIGTERM in a modal dialog)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


class GuiProcess:
    """A program on the display, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def stop(self, grace: float = 10.0) -> None:
        stop_group(self.proc, grace)


class Display:
    """``Xvfb`` on a free display number (``-displayfd``), torn down with its programs."""

    def __init__(self, workdir: Path, size: str = "1280x900x24") -> None:
        self.workdir = workdir
        self.size = size
        self.name = ""
        self._xvfb: subprocess.Popen[bytes] | None = None
        self._programs: list[GuiProcess] = []

    def start(self) -> Display:
        xvfb = require_tool("Xvfb")
        read_fd, write_fd = os.pipe()
        log = open(self.workdir / "xvfb.log", "ab")  # noqa: SIM115 - closed below
        try:
            self._xvfb = subprocess.Popen(
                [xvfb, "-displayfd", str(write_fd), "-screen", "0", self.size, "-nolisten", "tcp"],
                pass_fds=(write_fd,), stdout=log, stderr=log, start_new_session=True)
        finally:
            os.close(write_fd)
            log.close()
        with os.fdopen(read_fd) as numbers:  # Xvfb writes the number once it is ready
            number = numbers.readline().strip()
        if not number:
            raise AssertionError("Xvfb did not start: " + (self.workdir / "xvfb.log").read_text())
        self.name = f":{number}"
        return self

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DBUS_", "WAYLAND_", "MOZ_HEADLESS"))}
        env.update({"DISPLAY": self.name, "NO_AT_BRIDGE": "1", "GTK_A11Y": "none", **extra})
        return env

    def launch(self, args: list[str], log: Path, **env: str) -> GuiProcess:
        program = GuiProcess(args, self.env(**env), log)
        self._programs.append(program)
        return program

    def run(self, args: list[str], timeout: float = 30,
            **env: str) -> subprocess.CompletedProcess[str]:
        """A short command on the display (xdotool, a client's remote-control flag)."""
        return subprocess.run(args, env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def windows(self, pattern: str) -> list[str]:
        xdotool = require_tool("xdotool")
        result = self.run([xdotool, "search", "--name", pattern])
        return result.stdout.split()

    def window_names(self) -> list[str]:
        xdotool = require_tool("xdotool")
        result = self.run([xdotool, "search", "--name", "", "getwindowname", "%@"])
        return [name for name in result.stdout.splitlines() if name]

    def keys(self, window: str, *keys: str) -> None:
        """Focus ``window`` (there is no window manager) and type ``keys`` into it."""
        xdotool = require_tool("xdotool")
        self.run([xdotool, "windowfocus", "--sync", window])
        result = self.run([xdotool, "key", "--clearmodifiers", *keys])
        assert result.returncode == 0, result.stderr

    def screenshot(self, path: Path) -> Path:
        importer = require_tool("import")
        result = self.run([importer, "-window", "root", str(path)])
        assert result.returncode == 0 and path.stat().st_size > 0, result.stderr
        return path

    def stop(self) -> None:
        for program in reversed(self._programs):
            program.stop()
        if self._xvfb is not None:
            stop_group(self._xvfb)

    def __enter__(self) -> Display:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

