"""LiteLLMModel through the real litellm client, over real HTTP, to a scripted server."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mailcoach_server.errors import ModelError
from mailcoach_server.runtime import llm
from mailcoach_server.runtime.llm import (
    MERGED_TURN_SEPARATOR,
    ChatTemplate,
    ChatTurn,
    LiteLLMModel,
    ModelPrice,
    fit_turns,
    missing_key_variables,
    split_model,
    template_for,
)
from tests.fakellm import ScriptedModelServer

TURNS = [ChatTurn("system", "You answer mail."), ChatTurn("user", "Subject: hi\n\nhello")]
KEY_VARIABLES = [
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
    "TOGETHERAI_API_KEY",
    "XAI_API_KEY",
    "COHERE_API_KEY",
]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a real provider."""
    for variable in KEY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def server():
    with ScriptedModelServer() as scripted:
        yield scripted


@pytest.fixture(params=["direct", "acompletion"])
async def make_model(request):
    """Builds LiteLLMModels and closes litellm's clients in this test's event loop.

    Every test using it runs twice: with the direct route for servers named by
    ``@api_base`` (the default), and with every call through ``litellm.acompletion``.
    """
    made: list[LiteLLMModel] = []

    def make(**kwargs) -> LiteLLMModel:
        kwargs.setdefault("direct", request.param == "direct")
        kwargs.setdefault("retries", 0)
        kwargs.setdefault("backoff", 0.01)
        kwargs.setdefault("timeout", 10.0)
        model = LiteLLMModel(**kwargs)
        made.append(model)
        return model

    yield make
    if made:
        await made[0].aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- replies and cost ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["full spec", "name"])
async def test_reply_priced_from_config(server, make_model, caplog, key):
    spec = server.spec("scripted")
    price_key = spec if key == "full spec" else "openai/scripted"
    model = make_model(prices={price_key: ModelPrice(1.0, 2.0)})
    server.enqueue("To: user@localdomain\n\nhello back", prompt_tokens=1000, completion_tokens=500)

    with caplog.at_level(logging.INFO, logger="mailcoach.llm"):
        completion = await model.complete(TURNS, model=spec)

    assert completion.text == "To: user@localdomain\n\nhello back"
    assert completion.model == spec
    assert (completion.tokens_input, completion.tokens_output) == (1000, 500)
    assert completion.cost == pytest.approx(1000 * 1.0 / 1e6 + 500 * 2.0 / 1e6)
    assert 0 < completion.seconds < 10
    [request] = server.requests
    assert request["model"] == "scripted"
    assert request["messages"] == [turn.as_dict() for turn in TURNS]
    [line] = [r.getMessage() for r in caplog.records if r.name == "mailcoach.llm"]
    assert spec in line and "1000 tokens in, 500 out" in line


async def test_reply_priced_from_litellm_cost_map(server, make_model):
    # litellm's map keys OpenAI models without the prefix ("gpt-4o-mini"):
    # the lookup has to strip "openai/".
    model = make_model()
    server.enqueue("hi", prompt_tokens=1_000_000, completion_tokens=1_000_000)
    completion = await model.complete(TURNS, model=server.spec("gpt-4o-mini"))
    assert completion.cost == pytest.approx(0.15 + 0.60)  # $ per million tokens, in and out


async def test_unknown_model_is_priced_at_the_default_and_warns_once(server, make_model, caplog):
    model = make_model()  # the default price: gpt-4o-mini's, 0.15 in / 0.60 out per million
    server.responder = lambda body: "ok"
    server.usage = (1_000_000, 2_000_000)
    spec = server.spec("homegrown-7b")
    with caplog.at_level(logging.WARNING, logger="mailcoach.llm"):
        first = await model.complete(TURNS, model=spec)
        await model.complete(TURNS, model=spec)
    assert first.cost == pytest.approx(0.15 + 2 * 0.60)
    warnings = [r.getMessage() for r in caplog.records if "no price" in r.getMessage()]
    assert warnings == ["no price for openai/homegrown-7b: priced at the default $0.15 in, "
                        "$0.6 out per million tokens; add it under prices: in the config"]


