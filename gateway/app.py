"""Composition root: builds the gateway's parts from the settings, starts and stops them in order.

Start: the embedded Realtime simulator (when ``realtime.url`` is ``embedded``), the dialplan,
the call manager, then the SIP user agent, which starts taking calls. Stop (SIGINT/SIGTERM):
the manager hangs up every call first, then the SIP endpoint unregisters and is destroyed, then
the simulator stops. SIGHUP reloads the dialplan atomically: a bad file is refused with its
errors logged and the old dialplan stays. A reloaded plan that needs tool workers when none run
starts them in the background (:class:`~gateway.agents.pool.ToolWorkers`). A SIP worker runs
the same composition with the plan and the tool service its control process gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gateway.agents.http_tool import HttpToolClient
from gateway.agents.pool import ToolWorkers
from gateway.agents.runner import ToolRunner
from gateway.agents.service import ToolService
from gateway.calls.conversation import AgentServices
from gateway.calls.manager import CallManager
from gateway.config import Settings
from gateway.dialplan.schema import Dialplan
from gateway.logs import add_secrets
from gateway.sip.relay import RelayConfig
from gateway.sip.ua import BoundTransport, FrontTrust, SipUserAgent

if TYPE_CHECKING:
    from gateway.dialplan.store import DialplanStore

log = logging.getLogger("gateway")

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
                      | None = None, signals: bool = True, plans: PlanSource | None = None,
                      tools: ToolService | None = None,
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
        signals: Whether SIGINT/SIGTERM stop it and SIGHUP reloads the dialplan (when the
            plan comes from ``plans``, SIGHUP is ignored: its owner pushes new plans).
        plans: Where the dialplan comes from, instead of loading ``settings.dialplan`` here
            (a SIP worker gets it from the control process and never imports user code).
        tools: Who runs Python tools and guardrails, instead of a tool worker pool of this
            process (a SIP worker's :class:`~gateway.worker.tools.RemoteTools`).
        ready_message: The start of the log line that says it takes calls.
    """
    env = env or {}
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    reloadable: DialplanStore | None = None
    store: PlanSource
    if plans is None:
        from gateway.dialplan.store import DialplanStore  # a worker never loads a file

        store = reloadable = DialplanStore(settings.dialplan, env=env)  # ConfigErrors
    else:
        store = plans
    add_secrets(s.value for s in store.current.env_secrets)
    async with contextlib.AsyncExitStack() as stack:
        url = settings.realtime.url
        if settings.realtime.embedded:
            url = await stack.enter_async_context(embedded_simulator(settings))
        services = AgentServices(runner=tools,
                                 http=await stack.enter_async_context(HttpToolClient()))
        workers: ToolWorkers | None = None
        if tools is None:
            workers = ToolWorkers(settings.calls.tool_workers, publish_to(services))
            stack.push_async_callback(workers.close)
            await workers.ensure(store.current)
        # An unanswered INVITE outlives the slowest Realtime connect (which answers 503 itself)
        # by a margin, so the deadline is a backstop, never the reason a caller is refused.
        ua = SipUserAgent(settings.sip, playout_capacity_ms=settings.calls.playout_capacity_ms,
                          pjsip_log_level=settings.logging.pjsip_level,
                          answer_deadline_s=settings.realtime.connect_budget_s + 15.0,
                          log_content=settings.logging.call_content, front=front,
                          relay=RelayConfig.of(settings.openai_calls))
        manager = CallManager(settings, ua, lambda: store.current, url, services)
        await asyncio.to_thread(ua.start, loop, manager.on_sip_event)
        stack.push_async_callback(asyncio.to_thread, ua.stop)
        await stack.enter_async_context(manager)
        if started is not None:
            await started(ua, manager)
        if signals:
            _install_signals(loop, stop, reloadable, workers)
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
async def embedded_simulator(settings: Settings,  # type: ignore[no-untyped-def]
                             *, webhook_url: str | None = None):
    """The embedded Realtime simulator; yields its WebSocket URL.

    With ``webhook_url``, its Realtime Calls side posts ``realtime.call.incoming`` there,
    signed with ``openai_calls``' secret (calls placed with ``POST /sim/calls``).
    """
    from gateway.sim.scenario import ScenarioBook, load_scenarios
    from gateway.sim.server import SERVICE_KEEP_CLOSED, SimOptions, SimulatorServer

    sim_cfg = settings.simulator
    book = load_scenarios(sim_cfg.scenarios) if sim_cfg.scenarios else ScenarioBook.default()
    # In-process, every session the simulator kept would count as gateway memory per call.
    options = SimOptions(speed=sim_cfg.speed, tts_engine=sim_cfg.tts,
                         default_model=settings.realtime.model, keep_closed=SERVICE_KEEP_CLOSED,
                         webhook_url=webhook_url,
                         webhook_secret=settings.openai_calls.webhook_secret.value or None)
    async with SimulatorServer(sim_cfg.host, sim_cfg.port, book, options) as sim:
        log.info("embedded Realtime simulator on %s", sim.ws_url)
        yield sim.ws_url


class PlanSource(Protocol):
    """Holds the dialplan in force (:class:`DialplanStore`, or a worker's pushed plan)."""

    @property
    def current(self) -> Dialplan:
        """The dialplan in force."""
        ...

    @property
    def path(self) -> Path:
        """The dialplan file (for logs)."""
        ...


def publish_to(services: AgentServices) -> Callable[[ToolRunner | None], None]:
    """A :class:`ToolWorkers` ``publish`` that sets ``services.runner``."""
    def publish(runner: ToolRunner | None) -> None:
        services.runner = runner
    return publish


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event,
                     store: DialplanStore | None, workers: ToolWorkers | None) -> None:
    def reload() -> None:
        if store is None:
            log.info("SIGHUP ignored: this process runs the dialplan its control process"
                     " pushes")
            return
        errors = store.reload()
        if errors is None:
            add_secrets(s.value for s in store.current.env_secrets)
            log.info("dialplan reloaded from %s (generation %d)", store.path, store.generation)
            if workers is not None:
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
