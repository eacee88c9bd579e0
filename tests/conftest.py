"""Shared fixtures: a scripted model server, configs in tmp_path, servers in and out of process."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.fakellm import ScriptedModelServer

IN_CI = os.environ.get("CI") == "true"
SOURCE_TREE = Path(__file__).resolve().parent.parent


def _import_the_installed_package() -> None:
    """Under MAILCOACH_TEST_INSTALLED=1 (CI), the suite and its children test the wheel.

    pytest puts the checkout on sys.path (for ``tests``), where the source tree
    would shadow the install. Import the package once without it: later
    imports find it in sys.modules, and a module missing from the wheel fails.
    """
    if os.environ.get("MAILCOACH_TEST_INSTALLED") != "1":
        return
    # Child processes too (``python -m mailcoach_server`` run from the checkout
    # would put it first on sys.path): Python 3.11's safe-path mode.
    os.environ["PYTHONSAFEPATH"] = "1"
    kept = [p for p in sys.path if Path(p or ".").resolve() != SOURCE_TREE]
    saved, sys.path[:] = sys.path[:], kept
    try:
        import mailcoach_robots
        import mailcoach_server.defaults

        import mailcoach_server
    finally:
        sys.path[:] = saved
    # The source directories, not the whole checkout: CI keeps its venv in it.
    sources = [SOURCE_TREE / d for d in ("mailcoach_server", "robots", "config")]
    for module in (mailcoach_server, mailcoach_robots, mailcoach_server.defaults):
        origin = Path(module.__file__).resolve()
        if any(source in origin.parents for source in sources):
            raise RuntimeError(f"{module.__name__} was imported from the checkout ({origin}), "
                               "not from the installed package")


_import_the_installed_package()


def require_tool(name: str) -> str:
    """The path of a program the test needs: skip without it, but fail in CI."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed; CI must install it (see tests/run.sh)")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture
def model_server():
    with ScriptedModelServer() as server:
        yield server
