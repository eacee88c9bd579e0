"""mailcoach: a local mail server where AI agents and robots have mailboxes.

The public API, imported lazily so that ``mailcoach --help`` stays fast:

    from mailcoach_server import load_config, running
    async with running(load_config()) as server:
        await server.engine.submit(raw, origin="console")
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Config",
    "ConfigError",
    "Engine",
    "MailcoachError",
    "ModelError",
    "Server",
    "Store",
    "SubmitError",
    "__version__",
    "load_config",
    "running",
]

__version__ = "0.3.0"

_LAZY = {
    "Config": "config",
    "load_config": "config",
    "ConfigError": "errors",
    "MailcoachError": "errors",
    "ModelError": "errors",
    "SubmitError": "errors",
    "Engine": "runtime.engine",
    "Server": "app",
    "running": "app",
    "Store": "store.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mailcoach_server' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
