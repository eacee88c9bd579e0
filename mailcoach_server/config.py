"""Configuration: frozen dataclasses loaded from YAML and checked once at start.

The shipped ``config/default.yaml`` is always loaded first; a user file is
merged over it key by key (a party set to ``null`` removes it). Every error
names the file, the key path and, where YAML tells us, the line. Unknown
keys are errors: a typo must not silently fall back to a default.

This module does not read the environment or touch the data directory.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .addresses import address_file_name, address_problem, normalize_address
from .errors import ConfigError

__all__ = [
    "AgentSpec",
    "Config",
    "ImapConfig",
    "LimitsConfig",
    "ModelsConfig",
    "PartySettings",
    "RobotSpec",
    "SmtpConfig",
    "default_config_text",
    "load_config",
]


# No field has a default of its own: every value comes from the merged YAML,
# so config/default.yaml is the one place a default is written.


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    auth_required: bool
    #: offer plain-text AUTH off loopback without TLS (a container behind its own network)
    allow_plaintext_auth: bool
    max_message_size: int


@dataclass(frozen=True, slots=True)
class ImapConfig:
    host: str
    port: int
    max_literal: int
    max_line: int
    bad_command_limit: int
    idle_timeout: float
    #: allow LOGIN/AUTHENTICATE without TLS off loopback (a container's private network)
    allow_plaintext_auth: bool
    #: PEM files; when both are set, STARTTLS is offered
    tls_cert: str
    tls_key: str


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_hops: int
    max_auto_rounds: int
    max_models_in_flight: int
    #: seconds before a wrong password (SMTP or IMAP) is answered, doubling per failure
    login_delay: float
    login_delay_max: float
    #: messages at the start of a memory never trimmed to fit a model's window
    keep_first: int
    #: characters of a text attachment a model sees inline
    attachment_text: int


@dataclass(frozen=True, slots=True)
class ModelsConfig:
    default: str
    timeout: float
    retries: int
    backoff: float
    choices: tuple[str, ...]
    #: model name pattern -> {alternate_roles, system_role}: strict chat templates
    chat_templates: Mapping[str, Mapping[str, bool]]
    #: model name pattern -> input tokens, for models litellm's list does not know
    context_windows: Mapping[str, int]
    #: patterns of models that take images, besides those litellm's list says do
    vision: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent as configured; None means "as agents.defaults" (or, there, no limit)."""

    address: str
    model: str | None
    budget: float | None
    #: input + output tokens this agent may spend; None = no limit
    budget_tokens: int | None
    system: str | None


@dataclass(frozen=True, slots=True)
class PartySettings:
    """An agent's settings resolved: its own, else agents.defaults, else models.default."""

    address: str
    model: str
    #: USD this agent may spend; None = no limit of its own
    budget: float | None
    budget_tokens: int | None
    #: extra system text, or None
    system: str | None


@dataclass(frozen=True, slots=True)
class RobotSpec:
    address: str
    kind: str
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Config:
    domain: str
    data_dir: Path
    user: str
    smtp: SmtpConfig
    imap: ImapConfig
    limits: LimitsConfig
    models: ModelsConfig
    #: model spec -> (input, output) USD per million tokens
    prices: Mapping[str, tuple[float, float]]
    #: (input, output) USD per million tokens for a model nobody priced; None = it costs 0
    default_price: tuple[float, float] | None
    budget: float | None
    #: input + output tokens all agents together may spend; None = no limit
    budget_tokens: int | None
    auto_create_agents: bool
    agent_defaults: AgentSpec
    agents: tuple[AgentSpec, ...]
    robots: tuple[RobotSpec, ...]
    #: where the settings came from, for messages
    source: str

    def agent_spec(self, address: str) -> AgentSpec:
        """The configured spec of an agent, or the defaults for a new one."""
        for spec in self.agents:
            if spec.address == address:
                return spec
        return dataclasses.replace(self.agent_defaults, address=address)

    def party_settings(self, address: str) -> PartySettings:
        """What an agent runs with: the one place its settings and the defaults merge."""
        spec = self.agent_spec(address)
        defaults = self.agent_defaults

        def pick(own: Any, default: Any) -> Any:
            return own if own is not None else default

        return PartySettings(
            address=address,
            model=spec.model or defaults.model or self.models.default,
            budget=pick(spec.budget, defaults.budget),
            budget_tokens=pick(spec.budget_tokens, defaults.budget_tokens),
            system=spec.system or defaults.system,
        )

    def models_in_use(self) -> set[str]:
        """Every model an agent may run on: models.default, the defaults', each agent's."""
        return {self.models.default, *filter(None, [self.agent_defaults.model]),
                *(self.party_settings(spec.address).model for spec in self.agents)}

    def robot_spec(self, address: str) -> RobotSpec | None:
        for spec in self.robots:
            if spec.address == address:
                return spec
        return None

    def is_local(self, address: str) -> bool:
        return address.rpartition("@")[2].lower() == self.domain.lower()


