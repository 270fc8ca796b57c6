"""Composition root: builds the gateway's parts from the settings, starts and stops them in order.

Start: the embedded Realtime simulator (when ``realtime.url`` is ``embedded``), the dialplan,
the call manager, then the SIP user agent, which starts taking calls. Stop (SIGINT/SIGTERM):
the manager hangs up every call first, then the SIP endpoint unregisters and is destroyed, then
the simulator stops. SIGHUP reloads the dialplan atomically: a bad file is refused with its
errors logged and the old dialplan stays. A reloaded plan that needs tool workers when none run
starts them in the background; a failed start is logged with its reason and retried with a
capped backoff, and meanwhile its tools answer the model with a failure ("tool workers are not
running") rather than hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.agents.http_tool import HttpToolClient
from gateway.agents.needs import needs_workers, preload_paths
from gateway.agents.runner import ToolRunner
from gateway.calls.conversation import AgentServices
from gateway.calls.manager import CallManager
from gateway.config import Settings
from gateway.dialplan.schema import Dialplan
from gateway.dialplan.store import DialplanStore
from gateway.logs import add_secrets
from gateway.sip.ua import BoundTransport, FrontTrust, SipUserAgent

log = logging.getLogger("gateway")

#: Seconds between attempts to start tool workers after a failed start (the last one repeats).
WORKER_RETRY_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class GatewayInfo:
    """What a running gateway listens on (for logs, tests and the control API)."""

    sip: tuple[BoundTransport, ...]
    realtime_url: str
    embedded_simulator: bool


async def run_gateway(settings: Settings, *, env: Mapping[str, str] | None = None,
                      ready: Callable[[GatewayInfo], None] | None = None,
                      stop: asyncio.Event | None = None, front: FrontTrust | None = None,
                      started: Callable[[SipUserAgent, CallManager], Awaitable[None]]
                      | None = None, signals: bool = True,
                      ready_message: str = "gateway ready") -> None:
    """Run the gateway until ``stop`` is set or the process gets SIGINT/SIGTERM.

    Args:
        settings: The validated configuration.
        env: The environment, for ``${VAR}`` secrets in dialplan HTTP tools.
        ready: Called once the gateway takes calls.
        stop: Set it to stop the gateway (signals set it too).
        front: The SIP front this process works behind (a SIP worker), if any.
        started: Awaited once the SIP endpoint listens, before ``ready`` (a worker says
            hello to its control process here).
        signals: Whether SIGINT/SIGTERM stop it and SIGHUP reloads the dialplan.
        ready_message: The start of the log line that says it takes calls.
    """
    env = env or {}
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    store = DialplanStore(settings.dialplan, env=env)  # ConfigErrors: refuse a bad plan
    add_secrets(s.value for s in store.current.env_secrets)
    async with contextlib.AsyncExitStack() as stack:
        url = settings.realtime.url
        if settings.realtime.embedded:
            url = await stack.enter_async_context(embedded_simulator(settings))
        services = AgentServices(http=await stack.enter_async_context(HttpToolClient()))
        workers = ToolWorkers(settings.calls.tool_workers, services)
        stack.push_async_callback(workers.close)
        await workers.ensure(store.current)
        # An unanswered INVITE outlives the slowest Realtime connect (which answers 503 itself)
        # by a margin, so the deadline is a backstop, never the reason a caller is refused.
        ua = SipUserAgent(settings.sip, playout_capacity_ms=settings.calls.playout_capacity_ms,
                          pjsip_log_level=settings.logging.pjsip_level,
                          answer_deadline_s=settings.realtime.connect_budget_s + 15.0,
                          log_content=settings.logging.call_content, front=front)
        manager = CallManager(settings, ua, lambda: store.current, url, services)
        await asyncio.to_thread(ua.start, loop, manager.on_sip_event)
        stack.push_async_callback(asyncio.to_thread, ua.stop)
        await stack.enter_async_context(manager)
        if started is not None:
            await started(ua, manager)
        if signals:
            _install_signals(loop, stop, store, workers)
            stack.callback(_remove_signals, loop)
        info = GatewayInfo(tuple(ua.transports), url, settings.realtime.embedded)
        sip_desc = ", ".join(f"{t.type}:{t.host}:{t.port}" for t in info.sip)
        log.info("%s (pid %d): SIP on %s; agents on %s%s; dialplan %s "
                 "(reload with SIGHUP)", ready_message, os.getpid(), sip_desc, url,
                 " (embedded local simulator, no API key needed)" if info.embedded_simulator
                 else "", store.path)
        if ready is not None:
            ready(info)
        await stop.wait()
        log.info("stopping: ending %d active call(s)", manager.active)


@contextlib.asynccontextmanager
async def embedded_simulator(settings: Settings):  # type: ignore[no-untyped-def]
    """The embedded Realtime simulator; yields its WebSocket URL."""
    from gateway.sim.scenario import ScenarioBook, load_scenarios
    from gateway.sim.server import SERVICE_KEEP_CLOSED, SimOptions, SimulatorServer

    sim_cfg = settings.simulator
    book = load_scenarios(sim_cfg.scenarios) if sim_cfg.scenarios else ScenarioBook.default()
    # In-process, every session the simulator kept would count as gateway memory per call.
    options = SimOptions(speed=sim_cfg.speed, tts_engine=sim_cfg.tts,
                         default_model=settings.realtime.model, keep_closed=SERVICE_KEEP_CLOSED)
    async with SimulatorServer(sim_cfg.host, sim_cfg.port, book, options) as sim:
        log.info("embedded Realtime simulator on %s", sim.ws_url)
        yield sim.ws_url


class ToolWorkers:
    """The tool worker pool, started when a dialplan first needs it (also after a reload).

    Args:
        size: Worker processes in the pool.
        services: Where the running pool is published (``services.runner``) for calls.
        python: Interpreter for the workers (default: the gateway's own).
        retry_s: Delays between start attempts in the background (the last one repeats).
    """

    def __init__(self, size: int, services: AgentServices, *, python: str | None = None,
                 retry_s: Sequence[float] = WORKER_RETRY_S) -> None:
        self.size = size
        self.services = services
        self.python = python
        self.retry_s = tuple(retry_s)
        self._starting: asyncio.Task[None] | None = None

    async def ensure(self, plan: Dialplan) -> None:
        """Start the pool now if ``plan`` needs it and none runs.

        Raises:
            RuntimeError: The workers did not start (at start-up this stops the gateway).
        """
        if self.services.runner is not None or not needs_workers(plan):
            return
        runner = ToolRunner(self.size, preload=preload_paths(plan), python=self.python)
        await runner.start()
        self.services.runner = runner
        log.info("started %d tool worker process(es)", self.size)

    def ensure_soon(self, plan: Callable[[], Dialplan]) -> None:
        """Start the pool in the background, retrying until it runs or is not needed.

        Args:
            plan: The dialplan in force, asked again before every attempt (a later reload
                may add, change or drop the Python code that needs workers).
        """
        if self.services.runner is None and needs_workers(plan()) and self._starting is None:
            self._starting = asyncio.create_task(self._start(plan), name="app:tool-workers")

    async def _start(self, plan: Callable[[], Dialplan]) -> None:
        attempt = 0
        try:
            while self.services.runner is None and needs_workers(current := plan()):
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
        if self.services.runner is not None:
            await self.services.runner.close()
            self.services.runner = None


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event,
                     store: DialplanStore, workers: ToolWorkers) -> None:
    def reload() -> None:
        errors = store.reload()
        if errors is None:
            add_secrets(s.value for s in store.current.env_secrets)
            log.info("dialplan reloaded from %s (generation %d)", store.path, store.generation)
            workers.ensure_soon(lambda: store.current)
        else:
            for err in errors.errors:
                log.error("dialplan reload refused, keeping the old one: %s", err)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)


def _remove_signals(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
