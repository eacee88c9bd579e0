"""Tests of the robot plug-ins (shell, remote shell, output cutting)."""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["require_bwrap"]


def require_bwrap() -> str:
    """The bwrap binary; skips the test without it, but fails it when CI=true."""
    found = shutil.which("bwrap")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("bwrap (bubblewrap) is not installed but CI=true: install bubblewrap")
        pytest.skip("bwrap (bubblewrap) is not installed")
    return found
