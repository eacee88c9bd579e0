"""Shared fixtures: a scripted model server, configs in tmp_path, servers in and out of process."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.fakellm import ScriptedModelServer

IN_CI = os.environ.get("CI") == "true"


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
