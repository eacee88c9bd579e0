"""Configuration: frozen dataclasses loaded from YAML and checked once at start.

The shipped ``config/default.yaml`` is always loaded first; a user file is
merged over it key by key (a party set to ``null`` removes it). Every error
names the file, the key path and, where YAML tells us, the line. Unknown
keys are errors: a typo must not silently fall back to a default.

This module does not read the environment or touch the data directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .addresses import normalize_address
from .errors import ConfigError

__all__ = [
    "AgentSpec",
    "Config",
    "ImapConfig",
    "LimitsConfig",
    "ModelsConfig",
    "RobotSpec",
    "SmtpConfig",
    "default_config_text",
    "load_config",
]


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 2525
    auth_required: bool = True
    #: offer plain-text AUTH off loopback without TLS (a container behind its own network)
    allow_plaintext_auth: bool = False
    max_message_size: int = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ImapConfig:
    host: str = "127.0.0.1"
    port: int = 1143
    max_literal: int = 32 * 1024 * 1024
    max_line: int = 64 * 1024
    bad_command_limit: int = 5
    idle_timeout: float = 30 * 60.0
    #: allow LOGIN/AUTHENTICATE without TLS off loopback (a container's private network)
    allow_plaintext_auth: bool = False
    #: PEM files; when both are set, STARTTLS is offered
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_hops: int = 30
    max_auto_rounds: int = 50
    max_models_in_flight: int = 8
    #: seconds before a wrong password (SMTP or IMAP) is answered, doubling per failure
    login_delay: float = 1.0
    login_delay_max: float = 8.0


@dataclass(frozen=True, slots=True)
class ModelsConfig:
    default: str = "openai/gpt-4o-mini"
    timeout: float = 120.0
    retries: int = 3
    backoff: float = 1.0
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentSpec:
    address: str
    model: str | None = None
    budget: float | None = None
    system: str | None = None


@dataclass(frozen=True, slots=True)
class RobotSpec:
    address: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    domain: str = "localdomain"
    data_dir: Path = Path("./mailcoach-data")
    user: str = "user@localdomain"
    smtp: SmtpConfig = SmtpConfig()
    imap: ImapConfig = ImapConfig()
    limits: LimitsConfig = LimitsConfig()
    models: ModelsConfig = ModelsConfig()
    #: model spec -> (input, output) USD per million tokens
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    budget: float | None = None
    auto_create_agents: bool = True
    agent_defaults: AgentSpec = AgentSpec(address="")
    agents: tuple[AgentSpec, ...] = ()
    robots: tuple[RobotSpec, ...] = ()
    #: where the settings came from, for messages
    source: str = "<defaults>"

    def agent_spec(self, address: str) -> AgentSpec:
        """The configured spec of an agent, or the defaults for a new one."""
        for spec in self.agents:
            if spec.address == address:
                return spec
        return dataclasses.replace(self.agent_defaults, address=address)

    def robot_spec(self, address: str) -> RobotSpec | None:
        for spec in self.robots:
            if spec.address == address:
                return spec
        return None

    def is_local(self, address: str) -> bool:
        return address.rpartition("@")[2].lower() == self.domain.lower()


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
    base, _ = _read_yaml(default_config_text(), "<default config>")
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
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = base
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return _Builder(source, lines).build(base)


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
    """Turns the merged mapping into a Config, checking every key and type."""

    def __init__(self, source: str, lines: dict[str, int]) -> None:
        self.source = source
        self.lines = lines

    def fail(self, key: str, problem: str) -> ConfigError:
        line = self.lines.get(key)
        where = f" line {line}," if line else ""
        return ConfigError(f"{self.source}:{where} key '{key}': {problem}")

    def section(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key) or {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping, got {value!r}")
        return dict(value)

    def value(self, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_kind_name(kinds)}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise self.fail(key, f"must not be negative, got {value!r}")
        return value

    def dataclass_from(self, cls: type, data: Mapping[str, Any], prefix: str) -> Any:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in data.items():
            path = f"{prefix}{key}"
            if key not in fields:
                raise self.fail(path, f"unknown key (known: {', '.join(sorted(fields))})")
            default = getattr(cls(), key)
            if isinstance(default, tuple):
                if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                    raise self.fail(path, "expected a list of strings")
                kwargs[key] = tuple(raw)
            else:
                kwargs[key] = self.value(path, raw, type(default))
        return cls(**kwargs)

    def build(self, data: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(Config)} - {
            "agent_defaults", "auto_create_agents", "source"
        }
        for key in data:
            if key not in known:
                raise self.fail(key, f"unknown key (known: {', '.join(sorted(known))})")
        domain = self.value("domain", data.get("domain", "localdomain"), str).strip().lower()
        if not domain or "@" in domain or " " in domain:
            raise self.fail("domain", f"not a domain name: {domain!r}")
        user = self.address("user", data.get("user", f"user@{domain}"), domain)
        budget = data.get("budget")
        if budget is not None:
            budget = self.value("budget", budget, float)
        models = self.dataclass_from(ModelsConfig, self.section(data, "models"), "models.")
        if not models.default.strip():
            raise self.fail("models.default", "must name a model")
        agents_section = self.section(data, "agents")
        for key in agents_section:
            if key not in ("auto_create", "defaults", "parties"):
                raise self.fail(f"agents.{key}",
                                "unknown key (known: auto_create, defaults, parties)")
        auto_create = self.value(
            "agents.auto_create", agents_section.get("auto_create", True), bool
        )
        defaults = self.agent("agents.defaults", "", agents_section.get("defaults") or {})
        agents = tuple(
            self.agent(f"agents.parties.{addr}",
                       self.address(f"agents.parties.{addr}", addr, domain), spec or {})
            for addr, spec in self.section(agents_section, "parties").items()
            if spec is not False  # `false` removes a party that the defaults declare
        )
        robots = tuple(
            self.robot(f"robots.{addr}", self.address(f"robots.{addr}", addr, domain), spec)
            for addr, spec in self.section(data, "robots").items()
            if spec not in (None, False)  # null or false removes a default robot
        )
        taken = [a.address for a in agents] + [r.address for r in robots] + [user]
        for address in taken:
            if taken.count(address) > 1:
                raise self.fail("robots", f"{address} is configured more than once")
        data_dir = self.value("data_dir", data.get("data_dir", "./mailcoach-data"), str)
        return Config(
            domain=domain,
            data_dir=Path(data_dir).expanduser(),
            user=user,
            smtp=self.dataclass_from(SmtpConfig, self.section(data, "smtp"), "smtp."),
            imap=self.dataclass_from(ImapConfig, self.section(data, "imap"), "imap."),
            limits=self.dataclass_from(LimitsConfig, self.section(data, "limits"), "limits."),
            models=models,
            prices=self.prices(self.section(data, "prices")),
            budget=budget,
            auto_create_agents=auto_create,
            agent_defaults=defaults,
            agents=agents,
            robots=robots,
            source=self.source,
        )

    def address(self, key: str, raw: Any, domain: str) -> str:
        if not isinstance(raw, str):
            raise self.fail(key, f"expected an address, got {raw!r}")
        address = normalize_address(raw)
        if address is None:
            raise self.fail(key, f"not a mail address: {raw!r}")
        if address.rpartition("@")[2] != domain:
            raise self.fail(key, f"{address} is not in the local domain {domain}")
        return address

    def agent(self, key: str, address: str, spec: Any) -> AgentSpec:
        if not isinstance(spec, Mapping):
            raise self.fail(key, f"expected a mapping (model, budget, system), got {spec!r}")
        for name in spec:
            if name not in ("model", "budget", "system"):
                raise self.fail(f"{key}.{name}", "unknown key (known: budget, model, system)")
        model = spec.get("model")
        budget = spec.get("budget")
        system = spec.get("system")
        return AgentSpec(
            address=address,
            model=None if model is None else self.value(f"{key}.model", model, str),
            budget=None if budget is None else self.value(f"{key}.budget", budget, float),
            system=None if system is None else self.value(f"{key}.system", system, str),
        )

    def robot(self, key: str, address: str, spec: Any) -> RobotSpec:
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise self.fail(key, "a robot needs a mapping with at least 'kind' (e.g. kind: shell)")
        options = dict(spec)
        kind = self.value(f"{key}.kind", options.pop("kind"), str)
        return RobotSpec(address=address, kind=kind, options=options)

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


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
