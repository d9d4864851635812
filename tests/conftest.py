"""Shared fixtures. anyio's pytest plugin runs the async tests on asyncio."""

from __future__ import annotations

import os

import pytest

# Every reconciler the tests drive, in-process or as a daemon, proves after each
# pass that its index of tasks in motion equals a full scan of its tasks.
os.environ["FACTORYD_CHECK_INDEX"] = "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
