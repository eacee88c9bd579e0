"""The one seam to language models: litellm, imported lazily, behind ``ChatModel``.

This is the only module that imports litellm, and it does so on the first
model call (in a worker thread: the import alone takes seconds and must not
stall the mail servers' event loop). It owns what a model call needs around
litellm: the ``provider/model[@api_base]`` spelling, a cap on calls in flight,
retries with backoff for transient failures, the price of a call (a default
price for models nobody priced, so budgets hold with every model), the turn
shapes strict chat templates demand (``fit_turns``), and turning every
provider failure into a ``ModelError`` that says how to fix it. Calls to an
OpenAI-compatible server named by ``@api_base`` skip ``litellm.acompletion``'s
per-call logging and cost bookkeeping (``_DirectRoute``): a sixth of the CPU.

It deliberately knows nothing of mail: turning a thread into chat turns and
model text into a message happens elsewhere.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import mmap
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Protocol, TypeVar

from ..errors import ModelError

__all__ = [
    "DEFAULT_PRICE",
    "MERGED_TURN_SEPARATOR",
    "ChatTemplate",
    "ChatTurn",
    "Completion",
    "ModelPrice",
    "ChatModel",
    "LiteLLMModel",
    "find_price",
    "fit_turns",
    "split_model",
    "missing_key_variables",
    "template_for",
]

log = logging.getLogger("mailcoach.llm")

_T = TypeVar("_T")

# provider -> the variables litellm reads its key from; any one of them will do,
# the first is the one we tell the user to set.
_KEY_VARIABLES: Final[Mapping[str, tuple[str, ...]]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    # Local servers need no key.
    "ollama": (),
    "ollama_chat": (),
    "vllm": (),
    "hosted_vllm": (),
    "lm_studio": (),
}

# Model names litellm routes without a provider prefix.
_BARE_NAME_PROVIDERS: Final = (
    (re.compile(r"(gpt-|chatgpt-|o\d)"), "openai"),
    (re.compile(r"claude-"), "anthropic"),
)

# "@" starts an api_base only when a URL follows: "vertex_ai/claude@20240620" is a name.
_API_BASE_AT: Final = re.compile(r"@(?=https?://)")

# litellm exception classes worth another attempt (looked up by name: not all exist
# in every version).
_TRANSIENT_NAMES: Final = (
    "RateLimitError",
    "Timeout",
    "APIConnectionError",
    "InternalServerError",
    "ServiceUnavailableError",
    "BadGatewayError",
)

# What Jinja chat templates raise (Mistral, Llama 2, Gemma), as vLLM and TGI pass it on.
_STRICT_TEMPLATE_ERROR: Final = re.compile(
    r"roles must alternate|system role not supported|must start with (a )?user", re.IGNORECASE
)

_PLACEHOLDER_KEY: Final = "not-needed"
_MAX_MESSAGE: Final = 600


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One message of a chat: role is "system", "user" or "assistant"."""

    role: str
    content: str
    #: ``data:`` URLs of the message's images, for a model that takes images
    images: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        if not self.images:
            return {"role": self.role, "content": self.content}
        # litellm's (OpenAI's) multimodal message: text first, then the images
        return {"role": self.role, "content": [
            {"type": "text", "text": self.content},
            *({"type": "image_url", "image_url": {"url": url}} for url in self.images)]}


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer and what it cost.

    Attributes:
        text: the reply text ("" when the model returned none).
        model: the model spec exactly as the caller gave it.
        tokens_input: prompt tokens, as the provider reported them.
        tokens_output: completion tokens.
        cost: in US dollars; 0.0 when no price is known.
        seconds: how long the successful call took (retries and waits not counted).
    """

    text: str
    model: str
    tokens_input: int
    tokens_output: int
    cost: float
    seconds: float


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Dollars per million tokens, as providers quote them."""

    input_per_million: float
    output_per_million: float

    def cost(self, tokens_input: int, tokens_output: int) -> float:
        return (
            tokens_input * self.input_per_million + tokens_output * self.output_per_million
        ) / 1_000_000


