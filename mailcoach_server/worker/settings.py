"""``worker.yaml``: where the mail server is, and which parties this worker serves.

    config: mailcoach.yaml          # the server's own config: domain, user, models, agents, robots
    imap: {host: mail.company.example, port: 993, security: tls}       # tls, starttls or none
    smtp: {host: mail.company.example, port: 587, security: starttls,
           ca_file: company-ca.pem}  # trust this CA (PEM) instead of the system's
    parties:                        # the parties this worker logs in as
      swe1@company.example: {password_file: secrets/swe1}        # login: the address
      shell@company.example: {login: shell, password_env: SHELL_PASSWORD, kind: shell}
    lease_seconds: 60               # a dead worker's parties are taken over after this
    max_connections: 100            # IMAP connections it may open: one per party

Each party's kind and settings (model, budget, system text; robot options) come
from the server config (``config:``, read by ``config.load_config`` as ``mailcoach
serve`` reads it); a ``kind`` given here is checked against it. Certificates are
always verified (``worker/tls.py``); ``verify: false`` under ``imap`` or ``smtp``
turns that off and is for tests against a throwaway certificate only. Relative paths
are relative to worker.yaml. Errors name the file and the key, as the server
config's do. Passwords are read here, once; they are never logged.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, load_config
from ..errors import ConfigError

__all__ = ["MailServer", "PartyLogin", "WorkerSettings", "load_worker_settings"]

_SECURITY = ("tls", "starttls", "none")
_DEFAULT_PORTS = {("imap", "tls"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
                  ("smtp", "tls"): 465, ("smtp", "starttls"): 587, ("smtp", "none"): 587}
_TOP_KEYS = ("config", "imap", "smtp", "parties", "lease_seconds", "max_connections",
             "folders", "poll_seconds")


@dataclass(frozen=True, slots=True)
class MailServer:
    host: str
    port: int
    #: "tls" (TLS from the start), "starttls" or "none" (loopback or a private network)
    security: str
    #: verify the server's certificate (off only for a test server's own certificate)
    verify: bool = True
    #: PEM file of the CAs trusted instead of the system's (absolute), or None
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class PartyLogin:
    address: str
    login: str
    password: str = field(default="", repr=False)  # never shown in a log line
    #: "agent" or the robot's kind, from the server config
    kind: str = "agent"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    config: Config
    imap: MailServer
    smtp: MailServer
    parties: tuple[PartyLogin, ...]
    lease_seconds: float
    max_connections: int
    #: folder names on the server: sent, state
    sent_folder: str
    state_folder: str
    #: seconds between looks at INBOX when IDLE is not offered or connections are capped
    poll_seconds: float
    source: str


def load_worker_settings(path: str | Path) -> WorkerSettings:
    """Read and check ``worker.yaml``.

    Raises:
        ConfigError: naming the file and key of the first problem.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the worker config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    fail = _Failer(str(path))
    for key in data:
        if key not in _TOP_KEYS:
            raise fail(str(key), f"unknown key (known: {', '.join(_TOP_KEYS)})")
    base = path.parent
    config_path = data.get("config")
    if config_path is not None and not isinstance(config_path, str):
        raise fail("config", "expected the path of the server's config file")
    config = load_config(base / config_path if config_path else None)
    folders = _mapping(fail, data, "folders")
    parties = _parties(fail, _mapping(fail, data, "parties", required=True), config, base)
    cap = int(_number(fail, "max_connections", data.get("max_connections", 100), 1,
                      integer=True))
    if len(parties) > cap:
        # one IMAP connection per party (IMAP logs in one user per connection)
        raise fail("max_connections", f"this worker serves {len(parties)} parties, one IMAP "
                   f"connection each, over the cap of {cap}: raise it (and the server's "
                   "limits) or split the parties over more workers")
    return WorkerSettings(
        config=config,
        imap=_server(fail, "imap", _mapping(fail, data, "imap", required=True), base),
        smtp=_server(fail, "smtp", _mapping(fail, data, "smtp", required=True), base),
        parties=parties,
        lease_seconds=_number(fail, "lease_seconds", data.get("lease_seconds", 60), 1),
        max_connections=cap,
        sent_folder=_text(fail, "folders.sent", folders.get("sent", "Sent")),
        state_folder=_text(fail, "folders.state", folders.get("state", "Mailcoach")),
        poll_seconds=_number(fail, "poll_seconds", data.get("poll_seconds", 30), 0.05),
        source=str(path),
    )


