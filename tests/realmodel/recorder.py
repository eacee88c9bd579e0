"""A recording pass-through in front of an OpenAI-compatible server, on 127.0.0.1.

litellm talks to it exactly as to the server behind it; it forwards each request
unchanged and keeps what went and came back, so a test (or ``bench/agent_tasks.py``)
can compare the model's raw words with the mail the runtime stored. It changes
nothing: status, headers that matter and body go back as the server sent them.
Stdlib only (the bench loads it by path).
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Exchange", "RecordingProxy", "model_headers"]

_HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")


def model_headers(text: str) -> dict[str, str]:
    """The header block a model's raw text opens with (lower-cased names), if any."""
    found: dict[str, str] = {}
    for line in text.strip("\n").split("\n"):
        match = _HEADER_LINE.match(line)
        if not line.strip() or match is None:
            break
        found.setdefault(match.group(1).lower(), match.group(2).strip())
    return found


@dataclass(frozen=True, slots=True)
class Exchange:
    """One chat request and the server's answer."""

    request: dict[str, Any]
    status: int
    response: dict[str, Any]

    @property
    def text(self) -> str | None:
        """The model's raw text (None for an error answer)."""
        try:
            return str(self.response["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            return None

    @property
    def parsed_as_mail(self) -> bool:
        """Whether the answer opens with a header block naming To or Subject."""
        return bool({"to", "subject"} & set(model_headers(self.text or "")))

    @property
    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens the server reported."""
        usage = self.response.get("usage") or {}
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, data = self.server.owner._forward(self.path, raw)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: RecordingProxy


class RecordingProxy:
    """Forwards ``POST /v1/...`` to ``upstream`` (a ``.../v1`` base URL) and records chats."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.exchanges: list[Exchange] = []
        #: requests forwarded and not answered yet
        self.in_flight = 0
        self._lock = threading.Lock()
        self._httpd: _Server | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def spec(self, name: str = "gemma") -> str:
        return f"openai/{name}@{self.url}"

    def since(self, start: int) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges[start:])

    def _forward(self, path: str, raw: bytes) -> tuple[int, bytes]:
        suffix = path[len("/v1"):] if path.startswith("/v1") else path
        request = urllib.request.Request(self.upstream + suffix, data=raw,
                                         headers={"Content-Type": "application/json"})
        with self._lock:
            self.in_flight += 1
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                status, data = error.code, error.read()
        except OSError as error:  # the server is gone: say so as a server would
            status = 502
            data = json.dumps({"error": {"message": f"upstream: {error}"}}).encode()
        if suffix.rstrip("/").endswith("/chat/completions"):
            try:
                body, answer = json.loads(raw or b"{}"), json.loads(data or b"{}")
            except ValueError:
                body, answer = {}, {}
            with self._lock:
                self.exchanges.append(Exchange(body, status, answer))
        with self._lock:
            self.in_flight -= 1
        return status, data

    def start(self) -> RecordingProxy:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        threading.Thread(target=self._httpd.serve_forever, name="recording-proxy",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