#: What a model litellm has no price for costs unless the config says otherwise:
#: gpt-4o-mini's price, as the original tool charged, so a budget in USD still ends.
DEFAULT_PRICE: Final = ModelPrice(0.15, 0.60)


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """What a model's chat template accepts (vLLM and HF templates raise on the rest).

    Attributes:
        alternate_roles: turns must go user, assistant, user, ... (after an optional
            system turn): consecutive turns of one role are merged into one.
        system_role: a system turn is accepted; when False its text opens the first
            user turn instead (Gemma: "System role not supported").
    """

    alternate_roles: bool = False
    system_role: bool = True


#: Between two messages merged into one turn: a line no mail header or body starts
#: a message with, so the model still sees where each message begins.
MERGED_TURN_SEPARATOR: Final = "\n-------- next message --------\n\n"
# The user turn put first when a strict template would otherwise open with the assistant.
_OPENING_TURN: Final = "(the conversation so far follows)"


def fit_turns(turns: Sequence[ChatTurn], template: ChatTemplate) -> list[ChatTurn]:
    """``turns`` reshaped for ``template``; unchanged for a permissive one.

    Merging, not padding: an empty turn of the other role (what the original tool
    inserted for Gemma) teaches a model to answer with empty mail. Merged texts are
    kept whole, joined by ``MERGED_TURN_SEPARATOR``.
    """
    fitted = list(turns)
    if not template.system_role:
        # Its text becomes the first user turn, merged below with the user text after it.
        fitted = [ChatTurn("user", t.content) if t.role == "system" else t for t in fitted]
    if not template.alternate_roles:
        return fitted
    system = [t for t in fitted[:1] if t.role == "system"]
    rest = fitted[len(system):]
    merged: list[ChatTurn] = []
    for turn in rest:
        role = "user" if turn.role == "system" else turn.role  # a later system turn: tell it
        if merged and merged[-1].role == role:
            merged[-1] = replace(merged[-1], content=_join(merged[-1].content, turn.content),
                                 images=merged[-1].images + turn.images)
        else:
            merged.append(ChatTurn(role, turn.content, turn.images))
    if merged and merged[0].role != "user":
        if system:  # the primer becomes the user turn that opens the conversation
            merged.insert(0, ChatTurn("user", system.pop().content))
        else:
            merged.insert(0, ChatTurn("user", _OPENING_TURN))
    return system + merged


def _join(first: str, second: str) -> str:
    return first + ("" if first.endswith("\n") else "\n") + MERGED_TURN_SEPARATOR + second


def template_for(spec: str, rules: Mapping[str, Mapping[str, bool]]) -> ChatTemplate:
    """The template settings of ``spec`` from ``models.chat_templates`` style rules.

    ``rules`` maps shell-style patterns (``*gemma*``), matched without regard to case
    against the model name (``provider/model``: a server's address saying "gemma"
    does not make a model strict), or against the whole spec for a pattern with an
    ``@``, to settings; every matching rule applies in order, a later one winning.
    """
    name = split_model(spec)[0].lower()
    settings: dict[str, bool] = {}
    for pattern, values in rules.items():
        lowered = pattern.lower()
        if fnmatchcase(spec.lower() if "@" in lowered else name, lowered):
            settings.update(values)
    return ChatTemplate(**settings)


class ChatModel(Protocol):
    """What the agent runtime needs from a model; tests may substitute a fake."""

    async def complete(self, turns: Sequence[ChatTurn], *, model: str) -> Completion: ...


def split_model(spec: str) -> tuple[str, str | None]:
    """Split ``provider/model[@api_base]`` into the litellm model name and api_base.

    >>> split_model("openai/qwen@http://127.0.0.1:8000/v1")
    ('openai/qwen', 'http://127.0.0.1:8000/v1')
    >>> split_model("vertex_ai/claude@20240620")
    ('vertex_ai/claude@20240620', None)
    """
    match = _API_BASE_AT.search(spec)
    if match is None:
        return spec, None
    return spec[: match.start()], spec[match.end() :]


