"""The bundled Gemma 3 270M behind llama.cpp's server, once per test session.

``tests/realmodel/setup.sh`` (run by ``tests/run.sh``) installs it; without it these
tests skip on a developer's machine and FAIL with ``CI=true``: CI must run the model.
Each test talks to the server through a :class:`RecordingProxy`, so it can compare
what the model wrote with what mailcoach stored.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.realmodel.llamaserver import LlamaServer, RealModelMissing, find_setup
from tests.realmodel.recorder import RecordingProxy

#: Small on purpose: the trimming test overflows it, and CPU time stays low.
N_CTX = 2048
#: seconds to wait for tests/run.sh's background setup (a first build on 2 cores: ~30 min)
SETUP_WAIT = 3600


def _setup_running() -> bool:
    """Whether the setup tests/run.sh started in the background is still at work."""
    pid = os.environ.get("MAILCOACH_REALMODEL_SETUP_PID", "")
    try:
        state = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ValueError, OSError, IndexError):
        return False
    return state != "Z"


def pytest_collection_modifyitems(config, items):
    # Waiting for a first build is part of the first real-model test: give it the time.
    if _setup_running():
        for item in items:
            if Path(str(item.path)).parent == Path(__file__).parent:
                item.add_marker(pytest.mark.timeout(SETUP_WAIT + 600))


def _wait_for_setup() -> None:
    deadline = time.monotonic() + SETUP_WAIT
    while _setup_running() and time.monotonic() < deadline:
        time.sleep(5)


@pytest.fixture(scope="session")
def gemma(tmp_path_factory):
    _wait_for_setup()
    try:
        setup = find_setup()
    except RealModelMissing as missing:
        if IN_CI:
            pytest.fail(f"CI must run the real model: {missing} "
                        "(tests/run.sh logs its setup in build/realmodel-setup.log)")
        pytest.skip(str(missing))
    log = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    with LlamaServer(setup, log, n_ctx=N_CTX) as server:
        yield server


@pytest.fixture
def recorded(gemma):
    """A fresh recording of the calls one test makes to the session's server."""
    with RecordingProxy(gemma.url) as proxy:
        yield proxy