class _Failer:
    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{key}': {problem}")


def _mapping(fail: _Failer, data: Mapping[str, Any], key: str, *,
             required: bool = False) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise fail(key, "expected a mapping" if value is not None else "is required")
    return value


def _number(fail: _Failer, key: str, value: Any, low: float, *, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < low:
        raise fail(key, f"expected {'an integer' if integer else 'a number'} of at least {low}, "
                   f"got {value!r}")
    return float(value)


def _text(fail: _Failer, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(key, f"expected a non-empty string, got {value!r}")
    return value


_SERVER_KEYS = ("host", "port", "security", "verify", "ca_file")


def _server(fail: _Failer, name: str, data: Mapping[str, Any], base: Path) -> MailServer:
    for key in data:
        if key not in _SERVER_KEYS:
            raise fail(f"{name}.{key}", f"unknown key (known: {', '.join(_SERVER_KEYS)})")
    security = data.get("security", "starttls")
    if security not in _SECURITY:
        raise fail(f"{name}.security", f"expected one of {', '.join(_SECURITY)}, "
                   f"got {security!r}")
    port = data.get("port", _DEFAULT_PORTS[(name, security)])
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise fail(f"{name}.port", f"expected a port number, got {port!r}")
    verify = data.get("verify", True)
    if not isinstance(verify, bool):
        raise fail(f"{name}.verify", f"expected true or false, got {verify!r}")
    return MailServer(host=_text(fail, f"{name}.host", data.get("host")), port=port,
                      security=security, verify=verify,
                      ca_file=_ca_file(fail, name, data.get("ca_file"), security, base))


def _ca_file(fail: _Failer, name: str, value: Any, security: str, base: Path) -> str | None:
    """The CA file's absolute path, once it has been read as PEM certificates."""
    if value is None:
        return None
    key = f"{name}.ca_file"
    if security == "none":
        raise fail(key, f"a CA file is for TLS, but {name}.security is none")
    path = base / _text(fail, key, value)
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:  # an OSError too: first
        raise fail(key, f"{path} holds no PEM certificates ({exc.reason or exc})") from None
    except OSError as exc:
        raise fail(key, f"cannot read {path}: {exc.strerror}") from None
    return str(path.resolve())


def _parties(fail: _Failer, data: Mapping[str, Any], config: Config,
             base: Path) -> tuple[PartyLogin, ...]:
    parties = []
    for address, spec in data.items():
        key = f"parties.{address}"
        if not isinstance(address, str) or not config.is_local(address):
            raise fail(key, f"not an address in the domain {config.domain}")
        address = address.lower()
        if address == config.user:
            raise fail(key, f"{address} is the human user, whom no worker answers for")
        spec = spec or {}
        if not isinstance(spec, Mapping):
            raise fail(key, "expected a mapping (login, password_file or password_env, kind)")
        for name in spec:
            if name not in ("login", "password_file", "password_env", "kind"):
                raise fail(f"{key}.{name}",
                           "unknown key (known: login, password_file, password_env, kind)")
        robot = config.robot_spec(address)
        kind = robot.kind if robot is not None else "agent"
        if "kind" in spec and spec["kind"] != kind:
            raise fail(f"{key}.kind", f"{spec['kind']!r}, but the server config "
                       f"({config.source}) makes {address} {kind!r}")
        parties.append(PartyLogin(address=address, login=str(spec.get("login") or address),
                                  password=_password(fail, key, spec, base), kind=kind))
    if not parties:
        raise fail("parties", "name at least one party for this worker to serve")
    return tuple(parties)


def _password(fail: _Failer, key: str, spec: Mapping[str, Any], base: Path) -> str:
    if ("password_file" in spec) == ("password_env" in spec):
        raise fail(key, "give exactly one of password_file and password_env")
    if "password_env" in spec:
        name = str(spec["password_env"])
        value = os.environ.get(name)
        if not value:
            raise fail(f"{key}.password_env", f"the environment variable {name} is not set")
        return value
    file = base / str(spec["password_file"])
    try:
        value = file.read_text("utf-8").strip()
    except OSError as exc:
        raise fail(f"{key}.password_file", f"cannot read {file}: {exc.strerror}") from None
    if not value:
        raise fail(f"{key}.password_file", f"{file} is empty")
    return value