def _provider(name: str) -> str | None:
    if "/" in name:
        return name.split("/", 1)[0].lower()
    for pattern, provider in _BARE_NAME_PROVIDERS:
        if pattern.match(name):
            return provider
    return None


def _key_variables(name: str) -> tuple[str, ...]:
    provider = _provider(name)
    return _KEY_VARIABLES.get(provider, ()) if provider else ()


def missing_key_variables(spec: str) -> list[str]:
    """The environment variables to set before ``spec`` can be called; [] if none.

    A spec with an ``@api_base`` needs no key (local servers take none), nor does
    a provider this table does not know (litellm may find credentials elsewhere).
    Cheap: it does not import litellm.
    """
    name, api_base = split_model(spec)
    if api_base is not None:
        return []
    variables = _key_variables(name)
    if not variables or any(os.environ.get(v) for v in variables):
        return []
    return [variables[0]]


# -- prices ------------------------------------------------------------------------

_COST_MAP_FILE: Final = "model_prices_and_context_window_backup.json"
_bundled_cost_map: Mapping[str, Mapping[str, Any]] | None = None
#: model name -> its entry in the file litellm ships (None: not there), found one by one
_bundled_entries: dict[str, Mapping[str, Any] | None] = {}
# How the shipped file is laid out (json.dump with indent=4): each model opens a line.
_PRETTY_START: Final = b'{\n    "'
_ENTRY_END: Final = b"\n    }"


def _bundled_file() -> Path | None:
    found = importlib.util.find_spec("litellm")
    for folder in (found.submodule_search_locations or []) if found else []:
        path = Path(folder) / _COST_MAP_FILE
        if path.is_file():
            return path
    return None


def _whole_bundled_map() -> Mapping[str, Mapping[str, Any]]:
    global _bundled_cost_map
    if _bundled_cost_map is None:
        _bundled_cost_map = {}
        path = _bundled_file()
        try:
            _bundled_cost_map = json.loads(path.read_text("utf-8")) if path else {}
        except (OSError, ValueError):
            pass
    return _bundled_cost_map


def _bundled_entry(key: str) -> Mapping[str, Any] | None:
    """``key``'s entry in the price file litellm ships, read without importing litellm.

    Only that entry is parsed (the whole 3 MB file takes ~60 ms, paid by every
    ``serve`` start for one banner line): the file is pretty-printed, one model
    opening each line. A key this cannot find for sure (another layout, a name
    JSON would escape) falls back to parsing the whole file.
    """
    if key in _bundled_entries:
        return _bundled_entries[key]
    if _bundled_cost_map is not None or not key.isascii() or '"' in key or "\\" in key:
        return _whole_bundled_map().get(key)
    path = _bundled_file()
    try:
        with open(path or os.devnull, "rb") as file, \
                mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:len(_PRETTY_START)] != _PRETTY_START:
                return _whole_bundled_map().get(key)
            opening = b'\n    "' + key.encode() + b'": {'
            start = data.find(opening)
            end = data.find(_ENTRY_END, start + len(opening)) if start >= 0 else -1
            text = data[start + len(opening) - 1:end + len(_ENTRY_END)] if end >= 0 else b"null"
    except (OSError, ValueError):  # no file, or an empty one (mmap refuses those)
        return _whole_bundled_map().get(key)
    try:
        value = json.loads(text)
    except ValueError:
        return _whole_bundled_map().get(key)
    entry = value if isinstance(value, dict) else None
    _bundled_entries[key] = entry
    return entry


def _cost_entry(key: str) -> Mapping[str, Any] | None:
    """litellm's price entry for ``key``: its live table once imported, else the file
    it ships (with LITELLM_LOCAL_MODEL_COST_MAP litellm loads that same file)."""
    if _litellm is not None:
        entry: Mapping[str, Any] | None = getattr(_litellm, "model_cost", {}).get(key)
        return entry
    return _bundled_entry(key)


