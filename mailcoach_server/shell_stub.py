"""``mailcoach shell-stub``: runs shell commands for the remote-shell robot over HTTP.

A small stdlib HTTP server, meant for a container or another machine::

    POST /run     {"command": "...", "stdin": "...", "timeout": 60}
                  -> {"exit_code": 0, "output": "...", "timed_out": false, "seconds": 0.01}
    GET  /health  -> 200 "ok"

With ``"keep_whole": N`` (bytes) in the request, the answer also has
``"output_bytes"`` (all the output) and, when ``output`` was cut,
``"whole_output_base64"``: the output's first N bytes as written (at most
``MAX_KEEP_WHOLE``), which the robot attaches as ``stdout.txt``.

Commands run exactly as the local shell robot runs them
(``mailcoach_robots.shell.run_command``): in ``--workdir``, output merged and
cut, the process group killed at the time limit (the smaller of the
request's ``timeout`` and ``--timeout``), with the allow-listed environment,
inside bubblewrap when it works here (``--sandbox auto``, the default). As
root without a sandbox the stub refuses to start unless
``--allow-unsandboxed-root``.
When ``MAILCOACH_STUB_TOKEN`` is set, ``/run`` needs
``Authorization: Bearer <token>`` and answers 401 otherwise; without a token
the stub only listens on loopback. Each request runs in its own thread with
its own event loop. This is not a general remote-execution service: no TLS,
no users, one shared working directory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Final

from mailcoach_robots.sandbox import Sandbox
from mailcoach_robots.shell import EXIT_NOT_STARTED, kill_group, run_command

from .errors import ConfigError

__all__ = ["main"]

log = logging.getLogger(__name__)

TOKEN_ENV: Final = "MAILCOACH_STUB_TOKEN"
MAX_REQUEST: Final = 16 * 1024 * 1024
#: most bytes of a cut output sent back whole (``keep_whole``)
MAX_KEEP_WHOLE: Final = 16 * 1024 * 1024


class _Stop(Exception):
    """Raised by the SIGINT/SIGTERM handler to leave ``serve_forever``."""


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        workdir: Path,
        timeout: float,
        sandbox: Sandbox,
        token: str | None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.workdir = workdir
        self.command_timeout = timeout
        self.sandbox = sandbox
        self.token = token
        # Process groups of running commands, shared by the request threads
        # (set.add/discard and tuple(set) are atomic under the GIL).
        self.groups: set[int] = set()

    def kill_running(self) -> None:
        for pgid in tuple(self.groups):
            kill_group(pgid)


class _Handler(BaseHTTPRequestHandler):
    server: _StubServer
    server_version = "mailcoach-shell-stub"

    def log_message(self, format: str, *args: Any) -> None:  # (stdlib signature)
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        else:
            self._send_json(404, {"error": f"no such path {self.path}; try POST /run"})

    def do_POST(self) -> None:
        if self.path != "/run":
            self._send_json(404, {"error": f"no such path {self.path}; try POST /run"})
            return
        if self.server.token is not None:
            given = self.headers.get("Authorization", "")
            expected = f"Bearer {self.server.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                self._send_json(401, {"error": f"missing or wrong bearer token ({TOKEN_ENV})"})
                return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send_json(411, {"error": "Content-Length required"})
            return
        if not 0 <= length <= MAX_REQUEST:
            self._send_json(413, {"error": f"request larger than {MAX_REQUEST} bytes"})
            return
        try:
            request = json.loads(self.rfile.read(length))
            command = request["command"]
            stdin = request.get("stdin", "")
            timeout = request.get("timeout", self.server.command_timeout)
            keep_whole = request.get("keep_whole", 0)
            if not isinstance(command, str) or not command.strip():
                raise ValueError("'command' must be a non-empty string")
            if not isinstance(stdin, str):
                raise ValueError("'stdin' must be a string")
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise ValueError("'timeout' must be a positive number")
            if isinstance(keep_whole, bool) or not isinstance(keep_whole, int) or keep_whole < 0:
                raise ValueError("'keep_whole' must be a number of bytes")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._send_json(400, {"error": f"bad request: {exc}"})
            return
        timeout = min(timeout, self.server.command_timeout)
        self._send_json(200, self._run(command, stdin, timeout, min(keep_whole, MAX_KEEP_WHOLE)))

    def _run(self, command: str, stdin: str, timeout: float, keep_whole: int) -> dict[str, Any]:
        server = self.server
        env = server.sandbox.environment(server.workdir)
        argv_prefix, process_env = server.sandbox.launch(server.workdir, env)
        try:
            server.sandbox.prepare(server.workdir)
            result = asyncio.run(
                run_command(
                    command,
                    stdin.encode("utf-8"),
                    cwd=server.workdir,
                    timeout=timeout,
                    env=process_env,
                    argv_prefix=argv_prefix,
                    process_groups=server.groups,
                    keep_whole=keep_whole,
                )
            )
        except OSError as exc:
            return {
                "exit_code": EXIT_NOT_STARTED,
                "output": f"could not start the command in {server.workdir}: {exc}\n",
                "timed_out": False,
                "seconds": 0.0,
            }
        answer: dict[str, Any] = {
            "exit_code": result.exit_code,
            "output": result.output_text,
            "timed_out": result.timed_out,
            "seconds": round(result.seconds, 3),
        }
        if keep_whole:  # only asked for: an older robot gets the answer it knows
            answer["output_bytes"] = result.output_bytes
            if result.whole_output is not None:
                answer["whole_output_base64"] = base64.b64encode(result.whole_output).decode()
        return answer


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailcoach shell-stub",
        description="Run shell commands for mailcoach's remote-shell robot (POST /run).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8642, help="port (0: any free port)")
    parser.add_argument("--workdir", default="./work", help="where commands run (created)")
    parser.add_argument("--timeout", type=float, default=60.0, help="longest run, in seconds")
    parser.add_argument(
        "--sandbox",
        choices=("auto", "none", "bwrap"),
        default="auto",
        help="auto: bubblewrap when it works here (default)",
    )
    parser.add_argument(
        "--allow-unsandboxed-root",
        action="store_true",
        help="run commands as root when there is no sandbox",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 2 on a usage error."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not _is_loopback(args.host):
        parser.error(f"set {TOKEN_ENV} before listening on {args.host}: anyone could run commands")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        sandbox = Sandbox.choose(
            args.sandbox,
            network=False,
            allow_unsandboxed_root=args.allow_unsandboxed_root,
            key=f"--sandbox {args.sandbox}",
            switch="--allow-unsandboxed-root",
        )
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        server = _StubServer(
            (args.host, args.port),
            workdir=workdir,
            timeout=args.timeout,
            sandbox=sandbox,
            token=token,
        )
    except OSError as exc:
        print(f"shell stub: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else str(host)
    shown = f"[{host}]" if ":" in host else host
    previous: dict[int, Any] = {}
    try:
        # Inside the try: a signal may arrive as soon as its handler is set.
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, stop)
        print(
            f"shell stub listening on http://{shown}:{port} (workdir {workdir}, {sandbox.mode})",
            flush=True,
        )
        server.serve_forever()
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        server.kill_running()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