async def test_default_price_is_configurable_and_none_costs_nothing(server, make_model):
    server.responder = lambda body: "ok"
    server.usage = (1_000_000, 1_000_000)
    spec = server.spec("homegrown-7b")
    assert (await make_model(default_price=ModelPrice(1.0, 3.0))
            .complete(TURNS, model=spec)).cost == pytest.approx(4.0)
    assert (await make_model(default_price=None).complete(TURNS, model=spec)).cost == 0.0
    # A known price wins over the default.
    known = await make_model(default_price=ModelPrice(9.0, 9.0)).complete(
        TURNS, model=server.spec("gpt-4o-mini"))
    assert known.cost == pytest.approx(0.15 + 0.60)


def test_find_price_without_importing_litellm():
    code = ("import sys; from mailcoach_server.runtime.llm import find_price, ModelPrice;"
            "p = find_price('openai/gpt-4o-mini', {});"
            "q = find_price('hosted_vllm/my-model@http://127.0.0.1:1/v1', {});"
            "r = find_price('hosted_vllm/my-model@http://127.0.0.1:1/v1',"
            " {'hosted_vllm/my-model': ModelPrice(1, 2)});"
            "print(p.input_per_million, p.output_per_million, q, r.output_per_million,"
            " 'litellm' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["0.15", "0.6", "None", "2", "False"]


def test_price_entries_are_read_one_by_one_as_the_whole_file_has_them():
    # serve's banner looks a few models up; parsing the whole shipped file cost ~60 ms.
    code = ("import json, sys; from mailcoach_server.runtime import llm;"
            "names = sorted(json.loads(llm._bundled_file().read_text('utf-8')))[::97];"
            "full = json.loads(llm._bundled_file().read_text('utf-8'));"
            "same = all(llm._bundled_entry(n) == full[n] for n in names);"
            "print(len(names), same, llm._bundled_entry('no-such-model-anywhere'),"
            " llm._bundled_cost_map is None, 'litellm' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=60, check=True)
    count, same, missing, never_parsed_whole, imported = result.stdout.split()
    assert int(count) > 10
    assert (same, missing, never_parsed_whole, imported) == ("True", "None", "True", "False")


async def test_empty_content_is_empty_text(server, make_model):
    model = make_model()
    server.enqueue("")
    assert (await model.complete(TURNS, model=server.spec())).text == ""


# -- retries and errors -------------------------------------------------------------


async def test_transient_errors_are_retried(server, make_model):
    model = make_model(retries=2, backoff=0.01)
    server.enqueue_error(500, "overloaded")
    server.enqueue_error(500, "overloaded")
    server.enqueue("third time lucky")
    completion = await model.complete(TURNS, model=server.spec())
    assert completion.text == "third time lucky"
    assert len(server.requests) == 3


async def test_rate_limit_is_retried(server, make_model):
    model = make_model(retries=1, backoff=0.01)
    server.enqueue_error(429, "slow down")
    server.enqueue("ok")
    assert (await model.complete(TURNS, model=server.spec())).text == "ok"
    assert len(server.requests) == 2


async def test_persistent_server_error(server, make_model):
    model = make_model(retries=2, backoff=0.01)
    for _ in range(3):
        server.enqueue_error(500, "the GPU caught fire")
    with pytest.raises(ModelError) as caught:
        await model.complete(TURNS, model=server.spec())
    error = caught.value
    assert error.retryable is True
    assert "failed after 3 attempts" in str(error)
    assert "the GPU caught fire" in str(error)
    assert '"server_error"' not in str(error)  # the message, not the error JSON around it
    assert server.base_url in error.hint
    assert len(server.requests) == 3


async def test_rejected_key_names_the_variable(server, make_model):
    model = make_model(retries=3)
    server.enqueue_error(401, "Incorrect API key provided")
    with pytest.raises(ModelError) as caught:
        await model.complete(TURNS, model=server.spec())
    assert caught.value.retryable is False
    assert "OPENAI_API_KEY" in caught.value.hint
    assert "Incorrect API key provided" in str(caught.value)
    assert len(server.requests) == 1  # not retried


async def test_missing_key_is_not_retried_and_names_the_variable(make_model):
    # No api_base: litellm would call api.openai.com, but fails before connecting
    # (it reports the missing key as a 500 InternalServerError).
    model = make_model(retries=3, backoff=5.0)
    with pytest.raises(ModelError) as caught:
        await asyncio.wait_for(model.complete(TURNS, model="openai/gpt-4o-mini"), 5)
    assert caught.value.retryable is False
    assert caught.value.hint == "set OPENAI_API_KEY (the key of openai/gpt-4o-mini)"


async def test_unknown_model_on_server(server, make_model):
    model = make_model()
    server.enqueue_error(404, "The model `nope` does not exist")
    with pytest.raises(ModelError) as caught:
        await model.complete(TURNS, model=server.spec("nope"))
    assert caught.value.retryable is False
    assert caught.value.hint.startswith("check the model name 'openai/nope'")


async def test_unknown_provider(make_model):
    model = make_model()
    with pytest.raises(ModelError) as caught:
        await model.complete(TURNS, model="nosuchprovider/model")
    assert caught.value.hint.startswith("check the model name 'nosuchprovider/model'")


async def test_connection_refused_names_the_server(make_model):
    model = make_model(retries=1, backoff=0.01)
    api_base = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(ModelError) as caught:
        await model.complete(TURNS, model=f"openai/local@{api_base}")
    assert caught.value.retryable is True
    assert caught.value.hint == f"is the server at {api_base} running?"
    assert "Connection error" in str(caught.value)
    assert "SSLContext" not in str(caught.value)  # aiohttp's text names its SSL context


async def test_timeout_is_retryable(server, make_model):
    model = make_model(timeout=0.3)
    server.delay = 1.0
    server.enqueue("too late")
    with pytest.raises(ModelError) as caught:
        await model.complete(TURNS, model=server.spec())
    assert caught.value.retryable is True
    assert caught.value.hint == "no answer within 0.3 s: is the model overloaded?"


async def test_cancellation_is_not_wrapped(server, make_model):
    model = make_model()
    server.delay = 0.5
    server.enqueue("too late")
    task = asyncio.create_task(model.complete(TURNS, model=server.spec()))
    assert await asyncio.to_thread(server.wait_for_requests, 1, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_calls_in_flight_are_capped(server, make_model):
    model = make_model(max_in_flight=2)
    server.delay = 0.2
    server.responder = lambda body: "ok"
    spec = server.spec()
    replies = await asyncio.gather(*(model.complete(TURNS, model=spec) for _ in range(6)))
    assert [r.text for r in replies] == ["ok"] * 6
    assert server.max_concurrent == 2


async def test_scripted_server_serves_concurrently(server, make_model):
    # The cap test above means something only if the server itself is not serial.
    model = make_model(max_in_flight=8)
    server.delay = 0.2
    server.responder = lambda body: "ok"
    spec = server.spec()
    await asyncio.gather(*(model.complete(TURNS, model=spec) for _ in range(4)))
    assert server.max_concurrent == 4


# -- what any server may answer, on both routes ------------------------------------


class FixedAnswerServer:
    """Answers every POST on 127.0.0.1 with one status and body (what fakellm cannot
    send: other servers' error shapes, broken answers); keeps the requests' headers."""

    def __init__(self) -> None:
        self.answer: tuple[int, bytes] = (500, b"")
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, body = owner.answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def spec(self, name: str = "m") -> str:
        return f"openai/{name}@http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@pytest.fixture
def fixed_server():
    server = FixedAnswerServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _completion_json(content: object, usage: dict | None = None) -> bytes:
    body: dict = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": content}}]}
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


VLLM_TOO_LONG = json.dumps({  # vLLM's error shape: the message at the top level
    "object": "error", "type": "BadRequestError", "param": None, "code": 400,
    "message": "This model's maximum context length is 4096 tokens. However, you requested "
               "5000 tokens (5000 in the messages). Please reduce the length of the messages."})


@pytest.mark.parametrize(("status", "body", "retryable", "in_message"), [
    (200, b"<html>oops</html>", True, "InternalServerError"),
    (200, b'{"object": "chat.completion", "choices": []}', True, "returned no choices"),
    (200, b'{"object": "chat.completion", "choices": [{"text": "?"}]}', True,
     "InternalServerError"),
    (400, VLLM_TOO_LONG.encode(), False, "maximum context length is 4096 tokens"),
    (502, b"<html><body>Bad Gateway</body></html>", True, "BadGatewayError"),
], ids=["not-json", "no-choices", "no-message", "vllm-too-long", "html-502"])
async def test_broken_and_foreign_answers_are_model_errors(fixed_server, make_model, status,
                                                           body, retryable, in_message):
    fixed_server.answer = (status, body)
    with pytest.raises(ModelError) as caught:
        await make_model().complete(TURNS, model=fixed_server.spec())
    assert caught.value.retryable is retryable
    assert in_message in str(caught.value)
    assert caught.value.context_exceeded is (status == 400)
    if caught.value.context_exceeded:
        assert "X-Rollback" in caught.value.hint
    elif status >= 500:
        assert caught.value.hint.endswith("failed; try again later")


@pytest.mark.parametrize(("body", "expected"), [
    (_completion_json("hi"), ("hi", 0, 0)),  # no usage: no tokens counted
    (_completion_json(None, {"prompt_tokens": 3, "completion_tokens": 0}), ("", 3, 0)),
    (_completion_json("ok", {"prompt_tokens": 7, "completion_tokens": 2}), ("ok", 7, 2)),
], ids=["no-usage", "null-content", "usage"])
async def test_sparse_answers_are_read(fixed_server, make_model, body, expected):
    fixed_server.answer = (200, body)
    completion = await make_model().complete(TURNS, model=fixed_server.spec())
    assert (completion.text, completion.tokens_input, completion.tokens_output) == expected


async def test_a_server_named_by_api_base_gets_the_providers_key_or_a_placeholder(
        fixed_server, make_model, monkeypatch):
    fixed_server.answer = (200, _completion_json("ok"))
    await make_model().complete(TURNS, model=fixed_server.spec())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    await make_model().complete(TURNS, model=fixed_server.spec())
    assert [h["authorization"] for h in fixed_server.headers] == [
        "Bearer not-needed", "Bearer sk-local"]


# -- the direct route ----------------------------------------------------------------


async def test_both_routes_send_the_same_request(server):
    image = "data:image/png;base64,iVBORw0KGgo="
    turns = [*TURNS, ChatTurn("assistant", "To: user@localdomain\n\nsure"),
             ChatTurn("user", "Subject: look\n\nthis", images=(image,))]
    sent = []
    for direct in (True, False):
        model = LiteLLMModel(direct=direct, retries=0, timeout=10, default_price=None)
        server.enqueue("ok", prompt_tokens=4, completion_tokens=2)
        completion = await model.complete(turns, model=server.spec("qwen"))
        assert (completion.text, completion.tokens_input, completion.tokens_output) == (
            "ok", 4, 2)
        sent.append(server.requests[-1])
        await model.aclose()
    assert sent[0] == sent[1]
    assert sent[0]["model"] == "qwen"
    assert sent[0]["messages"][-1]["content"][1] == {"type": "image_url",
                                                     "image_url": {"url": image}}


@pytest.mark.parametrize(("name", "api_base", "sent_as"), [
    ("openai/qwen", "http://127.0.0.1:8000/v1", "qwen"),
    ("hosted_vllm/meta-llama/Llama-3.1-8B", "http://gpu:8000/v1", "meta-llama/Llama-3.1-8B"),
    ("ollama/llama3.2", "http://127.0.0.1:11434", None),
    ("anthropic/claude-3-5-haiku", "http://127.0.0.1:9/v1", None),
    ("nosuchprovider/model", "http://127.0.0.1:9/v1", None),
], ids=["openai", "hosted-vllm", "ollama", "anthropic", "unknown"])
async def test_direct_route_only_for_openai_compatible_providers(name, api_base, sent_as):
    # Other providers reshape requests and answers: litellm.acompletion calls them.
    litellm = await llm._load_litellm()
    route = llm._DirectRoute.resolve(litellm, name, api_base)
    assert (route.model if route else None) == sent_as
    if route is not None:
        assert route.url == api_base + "/chat/completions"


# -- strict chat templates ----------------------------------------------------------

# What an agent's context looks like after a shell round trip that follows mail
# the agent could not answer: two user turns in a row, then the shell's output.
MAIL_TURNS = [
    ChatTurn("system", "You are swe1@localdomain."),
    ChatTurn("user", "From: user@localdomain\nSubject: uname\n\nRun uname.\n"),
    ChatTurn("user", "From: user@localdomain\nSubject: again\n\nPlease retry.\n"),
    ChatTurn("assistant", "To: shell@localdomain\nSubject: uname\n\n"),
    ChatTurn("user", "From: shell@localdomain\nSubject: Exit Code: 0\n\nLinux\n"),
]


def roles(turns) -> list[str]:
    return [t.role if isinstance(t, ChatTurn) else t["role"] for t in turns]


@pytest.mark.parametrize(
    ("template", "expected_roles", "merged"),
    [
        (ChatTemplate(), ["system", "user", "user", "assistant", "user"], []),
        (ChatTemplate(alternate_roles=True), ["system", "user", "assistant", "user"],
         [[1, 2]]),
        (ChatTemplate(alternate_roles=True, system_role=False), ["user", "assistant", "user"],
         [[0, 1, 2]]),
        (ChatTemplate(system_role=False), ["user", "user", "user", "assistant", "user"], []),
    ],
    ids=["permissive", "alternate", "gemma", "no-system-only"],
)
def test_fit_turns(template, expected_roles, merged):
    fitted = fit_turns(MAIL_TURNS, template)
    assert roles(fitted) == expected_roles
    # Every message's text is kept whole, in order, and merged ones are told apart.
    joined = "".join(t.content for t in fitted)
    position = 0
    for turn in MAIL_TURNS:
        found = joined.find(turn.content, position)
        assert found >= position, turn
        position = found + len(turn.content)
    merged_turns = [t for t in fitted if MERGED_TURN_SEPARATOR in t.content]
    assert len(merged_turns) == len(merged)
    for turn, group in zip(merged_turns, merged, strict=True):
        texts = [MAIL_TURNS[i].content for i in group]
        # Each text ends its own line before the separator line.
        assert turn.content == MERGED_TURN_SEPARATOR.join(
            [t if t.endswith("\n") else t + "\n" for t in texts[:-1]] + texts[-1:])


def test_fit_turns_opens_with_a_user_turn():
    # An agent whose memory starts with its own mail: strict templates want user first.
    turns = [ChatTurn("system", "primer"), ChatTurn("assistant", "mine"), ChatTurn("user", "x")]
    assert fit_turns(turns, ChatTemplate(alternate_roles=True)) == [
        ChatTurn("user", "primer"), ChatTurn("assistant", "mine"), ChatTurn("user", "x")]
    bare = fit_turns(turns[1:], ChatTemplate(alternate_roles=True))
    assert roles(bare) == ["user", "assistant", "user"] and bare[1:] == turns[1:]
    assert fit_turns([], ChatTemplate(True, False)) == []


def test_template_for_matches_patterns_in_order():
    rules = {"*gemma*": {"alternate_roles": True, "system_role": False},
             "openai/GEMMA-3*": {"system_role": True},
             "*@http://127.0.0.1:9/v1": {"alternate_roles": False}}
    assert template_for("hosted_vllm/google/gemma-2-9b-it", rules) == ChatTemplate(True, False)
    assert template_for("openai/gemma-3-27b@http://h:1/v1", rules) == ChatTemplate(True, True)
    assert template_for("openai/gemma-2@http://127.0.0.1:9/v1", rules) == ChatTemplate(
        False, False)
    assert template_for("openai/gpt-4o-mini", rules) == ChatTemplate()
    # The api_base alone does not make a model strict.
    assert template_for("openai/qwen@http://gemma-box:8000/v1", rules) == ChatTemplate()


async def test_strict_server_refuses_then_accepts_fitted_turns(server, make_model):
    server.alternate_roles, server.system_role = True, False  # as vLLM serving Gemma 2
    server.enqueue("To: user@localdomain\n\nLinux it is.")
    spec = server.spec("gemma-2-9b-it")
    with pytest.raises(ModelError) as caught:
        await make_model().complete(MAIL_TURNS, model=spec)
    assert "System role not supported" in str(caught.value)
    assert "models.chat_templates" in caught.value.hint and "gemma-2-9b-it" in caught.value.hint
    assert caught.value.retryable is False

    rules = {"*gemma*": {"alternate_roles": True, "system_role": False}}
    completion = await make_model(templates=rules).complete(MAIL_TURNS, model=spec)
    assert completion.text == "To: user@localdomain\n\nLinux it is."
    assert len(server.rejected) == 1
    sent = server.requests[-1]["messages"]
    assert roles(sent) == ["user", "assistant", "user"]
    assert sent[0]["content"].startswith("You are swe1@localdomain.")
    assert "Run uname." in sent[0]["content"] and "Please retry." in sent[0]["content"]


async def test_strict_server_refuses_two_user_turns_in_a_row(server, make_model):
    server.alternate_roles = True  # system allowed, as Llama 2's template
    with pytest.raises(ModelError) as caught:
        await make_model().complete(MAIL_TURNS, model=server.spec("llama-2-13b-chat"))
    assert "Conversation roles must alternate" in str(caught.value)
    server.enqueue("ok")
    fitted = await make_model(templates={"*llama-2*": {"alternate_roles": True}}).complete(
        MAIL_TURNS, model=server.spec("llama-2-13b-chat"))
    assert fitted.text == "ok"
    assert roles(server.requests[-1]["messages"]) == ["system", "user", "assistant", "user"]


async def test_permissive_models_get_turns_unchanged(server, make_model):
    server.enqueue("ok")
    rules = {"*gemma*": {"alternate_roles": True, "system_role": False}}
    await make_model(templates=rules).complete(MAIL_TURNS, model=server.spec("qwen2.5-7b"))
    assert server.requests[-1]["messages"] == [t.as_dict() for t in MAIL_TURNS]


# -- pure helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("openai/gpt-4o-mini", ("openai/gpt-4o-mini", None)),
        ("openai/qwen@http://127.0.0.1:8000/v1", ("openai/qwen", "http://127.0.0.1:8000/v1")),
        ("hosted_vllm/m@https://gpu.example/v1", ("hosted_vllm/m", "https://gpu.example/v1")),
        ("vertex_ai/claude@20240620", ("vertex_ai/claude@20240620", None)),
        (
            "vertex_ai/claude@20240620@http://127.0.0.1:9/v1",
            ("vertex_ai/claude@20240620", "http://127.0.0.1:9/v1"),
        ),
        ("gpt-4o", ("gpt-4o", None)),
    ],
    ids=["plain", "api-base", "https", "at-in-name", "at-in-name-and-base", "bare"],
)
def test_split_model(spec, expected):
    assert split_model(spec) == expected


def test_missing_key_variables(monkeypatch):
    assert missing_key_variables("openai/gpt-4o-mini") == ["OPENAI_API_KEY"]
    assert missing_key_variables("gpt-4o-mini") == ["OPENAI_API_KEY"]
    assert missing_key_variables("anthropic/claude-3-5-haiku") == ["ANTHROPIC_API_KEY"]
    assert missing_key_variables("together_ai/llama") == ["TOGETHERAI_API_KEY"]
    assert missing_key_variables("openai/qwen@http://127.0.0.1:8000/v1") == []
    assert missing_key_variables("ollama/llama3") == []
    assert missing_key_variables("hosted_vllm/qwen") == []
    assert missing_key_variables("somewhere/else") == []
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("GOOGLE_API_KEY", "g-test")  # litellm takes either for gemini
    assert missing_key_variables("openai/gpt-4o-mini") == []
    assert missing_key_variables("gemini/gemini-2.0-flash") == []
    assert missing_key_variables("anthropic/claude-3-5-haiku") == ["ANTHROPIC_API_KEY"]


def test_chat_turn_as_dict():
    assert ChatTurn("user", "hi").as_dict() == {"role": "user", "content": "hi"}


def test_importing_the_module_does_not_import_litellm():
    code = "import mailcoach_server.runtime.llm, sys; print('litellm' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "False"
