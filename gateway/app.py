"""Composition root: builds the gateway's parts from the settings, starts and stops them in order.

Start: the embedded Realtime simulator (when ``realtime.url`` is ``embedded``), the dialplan,
the call manager, then the SIP user agent, which starts taking calls. Stop (SIGINT/SIGTERM):
the manager hangs up every call first, then the SIP endpoint unregisters and is destroyed, then
the simulator stops. SIGHUP reloads the dialplan atomically: a bad file is refused with its
errors logged and the old dialplan stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.agents.http_tool import HttpToolClient
from gateway.agents.needs import needs_workers, preload_paths
from gateway.agents.runner import ToolRunner
from gateway.calls.conversation import AgentServices
from gateway.calls.manager import CallManager
from gateway.config import Settings
from gateway.dialplan.schema import Dialplan
from gateway.dialplan.store import DialplanStore
from gateway.sip.ua import BoundTransport, SipUserAgent

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class GatewayInfo:
    """What a running gateway listens on (for logs, tests and the control API)."""

    sip: tuple[BoundTransport, ...]
    realtime_url: str
    embedded_simulator: bool


async def run_gateway(settings: Settings, *, env: Mapping[str, str] | None = None,
                      ready: Callable[[GatewayInfo], None] | None = None,
                      stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set or the process gets SIGINT/SIGTERM.

    Args:
        settings: The validated configuration.
        env: The environment, for ``${VAR}`` secrets in dialplan HTTP tools.
        ready: Called once the gateway takes calls.
        stop: Set it to stop the gateway (signals set it too).
    """
    env = env or {}
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    store = DialplanStore(settings.dialplan, env=env)  # ConfigErrors: refuse a bad plan
    async with contextlib.AsyncExitStack() as stack:
        url = settings.realtime.url
        if settings.realtime.embedded:
            url = await stack.enter_async_context(_embedded_simulator(settings))
        services = AgentServices(http=await stack.enter_async_context(HttpToolClient()))
        workers = _Workers(settings.calls.tool_workers, services)
        stack.push_async_callback(workers.close)
        await workers.ensure(store.current)
        ua = SipUserAgent(settings.sip, playout_capacity_ms=settings.calls.playout_capacity_ms,
                          pjsip_log_level=settings.logging.pjsip_level)
        manager = CallManager(settings, ua, lambda: store.current, url, services)
        await asyncio.to_thread(ua.start, loop, manager.on_sip_event)
        stack.push_async_callback(asyncio.to_thread, ua.stop)
        await stack.enter_async_context(manager)
        _install_signals(loop, stop, store, workers)
        stack.callback(_remove_signals, loop)
        info = GatewayInfo(tuple(ua.transports), url, settings.realtime.embedded)
        sip_desc = ", ".join(f"{t.type}:{t.host}:{t.port}" for t in info.sip)
        log.info("gateway ready (pid %d): SIP on %s; agents on %s%s; dialplan %s "
                 "(reload with SIGHUP)", os.getpid(), sip_desc, url,
                 " (embedded local simulator, no API key needed)" if info.embedded_simulator
                 else "", store.path)
        if ready is not None:
            ready(info)
        await stop.wait()
        log.info("stopping: ending %d active call(s)", manager.active)


@contextlib.asynccontextmanager
async def _embedded_simulator(settings: Settings):  # type: ignore[no-untyped-def]
    from gateway.sim.scenario import ScenarioBook, load_scenarios
    from gateway.sim.server import SimOptions, SimulatorServer

    sim_cfg = settings.simulator
    book = load_scenarios(sim_cfg.scenarios) if sim_cfg.scenarios else ScenarioBook.default()
    options = SimOptions(speed=sim_cfg.speed, tts_engine=sim_cfg.tts,
                         default_model=settings.realtime.model)
    async with SimulatorServer(sim_cfg.host, sim_cfg.port, book, options) as sim:
        log.info("embedded Realtime simulator on %s", sim.ws_url)
        yield sim.ws_url


class _Workers:
    """The tool worker pool, started when a dialplan first needs it (also after a reload)."""

    def __init__(self, size: int, services: AgentServices) -> None:
        self.size = size
        self.services = services
        self._starting: asyncio.Task[None] | None = None

    async def ensure(self, plan: Dialplan) -> None:
        if self.services.runner is not None or not needs_workers(plan):
            return
        runner = ToolRunner(self.size, preload=preload_paths(plan))
        await runner.start()
        self.services.runner = runner
        log.info("started %d tool worker process(es)", self.size)

    def ensure_soon(self, plan: Dialplan) -> None:
        if self.services.runner is None and needs_workers(plan) and self._starting is None:
            self._starting = asyncio.create_task(self.ensure(plan), name="app:tool-workers")

    async def close(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self.services.runner is not None:
            await self.services.runner.close()
            self.services.runner = None


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event,
                     store: DialplanStore, workers: _Workers) -> None:
    def reload() -> None:
        errors = store.reload()
        if errors is None:
            log.info("dialplan reloaded from %s (generation %d)", store.path, store.generation)
            workers.ensure_soon(store.current)
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
