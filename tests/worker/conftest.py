"""Fixtures of the worker tests: a private Dovecot + Postfix for each test that asks."""

from __future__ import annotations

import pytest

from tests.worker.support import mail_system


@pytest.fixture
def mail():
    """Dovecot + Postfix on loopback ports with the test domain's users (see support)."""
    yield from mail_system()
