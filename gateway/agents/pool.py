"""The tool worker pool of a process, started when a dialplan first needs it.

A dialplan with Python tools or guardrails, or Agents SDK agents, needs tool worker processes
(:class:`~gateway.agents.runner.ToolRunner`). :class:`ToolWorkers` starts them at start-up
when the plan needs them, and in the background after a reload that makes them needed; a failed
start is logged with its reason and retried with a capped backoff, and meanwhile the plan's
tools answer the model with a failure ("tool workers are not running") rather than hang. A
single-process gateway owns one; so does the control process, whose pool serves every SIP
worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final

from gateway.agents.needs import needs_workers, preload_paths
from gateway.agents.runner import ToolRunner
from gateway.dialplan.schema import Dialplan

__all__ = ["WORKER_RETRY_S", "ToolWorkers"]

log = logging.getLogger("gateway")

#: Seconds between attempts to start tool workers after a failed start (the last one repeats).
WORKER_RETRY_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def _nobody(runner: ToolRunner | None) -> None:
    del runner


class ToolWorkers:
    """The tool worker pool, started when a dialplan first needs it (also after a reload).

    Args:
        size: Worker processes in the pool.
        publish: Called with the running pool when it has started, and with ``None`` when it
            stops (e.g. to set ``AgentServices.runner`` for calls).
        python: Interpreter for the workers (default: the gateway's own).
        retry_s: Delays between start attempts in the background (the last one repeats).
    """

    def __init__(self, size: int, publish: Callable[[ToolRunner | None], None] = _nobody, *,
                 python: str | None = None,
                 retry_s: Sequence[float] = WORKER_RETRY_S) -> None:
        self.size = size
        self.runner: ToolRunner | None = None
        self._publish = publish
        self.python = python
        self.retry_s = tuple(retry_s)
        self._starting: asyncio.Task[None] | None = None

    async def ensure(self, plan: Dialplan) -> None:
        """Start the pool now if ``plan`` needs it and none runs.

        Raises:
            RuntimeError: The workers did not start (at start-up this stops the gateway).
        """
        if self.runner is not None or not needs_workers(plan):
            return
        runner = ToolRunner(self.size, preload=preload_paths(plan), python=self.python)
        await runner.start()
        self.runner = runner
        self._publish(runner)
        log.info("started %d tool worker process(es)", self.size)

    def ensure_soon(self, plan: Callable[[], Dialplan]) -> None:
        """Start the pool in the background, retrying until it runs or is not needed.

        Args:
            plan: The dialplan in force, asked again before every attempt (a later reload
                may add, change or drop the Python code that needs workers).
        """
        if self.runner is None and needs_workers(plan()) and self._starting is None:
            self._starting = asyncio.create_task(self._start(plan), name="tool-pool:start")

    async def _start(self, plan: Callable[[], Dialplan]) -> None:
        attempt = 0
        try:
            while self.runner is None and needs_workers(current := plan()):
                try:
                    await self.ensure(current)
                except Exception as exc:  # any failure: the pool must come back by itself
                    delay = self.retry_s[min(attempt, len(self.retry_s) - 1)]
                    attempt += 1
                    log.error("tool worker start failed: %s; tools that need the workers"
                              " fail until they run; retrying in %g s (attempt %d)", exc, delay,
                              attempt)
                    await asyncio.sleep(delay)
        finally:
            self._starting = None

    async def close(self) -> None:
        """Stop a start in progress and the pool."""
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.wait((self._starting,))
        if self.runner is not None:
            runner, self.runner = self.runner, None
            self._publish(None)
            await runner.close()