DEFAULT_SOURCE = "<default config>"


def default_config_text() -> str:
    return resources.files("mailcoach_server.defaults").joinpath("default.yaml").read_text("utf-8")


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Load the shipped defaults, merge ``path`` over them, apply overrides.

    Args:
        path: a YAML file, or None for the defaults alone.
        overrides: dotted keys (``smtp.port``, ``budget``, ``data_dir``) set
            after loading, from command-line flags. None values are ignored.

    Raises:
        ConfigError: naming the file, key and line of the first problem.
    """
    shipped, _ = _read_yaml(default_config_text(), DEFAULT_SOURCE)
    base = shipped
    source = "<defaults>"
    lines: dict[str, int] = {}
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
        user, lines = _read_yaml(text, source)
        base = _merge(base, user)
    builder = _Builder(source, lines, shipped)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = base
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):  # e.g. `smtp: 5` in the file, --smtp-port given
                path = ".".join(parents[: depth + 1])
                raise builder.fail(path, f"expected a mapping, got {child!r}")
            node = child
        node[leaf] = value
        builder.flags.add(dotted)
    return builder.build(base)


def _read_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{where}: not valid YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    lines: dict[str, int] = {}
    _collect_lines(node, "", lines)
    return data, lines


def _collect_lines(node: yaml.Node | None, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}{key_node.value}"
            out[path] = key_node.start_mark.line + 1
            _collect_lines(value_node, path + ".", out)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


class _Builder:
    """Turns the merged mapping into a Config, checking every key and type.

    Every value is read from the merged mapping; a key the user emptied
    (``smtp: null``) falls back to the shipped file, never to a literal here.
    """

    def __init__(self, source: str, lines: dict[str, int], shipped: Mapping[str, Any]) -> None:
        self.source = source
        self.lines = lines
        self.shipped = shipped
        #: dotted keys set from command-line flags, for messages
        self.flags: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        if key in self.flags:
            return ConfigError(f"command line: {key}: {problem}")
        line = self.lines.get(key)
        where = f" line {line}," if line else ""
        return ConfigError(f"{self.source}:{where} key '{key}': {problem}")

    def setting(self, data: Mapping[str, Any], key: str, prefix: str = "") -> Any:
        """``data[key]``, else the shipped default at ``prefix + key``."""
        if key in data:
            return data[key]
        node: Any = self.shipped
        for part in (prefix + key).split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"{DEFAULT_SOURCE}: key '{prefix}{key}' is missing "
                                  "(every setting has its default there)")
            node = node[part]
        return node

    def section(self, data: Mapping[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
        value = data.get(key)
        if value is None:  # an emptied section: each key then comes from the shipped file
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(prefix + key, f"expected a mapping, got {value!r}")
        return dict(value)

    def value(self, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_kind_name(kinds)}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise self.fail(key, f"expected a finite number, got {value!r}")
            low, high = _RANGES.get(key, (0, None))
            if value < low or (high is not None and value > high):
                wanted = f"be {low}..{high}" if high is not None else (
                    "not be negative" if low == 0 else f"be at least {low}")
                raise self.fail(key, f"must {wanted}, got {value!r}")
        if isinstance(value, str) and key in _NOT_EMPTY and not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def dataclass_from(self, cls: type, data: Mapping[str, Any], prefix: str,
                       **given: Any) -> Any:
        """``cls`` from ``data``, every field not ``given`` read and type-checked."""
        kinds = typing.get_type_hints(cls)
        for key in data:
            if key not in kinds:
                raise self.fail(f"{prefix}{key}",
                                f"unknown key (known: {', '.join(sorted(kinds))})")
        kwargs: dict[str, Any] = dict(given)
        for key, kind in kinds.items():
            if key in given:
                continue
            path = f"{prefix}{key}"
            raw = self.setting(data, key, prefix)
            if typing.get_origin(kind) is tuple:
                if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                    raise self.fail(path, "expected a list of strings")
                kwargs[key] = tuple(raw)
            else:
                kwargs[key] = self.value(path, raw, kind)
        return cls(**kwargs)

    def build(self, data: dict[str, Any]) -> Config:
        # Steps run in file order so that the first error reported is the same one.
        self.check_top_keys(data)
        domain = self.domain(data)
        user = self.address("user", self.setting(data, "user"), domain)
        budget = self.optional("budget", self.setting(data, "budget"), float)
        budget_tokens = self.optional("budget_tokens", self.setting(data, "budget_tokens"), int)
        models = self.models(data)
        auto_create, defaults, agents = self.agents_table(data, domain)
        robots = tuple(
            self.robot(f"robots.{addr}", self.address(f"robots.{addr}", addr, domain), spec)
            for addr, spec in self.section(data, "robots").items()
            if spec not in (None, False)  # null or false removes a default robot
        )
        self.check_unique([a.address for a in agents] + [r.address for r in robots] + [user])
        data_dir = self.value("data_dir", self.setting(data, "data_dir"), str)
        return Config(
            domain=domain,
            data_dir=Path(data_dir).expanduser(),
            user=user,
            smtp=self.dataclass_from(SmtpConfig, self.section(data, "smtp"), "smtp."),
            imap=self.dataclass_from(ImapConfig, self.section(data, "imap"), "imap."),
            limits=self.dataclass_from(LimitsConfig, self.section(data, "limits"), "limits."),
            models=models,
            prices=self.prices(self.section(data, "prices")),
            default_price=self.default_price(self.setting(data, "default_price")),
            budget=budget,
            budget_tokens=budget_tokens,
            auto_create_agents=auto_create,
            agent_defaults=defaults,
            agents=agents,
            robots=robots,
            source=self.source,
        )

    def check_top_keys(self, data: dict[str, Any]) -> None:
        known = {f.name for f in dataclasses.fields(Config)} - {
            "agent_defaults", "auto_create_agents", "source"
        }
        for key in data:
            if key not in known:
                raise self.fail(key, f"unknown key (known: {', '.join(sorted(known))})")

    def domain(self, data: dict[str, Any]) -> str:
        domain = self.value("domain", self.setting(data, "domain"), str).strip().lower()
        if not domain or "@" in domain or " " in domain:
            raise self.fail("domain", f"not a domain name: {domain!r}")
        return domain

    def models(self, data: dict[str, Any]) -> ModelsConfig:
        models_section = self.section(data, "models")
        templates = self.chat_templates(self.section(models_section, "chat_templates",
                                                     "models."))
        windows = self.context_windows(self.section(models_section, "context_windows",
                                                    "models."))
        models_section.pop("chat_templates", None)
        models_section.pop("context_windows", None)
        models = self.dataclass_from(ModelsConfig, models_section, "models.",
                                     chat_templates=templates, context_windows=windows)
        if not models.default.strip():
            raise self.fail("models.default", "must name a model")
        return models

    def agents_table(
        self, data: dict[str, Any], domain: str
    ) -> tuple[bool, AgentSpec, tuple[AgentSpec, ...]]:
        """The ``[agents]`` table: auto_create, the defaults, and the parties."""
        agents_section = self.section(data, "agents")
        for key in agents_section:
            if key not in ("auto_create", "defaults", "parties"):
                raise self.fail(f"agents.{key}",
                                "unknown key (known: auto_create, defaults, parties)")
        auto_create = self.value(
            "agents.auto_create", self.setting(agents_section, "auto_create", "agents."), bool
        )
        defaults = self.agent("agents.defaults", "",
                              self.section(agents_section, "defaults", "agents."),
                              complete=True)
        parties = tuple(
            self.agent(f"agents.parties.{addr}",
                       self.address(f"agents.parties.{addr}", addr, domain), spec or {})
            for addr, spec in self.section(agents_section, "parties", "agents.").items()
            if spec is not False  # `false` removes a party that the defaults declare
        )
        return auto_create, defaults, parties

    def check_unique(self, taken: list[str]) -> None:
        for address in taken:
            if taken.count(address) > 1:
                raise self.fail("robots", f"{address} is configured more than once")

    def address(self, key: str, raw: Any, domain: str) -> str:
        if not isinstance(raw, str):
            raise self.fail(key, f"expected an address, got {raw!r}")
        address = normalize_address(raw)
        if address is None:
            problem = address_problem(raw) or "not an address"
            raise self.fail(key, f"{raw!r} is not a mail address: {problem}")
        if address.rpartition("@")[2] != domain:
            raise self.fail(key, f"{address} is not in the local domain {domain}")
        # A configured party is a mailbox people type: a plain name, its file name as is.
        if address_file_name(address) != address + ".mbox":
            raise self.fail(key, f"{raw!r} is not a plain mailbox name: use letters, digits "
                            "and . _ + - before the @ (e.g. swe1@" + domain + ")")
        return address

    def agent(self, key: str, address: str, spec: Any, complete: bool = False) -> AgentSpec:
        """An agent's spec; with ``complete`` (agents.defaults) every key has its
        value from the merged YAML, else a key not given is None (as the defaults)."""
        if not isinstance(spec, Mapping):
            raise self.fail(key, f"expected a mapping (model, budget, system), got {spec!r}")
        known = ("budget", "budget_tokens", "model", "system")
        for name in spec:
            if name not in known:
                raise self.fail(f"{key}.{name}", f"unknown key (known: {', '.join(known)})")
        def get(name: str) -> Any:
            return self.setting(spec, name, key + ".") if complete else spec.get(name)

        model = self.optional(f"{key}.model", get("model"), str)
        if model is not None and not model.strip():
            raise self.fail(f"{key}.model", "must name a model (or null for models.default)")
        return AgentSpec(
            address=address,
            model=model,
            budget=self.optional(f"{key}.budget", get("budget"), float),
            budget_tokens=self.optional(f"{key}.budget_tokens", get("budget_tokens"), int),
            system=self.optional(f"{key}.system", get("system"), str),
        )

    def optional(self, key: str, value: Any, kind: type) -> Any:
        return None if value is None else self.value(key, value, kind)

    def robot(self, key: str, address: str, spec: Any) -> RobotSpec:
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise self.fail(key, "a robot needs a mapping with at least 'kind' (e.g. kind: shell)")
        options = dict(spec)
        kind = self.value(f"{key}.kind", options.pop("kind"), str)
        return RobotSpec(address=address, kind=kind, options=options)

    def default_price(self, spec: Any) -> tuple[float, float] | None:
        if spec is None:
            return None
        if not isinstance(spec, Mapping) or set(spec) - {"input", "output"}:
            raise self.fail("default_price", "expected {input: USD per million tokens, "
                            "output: ...} or null (unpriced models cost 0)")
        return (self.value("default_price.input", spec.get("input", 0.0), float),  # 0 = free
                self.value("default_price.output", spec.get("output", 0.0), float))

    def chat_templates(self, data: Mapping[str, Any]) -> dict[str, dict[str, bool]]:
        templates: dict[str, dict[str, bool]] = {}
        for pattern, spec in data.items():
            key = f"models.chat_templates.{pattern}"
            if spec is None or spec is False:  # null or false removes a shipped pattern
                continue
            if not isinstance(pattern, str) or not pattern.strip():
                raise self.fail(key, "a pattern must be a model name, * and ? allowed")
            if not isinstance(spec, Mapping):
                raise self.fail(key, "expected {alternate_roles: true or false, "
                                "system_role: true or false}")
            settings: dict[str, bool] = {}
            for name, value in spec.items():
                if name not in ("alternate_roles", "system_role"):
                    raise self.fail(f"{key}.{name}",
                                    "unknown key (known: alternate_roles, system_role)")
                settings[name] = self.value(f"{key}.{name}", value, bool)
            templates[pattern] = settings
        return templates

    def context_windows(self, data: Mapping[str, Any]) -> dict[str, int]:
        windows: dict[str, int] = {}
        for pattern, tokens in data.items():
            key = f"models.context_windows.{pattern}"
            if tokens is None:  # null removes a shipped pattern
                continue
            if not isinstance(pattern, str) or not pattern.strip():
                raise self.fail(key, "a pattern must be a model name, * and ? allowed")
            value = self.value(key, tokens, int)
            if value < 256:
                raise self.fail(key, f"must be at least 256 tokens, not {value}")
            windows[pattern] = value
        return windows

    def prices(self, data: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        prices: dict[str, tuple[float, float]] = {}
        for model, spec in data.items():
            key = f"prices.{model}"
            if not isinstance(spec, Mapping) or set(spec) - {"input", "output"}:
                raise self.fail(key, "expected {input: USD per million tokens, output: ...}")
            prices[model] = (
                self.value(f"{key}.input", spec.get("input", 0.0), float),
                self.value(f"{key}.output", spec.get("output", 0.0), float),
            )
        return prices


# (lowest, highest or None) of numbers whose range is not just "not negative".
_RANGES: dict[str, tuple[float, float | None]] = {
    "smtp.port": (0, 65535),  # 0 = any free port
    "imap.port": (0, 65535),
    "smtp.max_message_size": (1, None),
    "imap.max_literal": (1, None),
    "imap.max_line": (1, None),
    "imap.bad_command_limit": (1, None),
    "imap.idle_timeout": (1, None),
    "limits.max_hops": (1, None),
    "limits.max_models_in_flight": (1, None),
    "limits.keep_first": (0, None),
    "limits.attachment_text": (0, None),
    "models.timeout": (0.001, None),
}
_NOT_EMPTY = frozenset({"smtp.host", "imap.host", "data_dir"})


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