def find_price(spec: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``spec``: ``prices`` (by full spec or by name), then litellm's table.

    None when neither knows the model; the caller decides (a default price, or 0).
    """
    name = split_model(spec)[0]
    for key in (spec, name):
        if key in prices:
            return prices[key]
    candidates = [name]
    if "/" in name:
        candidates.append(name.split("/", 1)[1])  # the map keys OpenAI models bare
    for key in candidates:
        entry = _cost_entry(key)
        if entry is None:
            continue
        per_input = entry.get("input_cost_per_token")
        per_output = entry.get("output_cost_per_token")
        if per_input is not None and per_output is not None:
            return ModelPrice(float(per_input) * 1e6, float(per_output) * 1e6)
    return None


def takes_images(spec: str, patterns: Sequence[str] = ()) -> bool:
    """Whether ``spec`` takes images: ``models.vision`` patterns, else litellm's model list."""
    name = split_model(spec)[0].lower()
    if any(fnmatchcase(name, p.lower()) or fnmatchcase(spec.lower(), p.lower())
           for p in patterns):
        return True
    for key in (name, name.split("/", 1)[1]) if "/" in name else (name,):
        entry = _cost_entry(key)
        if entry and entry.get("supports_vision") is True:
            return True
    return False


def known_input_limit(spec: str) -> int | None:
    """Input tokens litellm's model list gives ``spec`` (``max_input_tokens``), if any."""
    name = split_model(spec)[0]
    for key in (name, name.split("/", 1)[1]) if "/" in name else (name,):
        entry = _cost_entry(key)
        limit = entry.get("max_input_tokens") if entry else None
        if isinstance(limit, int) and limit > 0:
            return limit
    return None


# -- litellm, loaded on first use -----------------------------------------------

_litellm: ModuleType | None = None


def _import_litellm() -> ModuleType:
    # Without these the import tries to download a price table.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    module = importlib.import_module("litellm")
    # Else every exception also prints "Give Feedback / Get Help" to stdout.
    module.suppress_debug_info = True  # type: ignore[attr-defined]
    return module


async def _load_litellm() -> ModuleType:
    global _litellm
    if _litellm is None:
        # In a thread, so the SMTP/IMAP servers keep answering during the ~4 s import;
        # concurrent first calls are serialised by Python's import lock.
        _litellm = await asyncio.to_thread(_import_litellm)
    return _litellm


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _refused(exc: BaseException) -> bool:
    for link in _chain(exc):
        if isinstance(link, ConnectionError):
            return True
        if type(link).__name__ in ("ConnectError", "ClientConnectorError"):
            return True
    return "Connection error" in str(exc) or "Cannot connect to host" in str(exc)


def _summary(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


# -- the direct route: litellm's HTTP layer, without its per-call bookkeeping ------

#: Providers litellm reaches with OpenAI's chat JSON as it is: for a call that sets
#: no parameters, their chat config only reshapes the messages.
_DIRECT_PROVIDERS: Final = frozenset({"openai", "hosted_vllm"})


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a call returned, whichever route it took."""

    text: str
    tokens_input: int
    tokens_output: int


@dataclass(frozen=True, slots=True)
class _DirectRoute:
    """How litellm reaches one OpenAI-compatible server (a spec with ``@api_base``).

    ``litellm.acompletion`` costs 5-10 ms of CPU per call on a 2-core machine
    (~6,300 Python function calls; this route makes ~1,050, a bare httpx POST
    ~1,550; ``bench/llm_call_cpu.py`` measures all three): its ``@client`` wrapper
    builds a logging
    object, prices the answer several times over litellm's model list, builds the
    standard logging payload for callbacks, and prepares the request in a worker
    thread; for ``openai/`` the OpenAI SDK then adds its own request pipeline. A
    mail server needs none of that: it has no litellm callbacks, prices the call
    from its own table (``find_price``) and retries in ``LiteLLMModel._call``.

    This route keeps litellm's parts that shape what goes over the wire, the
    ones litellm's own ``hosted_vllm`` route is made of: ``get_llm_provider``
    and the provider's chat config (request body, URL and headers), litellm's
    ``AsyncHTTPHandler`` (the aiohttp transport and its connection pool, closed
    by ``close_litellm_async_clients``), the provider's error class and
    ``exception_type``, which turns every failure into the litellm exception
    ``acompletion`` raises for it. It reads only the answer's text and usage.
    """

    model: str  # the name the server is sent, as litellm resolves it
    provider: str
    api_base: str
    url: str  # the chat completions endpoint under api_base
    config: Any  # litellm's chat config of the provider

    @classmethod
    def resolve(cls, litellm: ModuleType, name: str, api_base: str) -> _DirectRoute | None:
        """The route to ``name`` at ``api_base``; None when litellm should make the call."""
        try:
            model, provider, _, _ = litellm.get_llm_provider(model=name, api_base=api_base)
            if provider not in _DIRECT_PROVIDERS:
                return None
            config = litellm.ProviderConfigManager.get_provider_chat_config(
                model=model, provider=litellm.LlmProviders(provider))
            url = config.get_complete_url(api_base=api_base, api_key=None, model=model,
                                          optional_params={}, litellm_params={})
        except Exception:  # noqa: BLE001 - acompletion reports what is wrong with the spec
            return None
        return cls(model, provider, api_base, url, config)

    async def complete(self, litellm: ModuleType, messages: list[dict[str, Any]],
                       api_key: str, time_limit: float) -> _Answer | None:
        """One attempt, ``time_limit`` seconds given to the HTTP client as acompletion
        gives it; raises what ``litellm.acompletion`` would raise. None: the answer
        had no choices (acompletion returns those too)."""
        http = importlib.import_module("litellm.llms.custom_httpx.http_handler")
        mapping = importlib.import_module("litellm.litellm_core_utils.exception_mapping_utils")
        try:
            try:
                litellm_params = {"custom_llm_provider": self.provider}
                headers = self.config.validate_environment(
                    headers={}, model=self.model, messages=messages, optional_params={},
                    litellm_params=litellm_params, api_key=api_key, api_base=self.api_base)
                body = await self.config.async_transform_request(
                    model=self.model, messages=messages, optional_params={},
                    litellm_params=litellm_params, headers=headers)
                client = http.get_async_httpx_client(llm_provider=litellm.LlmProviders(
                    self.provider))
                response = await client.post(self.url, headers=headers, data=json.dumps(body),
                                             timeout=time_limit)
                return _read_answer(response.content)
            except Exception as exc:
                raise self._provider_error(litellm, exc) from exc
        except Exception as exc:
            # As acompletion does; exception_type raises the mapped exception itself.
            raise mapping.exception_type(model=self.model, custom_llm_provider=self.provider,
                                         original_exception=exc, completion_kwargs={},
                                         extra_kwargs={}) from exc

    def _provider_error(self, litellm: ModuleType, exc: Exception) -> Exception:
        """``exc`` as the provider's litellm error, as litellm's HTTP handler makes it."""
        if isinstance(exc, litellm.exceptions.Timeout):
            return exc  # litellm's HTTP handler made it already
        answer: Any = getattr(exc, "response", None)
        if isinstance(exc, _UnreadableAnswer):
            status, text, headers = 500, str(exc), {}
        elif isinstance(getattr(answer, "status_code", None), int) and hasattr(answer, "text"):
            # An HTTP error status: OpenAI's error JSON, or whatever the server said.
            status, text, headers = answer.status_code, _error_text(answer.text), dict(
                answer.headers)
        else:  # no answer at all: connection refused, reset, ...
            status, text, headers = _status_of(exc), _no_answer_text(exc), {}
        error: Exception = self.config.get_error_class(error_message=text, status_code=status,
                                                       headers=headers)
        return error


class _UnreadableAnswer(ValueError):
    """A 200 answer that is not a chat completion."""


def _read_answer(raw: bytes) -> _Answer | None:
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise _UnreadableAnswer(f"the answer is not JSON: {raw[:200]!r}") from exc
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if choices == []:
        return None
    first = choices[0] if isinstance(choices, list) else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise _UnreadableAnswer(f"the answer is not a chat completion: {raw[:200]!r}")
    content = message.get("content")
    usage = payload.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return _Answer(content if isinstance(content, str) else "",
                   _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _no_answer_text(exc: Exception) -> str:
    """What went wrong before any answer, as the OpenAI SDK says it ("Connection
    error.") with the system's reason; aiohttp's own text names SSL contexts."""
    reasons = [link for link in _chain(exc) if isinstance(link, OSError)]
    if reasons:  # the innermost: the system's own words
        reason = reasons[-1]
        return f"Connection error: {reason}"
    return str(exc) or type(exc).__name__


def _status_of(exc: Exception) -> int:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else 500


def _error_text(body: str) -> str:
    """The message of an error answer: OpenAI's ``{"error": {"message"}}``, vLLM's
    ``{"message"}``, else the body itself (the OpenAI SDK reads the same places)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if not isinstance(payload, dict):
        return body
    error = payload.get("error")
    for text in (error.get("message") if isinstance(error, dict) else error,
                 payload.get("message")):
        if isinstance(text, str) and text:
            return text
    return body


class LiteLLMModel:
    """Calls models through litellm: ``litellm.acompletion``, or for an OpenAI-compatible
    server named by ``@api_base`` litellm's HTTP layer directly (``_DirectRoute``).

    Args:
        prices: per-model prices that win over litellm's cost map, keyed by the full
            spec or by the model name without ``@api_base``.
        default_price: for a model neither ``prices`` nor litellm knows; None = it
            costs 0 (and only a token budget stops it).
        templates: ``models.chat_templates`` rules: model pattern -> ``ChatTemplate``
            settings, for servers whose chat template is strict about roles.
        timeout: seconds one attempt may take.
        retries: further attempts after a transient failure (rate limit, 5xx,
            timeout, connection error).
        backoff: seconds before the first retry; doubled for each next one.
        max_in_flight: calls in flight at once, across every agent using this object.
        direct: calls to an OpenAI-compatible server named by ``@api_base`` take
            ``_DirectRoute`` (litellm's HTTP layer without its per-call logging and
            cost bookkeeping); False sends every call through ``litellm.acompletion``.
    """

    def __init__(
        self,
        *,
        prices: Mapping[str, ModelPrice] | None = None,
        default_price: ModelPrice | None = DEFAULT_PRICE,
        templates: Mapping[str, Mapping[str, bool]] | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_in_flight: int = 8,
        direct: bool = True,
    ) -> None:
        self.prices: dict[str, ModelPrice] = dict(prices or {})
        self.default_price = default_price
        self.templates: dict[str, Mapping[str, bool]] = dict(templates or {})
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_in_flight = max_in_flight
        self._semaphore = asyncio.Semaphore(max_in_flight)
        self._unpriced: set[str] = set()
        self.direct = direct
        self._routes: dict[str, _DirectRoute | None] = {}

    async def complete(self, turns: Sequence[ChatTurn], *, model: str) -> Completion:
        """Ask ``model`` (``provider/model[@api_base]``) to continue ``turns``.

        Raises:
            ModelError: the call failed (after retries when the failure looked
                transient); ``hint`` says what the user can do about it.
        """
        litellm = await _load_litellm()
        name, api_base = split_model(model)
        fitted = fit_turns(turns, template_for(model, self.templates))
        messages = [turn.as_dict() for turn in fitted]
        # The provider's key when it is set, as litellm reads it; else any key will do
        # (local servers take any).
        api_key = next((os.environ[v] for v in _key_variables(name) if os.environ.get(v)),
                       None)
        route = self._direct_route(litellm, name, api_base)
        if route is not None:
            key = api_key or _PLACEHOLDER_KEY
            answer, seconds = await self._call(
                litellm, lambda: route.complete(litellm, messages, key, self.timeout),
                model, api_base)
        else:
            kwargs: dict[str, Any] = {
                "model": name,
                "messages": messages,
                "timeout": self.timeout,
                "num_retries": 0,  # _call retries, with backoff and a semaphore
            }
            if api_base is not None:
                kwargs["api_base"] = api_base
                if api_key is None:
                    kwargs["api_key"] = _PLACEHOLDER_KEY
            response, seconds = await self._call(
                litellm, lambda: litellm.acompletion(**kwargs), model, api_base)
            answer = _litellm_answer(response)
        if answer is None:
            raise ModelError(f"{model} returned no choices", retryable=True)
        price = self._price(model)
        cost = price.cost(answer.tokens_input, answer.tokens_output) if price else 0.0
        log.info("%s: %d tokens in, %d out, $%.6f, %.2f s", model, answer.tokens_input,
                 answer.tokens_output, cost, seconds)
        return Completion(answer.text, model, answer.tokens_input, answer.tokens_output, cost,
                          seconds)

    def _direct_route(self, litellm: ModuleType, name: str,
                      api_base: str | None) -> _DirectRoute | None:
        if not self.direct or api_base is None:
            return None
        key = f"{name}@{api_base}"
        if key not in self._routes:
            self._routes[key] = _DirectRoute.resolve(litellm, name, api_base)
        return self._routes[key]

    async def aclose(self) -> None:
        """Release litellm's cached HTTP clients and logging tasks for this event loop.

        A long-running server calls it once at shutdown; tests, which run each in a
        new loop, call it at the end of each (else the clients leak ResourceWarnings).
        """
        litellm = _litellm
        if litellm is None:
            return
        try:  # litellm's internals (1.110); without them only the clients are closed
            worker_module = importlib.import_module("litellm.litellm_core_utils.logging_worker")
        except ImportError:
            worker_module = None
        worker = getattr(worker_module, "GLOBAL_LOGGING_WORKER", None)
        if worker is not None:
            try:
                await asyncio.wait_for(worker.flush(), timeout=5)
            except TimeoutError:
                log.warning("litellm's logging tasks did not finish within 5 s")
            await worker.stop(discard_pending=True, timeout=5)
        await litellm.close_litellm_async_clients()

    async def _call(
        self, litellm: ModuleType, attempt_once: Callable[[], Awaitable[_T]], spec: str,
        api_base: str | None,
    ) -> tuple[_T, float]:
        transient = self._transient_classes(litellm)
        attempt = 0
        while True:
            try:
                async with self._semaphore:
                    started = time.perf_counter()
                    response = await attempt_once()
                    return response, time.perf_counter() - started
            except Exception as exc:  # CancelledError is a BaseException: it passes
                retryable = self._retryable(exc, transient, spec)
                if not retryable or attempt >= self.retries:
                    raise self._error(exc, spec, api_base, retryable, attempt + 1) from exc
                delay = self.backoff * 2**attempt
                attempt += 1
                log.warning(
                    "%s: %s; retry %d of %d in %.2f s",
                    spec,
                    _summary(exc),
                    attempt,
                    self.retries,
                    delay,
                )
                await asyncio.sleep(delay)

    @staticmethod
    def _transient_classes(litellm: ModuleType) -> tuple[type[BaseException], ...]:
        found = (getattr(litellm.exceptions, n, None) for n in _TRANSIENT_NAMES)
        return (TimeoutError, *(c for c in found if isinstance(c, type)))

    @staticmethod
    def _retryable(exc: Exception, transient: tuple[type[BaseException], ...], spec: str) -> bool:
        # litellm reports a missing OpenAI key as a 500: no retry can fix that.
        if missing_key_variables(spec):
            return False
        if isinstance(exc, transient):
            return True
        status = getattr(exc, "status_code", None)
        return isinstance(status, int) and (status in (408, 429) or status >= 500)

    def _error(
        self, exc: Exception, spec: str, api_base: str | None, retryable: bool, attempts: int
    ) -> ModelError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        if not isinstance(exc, _openai_error_class()):
            log.warning("%s: unexpected error from litellm", spec, exc_info=exc)
        message = f"model call to {spec} failed{tries}: {_summary(exc)}"
        return ModelError(message, retryable=retryable, hint=self._hint(exc, spec, api_base),
                          context_exceeded=_context_exceeded(exc))

    def _hint(self, exc: Exception, spec: str, api_base: str | None) -> str:
        name = split_model(spec)[0]
        kind = type(exc).__name__
        missing = missing_key_variables(spec)
        if missing:
            return f"set {' or '.join(missing)} (the key of {name})"
        if kind in ("AuthenticationError", "PermissionDeniedError"):
            variables = _key_variables(name)
            if api_base is not None:
                wanted = f"set {variables[0]}" if variables else "give it the key it expects"
                return f"the server at {api_base} refused the key: {wanted}"
            if variables:
                return f"the provider refused the key: check {variables[0]} (the key of {name})"
            return f"the provider refused the credentials for {name}"
        if kind == "ContextWindowExceededError":
            return "the conversation is too long for the model: shorten it with X-Rollback"
        text = str(exc)
        if _STRICT_TEMPLATE_ERROR.search(text):
            return (
                f"the chat template of {name} is strict about roles: add a pattern for it "
                "under models.chat_templates in the config, e.g. "
                f'"{name}": {{alternate_roles: true, system_role: false}}'
            )
        if kind == "NotFoundError" or (
            kind in ("BadRequestError", "LiteLLMUnknownProvider")
            and re.search(r"model|provider", text, re.IGNORECASE)
        ):
            where = f" served at {api_base}" if api_base else ""
            return (
                f"check the model name {name!r}{where}: it is written provider/model[@api_base], "
                "e.g. openai/gpt-4o-mini or openai/qwen@http://127.0.0.1:8000/v1"
            )
        if kind in ("Timeout", "TimeoutError") or isinstance(exc, TimeoutError):
            return f"no answer within {self.timeout:g} s: is the model overloaded?"
        if _refused(exc):
            if api_base is not None:
                return f"is the server at {api_base} running?"
            return "cannot reach the provider: check the network connection"
        if kind == "RateLimitError":
            return "the provider is rate limiting: wait, or lower the calls in flight"
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and status >= 500:
            where = f"the server at {api_base}" if api_base else "the provider"
            return f"{where} failed; try again later"
        return ""

    def _price(self, spec: str) -> ModelPrice | None:
        price = find_price(spec, self.prices)
        if price is not None:
            return price
        if spec not in self._unpriced:
            self._unpriced.add(spec)
            name = split_model(spec)[0]
            if self.default_price is None:
                log.warning("no price for %s: it costs 0; add it under prices: in the config",
                            name)
            else:
                log.warning("no price for %s: priced at the default $%g in, $%g out per "
                            "million tokens; add it under prices: in the config", name,
                            self.default_price.input_per_million,
                            self.default_price.output_per_million)
        return self.default_price


def _litellm_answer(response: Any) -> _Answer | None:
    """The text and usage of ``litellm.acompletion``'s ``ModelResponse``; None: no choices."""
    usage = getattr(response, "usage", None)
    try:
        text = response.choices[0].message.content or ""
    except (AttributeError, IndexError):
        return None
    return _Answer(text, int(getattr(usage, "prompt_tokens", 0) or 0),
                   int(getattr(usage, "completion_tokens", 0) or 0))


#: how providers and servers (OpenAI, vLLM, llama.cpp, TGI) word a too-long input
_CONTEXT_WORDS = re.compile(
    r"context.length|context.window|maximum context|exceeds? the (?:available )?context|"
    r"too many tokens|prompt is too long|input is too long", re.IGNORECASE)


def _context_exceeded(exc: BaseException) -> bool:
    return (type(exc).__name__ == "ContextWindowExceededError"
            or bool(_CONTEXT_WORDS.search(str(exc))))


def _openai_error_class() -> type[BaseException]:
    # litellm's exception classes all derive from openai.OpenAIError.
    openai = importlib.import_module("openai")
    error: type[BaseException] = openai.OpenAIError
    return error
