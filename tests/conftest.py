"""Shared test fixtures: leaked-task detection and timeouts scaled for slow machines."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

#: Multiply time limits inside tests by this on slow runners.
TIMEOUT_FACTOR = float(os.environ.get("GATEWAY_TESTS_TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    """A test time limit scaled by ``GATEWAY_TESTS_TIMEOUT_FACTOR``."""
    return seconds * TIMEOUT_FACTOR


@pytest.fixture(autouse=True)
async def fail_on_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if leaked:
        # Give tasks that are finishing their cancellation one loop turn.
        await asyncio.sleep(0)
        leaked = [t for t in leaked if not t.done()]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test leaked tasks: {sorted(t.get_name() for t in leaked)}"
