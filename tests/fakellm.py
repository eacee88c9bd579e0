"""A scripted OpenAI-compatible model server on loopback, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with replies queued by the test
(``enqueue``/``enqueue_error``) or made by a ``responder`` callable, so a test
drives the real litellm client over real HTTP without reaching any provider.
It is not a model: no streaming, no tools, no embeddings.

A strict mode plays the chat templates of vLLM-served Gemma, Mistral and Llama 2:
``alternate_roles = True`` answers 400 "Conversation roles must alternate
user/assistant/user/assistant/..." unless the turns after an optional system turn
go user, assistant, user, ...; ``system_role = False`` answers 400 "System role
not supported" to any system turn. A rejected request keeps the scripted reply
queued, as a real server generates nothing.

    with ScriptedModelServer() as server:
        server.enqueue("To: user@localdomain\\n\\nhello")
        await model.complete(turns, model=server.spec())
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ScriptedModelServer"]

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True, slots=True)
class _Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class _Error:
    status: int
    message: str


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: litellm's client reuses its connections
    disable_nagle_algorithm = True  # else each small response waits ~40 ms for delayed ACK
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, _error_body(404, f"no route {self.path}"))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, _error_body(400, "request body is not JSON"))
            return
        status, payload = self.server.owner._answer(body)
        self._send_json(status, payload)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except ConnectionError:
            # The client gave up (timeout, cancellation): nothing to tell it.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) drops SYNs when 100 agents connect at once;
    # clients then retry after 1, 3, 7... seconds.
    request_queue_size = 256
    owner: ScriptedModelServer


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class ScriptedModelServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 whose answers the test scripts.

    Attributes:
        responder: called with the request JSON when the queue is empty; returns the text.
            Without it an empty queue answers 500 "no scripted reply", so a test notices.
        delay: seconds each request sleeps before answering (in its own thread).
        requests: parsed JSON bodies of every chat request received, in order.
        max_concurrent: the most requests that were being answered at one time.
        usage: (prompt, completion) tokens reported for the responder's replies.
        alternate_roles: strict template: reject turns that do not alternate.
        system_role: False = strict template: reject a system turn.
        rejected: the requests the strict template refused, in order (also in requests).
        context_limit: tokens (4 characters each) a request may hold; above it the answer
            is vLLM's 400 "maximum context length" error. None = no limit.
    """

    def __init__(self) -> None:
        self.responder: Callable[[dict[str, Any]], str] | None = None
        self.delay: float = 0.0
        self.requests: list[dict[str, Any]] = []
        self.max_concurrent = 0
        self.usage: tuple[int, int] = (10, 5)
        self.alternate_roles = False
        self.system_role = True
        self.rejected: list[dict[str, Any]] = []
        self.context_limit: int | None = None
        self._in_flight = 0
        self._queue: deque[_Reply | _Error] = deque()
        self._cond = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> ScriptedModelServer:
        if self._httpd is not None:
            return self
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="scripted-model-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        # Keep-alive connections would hold their handler threads forever:
        # shut them down so each handler sees EOF and closes its socket.
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what tests use --------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def spec(self, name: str = "scripted") -> str:
        """The model string that reaches this server through litellm."""
        return f"openai/{name}@{self.base_url}"

    def enqueue(self, text: str, *, prompt_tokens: int = 10, completion_tokens: int = 5) -> None:
        """Queue one successful reply."""
        with self._cond:
            self._queue.append(_Reply(text, prompt_tokens, completion_tokens))

    def enqueue_error(self, status: int, message: str = "scripted error") -> None:
        """Queue one HTTP error answer in OpenAI's error JSON shape."""
        with self._cond:
            self._queue.append(_Error(status, message))

    def wait_for_requests(self, n: int, timeout: float = 10) -> bool:
        """Block until at least n chat requests arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= n, timeout=timeout)

    # -- called from handler threads ---------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _template_error(self, body: dict[str, Any]) -> str | None:
        """What a strict Jinja chat template would raise for these messages, or None."""
        roles = [str(m.get("role")) for m in body.get("messages") or [] if isinstance(m, dict)]
        if not self.system_role and "system" in roles:
            return "System role not supported"
        if self.alternate_roles:
            rest = roles[1:] if roles[:1] == ["system"] else roles
            for index, role in enumerate(rest):
                if role != ("user" if index % 2 == 0 else "assistant"):
                    return "Conversation roles must alternate user/assistant/user/assistant/..."
        return None

    def _context_error(self, body: dict[str, Any]) -> str | None:
        if self.context_limit is None:
            return None
        tokens = sum(len(str(m.get("content", ""))) for m in body.get("messages") or []
                     if isinstance(m, dict)) // 4
        if tokens <= self.context_limit:
            return None
        return (f"This model's maximum context length is {self.context_limit} tokens. "
                f"However, you requested {tokens} tokens in the messages. Please reduce the "
                "length of the messages.")

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        refusal = self._template_error(body) or self._context_error(body)
        if refusal is not None:
            with self._cond:
                self.requests.append(body)
                self.rejected.append(body)
                self._cond.notify_all()
            return 400, _error_body(400, refusal)
        with self._cond:
            self.requests.append(body)
            self._in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self._in_flight)
            item = self._queue.popleft() if self._queue else None
            self._cond.notify_all()
        try:
            if self.delay:
                time.sleep(self.delay)
            if item is None:
                if self.responder is None:
                    return 500, _error_body(500, "no scripted reply")
                item = _Reply(self.responder(body), *self.usage)
            if isinstance(item, _Error):
                return item.status, _error_body(item.status, item.message)
            return 200, _completion(body, item)
        finally:
            with self._cond:
                self._in_flight -= 1


def _completion(body: dict[str, Any], reply: _Reply) -> dict[str, Any]:
    created = int(time.time())
    return {
        "id": f"chatcmpl-scripted-{created}-{id(reply):x}",
        "object": "chat.completion",
        "created": created,
        "model": str(body.get("model", "scripted")),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }
