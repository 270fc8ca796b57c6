"""The control process: ``gateway run`` with SIP workers behind a Kamailio front.

Start order: the HTTP server (``/healthz`` answers at once, ``/readyz`` says 503 "starting"),
the embedded Realtime simulator when configured (once, here; every worker's calls use it), the
dialplan (validated once: a bad file stops the start), the SIP workers (each one pjsua2
endpoint on its own loopback port and RTP range, started by :class:`Supervisor` and known once
it said hello), then the Kamailio front with the workers as destinations and their capacity as
``maxload``; then ``/readyz`` says 200.

While it runs, what workers report feeds the :class:`CallDirectory` (``/v1/calls``,
``/metrics``); a worker that dies has its live calls ended in the directory with the reason,
each logged as a call record, and is restarted with backoff while the front's probes keep
calls away from it until it answers again.

SIGTERM or SIGINT drains: ``/readyz`` says 503, the front stops dispatching to every worker,
the workers answer new INVITEs and OPTIONS with 503, live calls go on for up to
``control.drain_timeout_s``, then get BYE; the process exits when every worker has. A second
signal stops at once. SIGHUP validates the dialplan once (in a thread) and, only when it is
good, pushes the finished plan to every worker (:class:`PlanPublisher`); a bad file is refused
everywhere and the old plan stays.

The control process is the only SIP-side process that imports the dialplan's Python code: it
runs the one tool worker pool (:class:`~gateway.agents.pool.ToolWorkers`) that serves every
worker's tool and guardrail requests (:class:`ToolBroker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gateway.agents.http_tool import HttpToolClient
from gateway.agents.pool import ToolWorkers
from gateway.calls.conversation import AgentServices
from gateway.calls.recording import check_directory
from gateway.config import Settings, recordings_dir
from gateway.control.actions import CallActions
from gateway.control.api import ApiContext, install_api
from gateway.control.auth import bearer_auth
from gateway.control.commands import CommandDesk
from gateway.control.directory import CallDirectory
from gateway.control.feed import CallFeed
from gateway.control.http import ControlState, build_app, start_http, stop_http
from gateway.control.metrics import ControlMetrics
from gateway.control.monitor import (
    OPEN_PATHS as MONITOR_PATHS,
    OPEN_PREFIXES as MONITOR_PREFIXES,
    install_monitor,
)
from gateway.control.openai_calls import OpenAICalls, WebhookEndpoint
from gateway.control.outbound import Outbound, StatusHooks, status_of_end
from gateway.control.plans import PlanPublisher, relay_errors
from gateway.control.readiness import Readiness
from gateway.control.relays import RelayDesk
from gateway.control.supervisor import (
    FromWorker,
    Supervisor,
    WorkerDown,
    WorkerSpec,
    WorkerUnavailable,
    WorkerUp,
    ipc_socket_path,
)
from gateway.control.tools import ToolBroker
from gateway.control.topology import Plan, WorkerSlot, front_spec
from gateway.control.watchers import LevelWatchers
from gateway.dialplan.store import DialplanStore
from gateway.errors import GatewayError
from gateway.front.kamailio import KamailioFront
from gateway.ipc.messages import (
    CallEnded,
    CallEvent,
    CallOffered,
    CallStarted,
    CommandResult,
    ControlMessage,
    RelayOffered,
    ToolRequest,
    WorkerMessage,
)
from gateway.records.writer import RecordWriter
from gateway.sip.sources import account_sources

log = logging.getLogger("gateway.control")

#: How long workers may take to start and say hello.
WORKERS_READY_S: Final = 60.0
#: After a drain, how long workers get to exit before they are stopped.
DRAIN_GRACE_S: Final = 10.0
#: A second signal: how long workers get to end their calls before they are killed.
FAST_STOP_GRACE_S: Final = 3.0
#: Run directories (IPC socket, Kamailio's files) are ``$TMPDIR/gateway-XXXX``; each holds the
#: control process's pid, so a later start can remove those of processes that were killed.
RUN_DIR_PREFIX: Final = "gateway-"
PID_FILE: Final = "control.pid"
#: What the preloaded parent imports before it forks the workers (``docs/control.md``): the
#: worker's command line and what it imports at start (pjsua2's module, numpy, websockets,
#: jsonschema, the call path), shared copy-on-write by every worker instead of one copy each.
WORKER_PRELOAD: Final = ("gateway.cli", "gateway.worker.main", "gateway.front.upstream",
                         "concurrent.futures.thread")


def _sweep_stale_run_dirs() -> None:
    """Remove run directories of control processes that died without cleaning up (SIGKILL)."""
    for pid_file in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*/{PID_FILE}"):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
        except ProcessLookupError:
            log.info("removing the run directory of a control process that is gone: %s",
                     pid_file.parent)
            shutil.rmtree(pid_file.parent, ignore_errors=True)
        except (OSError, ValueError):
            continue


def worker_spec(settings: Settings, slot: WorkerSlot, ipc: Path, realtime_url: str,
                plan_file: Path, log_path: Path | None = None, *,
                front: bool = True) -> WorkerSpec:
    """How to start the worker of ``slot``: ``gateway worker ...``, forked when it can be.

    Without a front (one worker on loopback, e.g. beside the OpenAI webhook) the worker binds
    the configured transports itself and trusts no ``X-Gateway-Source``.
    """
    argv = [sys.executable, "-m", "gateway", "worker"]
    if settings.source != "<defaults>":
        argv += ["-c", settings.source]
    argv += ["--id", slot.worker_id, "--ipc", str(ipc), "--plan", str(plan_file),
             "--sip-port", str(slot.sip_port),
             "--rtp-port-start", str(slot.rtp_port_start),
             "--rtp-port-range", str(slot.rtp_port_range), "--realtime-url", realtime_url]
    if front:
        argv += ["--front-address", "127.0.0.1"]
        proxy = front_proxy_uri(settings)
        if proxy is not None:
            argv += ["--front-proxy", proxy]
    else:
        argv.append("--own-transports")
    if settings.realtime.embedded:
        argv.append("--embedded-simulator")
    return WorkerSpec(slot.worker_id, tuple(argv), log_path=log_path, start="fork")


def front_proxy_uri(settings: Settings) -> str | None:
    """The front as a worker's outbound proxy (``sip:host:port;lr``).

    The front's first UDP listen, reached on loopback when it listens on every address;
    ``None`` without a fixed UDP listen (placed calls then leave from the worker itself).
    """
    udp = next((t for t in settings.sip.transports if t.type == "udp"), None)
    if udp is None or udp.port == 0:
        return None
    host = "127.0.0.1" if udp.host in ("0.0.0.0", "::", "") else udp.host
    host = f"[{host}]" if ":" in host else host
    return f"sip:{host}:{udp.port};lr"


async def run_control(settings: Settings, plan: Plan, *,
                      env: Mapping[str, str] | None = None) -> None:
    """Run the control process until it has drained (see the module docstring)."""
    from gateway.app import embedded_simulator, publish_to  # the simulator stays out of workers

    env = env or {}
    store = DialplanStore(settings.dialplan, env=env,  # ConfigErrors: refuse a bad plan
                          check=lambda p: relay_errors(p, settings.openai_calls))
    if any(route.recording is not None for route in store.current.routes):
        problem = check_directory(recordings_dir(settings))  # before any call: say it now
        if problem is not None:
            raise GatewayError(problem)
    readiness = Readiness("starting")
    directory = CallDirectory()
    metrics = ControlMetrics(directory)
    stop = asyncio.Event()
    fast = asyncio.Event()
    _sweep_stale_run_dirs()
    run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
    (run_dir / PID_FILE).write_text(f"{os.getpid()}\n")
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, run_dir, True)
        plans = PlanPublisher(store, run_dir / "dialplan.json")
        plans.write()
        # The one tool pool: every worker's tool requests, and the webhook calls' agents.
        services = AgentServices(http=await stack.enter_async_context(HttpToolClient()))
        pool = ToolWorkers(settings.calls.tool_workers, publish_to(services))
        stack.push_async_callback(pool.close)
        # Closed last (after the workers and the webhook calls): every record gets written.
        records = RecordWriter.for_settings(settings) if settings.records.enabled else None
        if records is not None:
            records.start()
            stack.push_async_callback(records.close)
        state = ControlState(directory, metrics, readiness,
                             records.store if records is not None else None)
        await pool.ensure(store.current)
        webhooks = WebhookEndpoint(settings) if settings.openai_calls.enabled else None
        send = _LateSend()
        watchers = LevelWatchers()
        feed, commands = CallFeed(on_watch=watchers.changed), CommandDesk(send)
        watchers.feed = feed
        hooks = StatusHooks(settings.control.status_webhook_secret.value)
        stack.push_async_callback(hooks.close)
        outbound = Outbound(directory, commands, hooks)
        app = _application(settings, state, webhooks, commands, feed, outbound)
        http = await start_http(app, settings.control.host, settings.control.port)
        stack.push_async_callback(stop_http, http)
        stack.callback(feed.close)  # first: open event streams end, so the stop need not wait
        url = settings.realtime.url
        if settings.realtime.embedded:
            hook = (f"http://{_http_host(http.host)}:{http.port}"
                    f"{settings.openai_calls.webhook_path}" if webhooks is not None else None)
            url = await stack.enter_async_context(embedded_simulator(settings,
                                                                     webhook_url=hook))
        ipc = ipc_socket_path(run_dir / "ipc")
        (run_dir / "ipc").mkdir(mode=0o700)
        specs = [worker_spec(settings, slot, ipc, url, plans.path, front=plan.front)
                 for slot in plan.workers]
        digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:32]
        supervisor = Supervisor(specs, run_dir=run_dir / "ipc", settings_digest=digest,
                                preload=WORKER_PRELOAD)
        await supervisor.start()
        stack.push_async_callback(supervisor.stop, FAST_STOP_GRACE_S)
        send.supervisor = supervisor
        watchers.broadcast = supervisor.broadcast
        stack.push_async_callback(watchers.close)
        broker = ToolBroker(pool, supervisor.send)
        stack.push_async_callback(broker.close)
        relays = RelayDesk()
        if webhooks is not None:
            await webhooks.start(stack, plan=lambda: store.current, services=services,
                                 realtime_url=url,
                                 embedded_ws_url=url if settings.realtime.embedded else None,
                                 relays=relays, commands=commands,
                                 on_record=lambda r: metrics.records.observe(r.as_dict()),
                                 records=records)
        desks = _Desks(broker, relays, commands, feed, hooks, records, watchers)
        events = asyncio.create_task(_consume(supervisor, directory, metrics, desks, plans),
                                     name="control:worker-events")
        stack.push_async_callback(_cancel, events)
        try:
            await supervisor.wait_ready(WORKERS_READY_S)
        except TimeoutError as exc:
            raise GatewayError(f"SIP workers did not start: {exc}") from None
        capacity = min(supervisor.info(w.worker_id).hello.capacity  # type: ignore[union-attr]
                       for w in plan.workers)
        front: KamailioFront | None = None
        if plan.front:
            front = KamailioFront(front_spec(await _with_registrar_sources(settings),
                                             plan.workers, capacity, run_dir / "front"))
            await front.start()
            stack.push_async_callback(front.stop)
        loop = asyncio.get_running_loop()
        reloads = _Reloads(plans, supervisor, pool)
        stack.push_async_callback(reloads.close)
        _install_signals(loop, stop, fast, reloads)
        stack.callback(_remove_signals, loop)
        readiness.ready()
        sip_desc = ", ".join(f"{t.type}:{t.host}:{t.port}" for t in settings.sip.transports)
        log.info("gateway ready (pid %d): SIP on %s (%s, %s); %d worker(s) x %d calls; "
                 "agents on %s; control HTTP on %s:%d", os.getpid(), sip_desc,
                 "Kamailio front" if front else "no front", plan.why, len(plan.workers),
                 capacity, url, http.host, http.port)
        await stop.wait()
        readiness.draining("shutting down")
        if webhooks is not None:
            webhooks.drain()
            await asyncio.gather(_drain(settings, supervisor, front, fast),
                                 webhooks.finish(settings.control.drain_timeout_s))
        else:
            await _drain(settings, supervisor, front, fast)


def _http_host(host: str) -> str:
    """An address to reach a server bound to ``host`` from this host."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def _with_registrar_sources(settings: Settings) -> Settings:
    """``settings`` with each account's ``allow_from`` resolved (the front admits by it)."""
    accounts = [dataclasses.replace(a, allow_from=await account_sources(a))
                for a in settings.sip.accounts]
    sip = dataclasses.replace(settings.sip, accounts=tuple(accounts))
    return dataclasses.replace(settings, sip=sip)


async def _drain(settings: Settings, supervisor: Supervisor, front: KamailioFront | None,
                 fast: asyncio.Event) -> None:
    deadline = settings.control.drain_timeout_s
    log.info("draining: no new calls; live calls may go on for %g s", deadline)
    if front is not None:
        for worker_id in supervisor.worker_ids:
            with contextlib.suppress(GatewayError):
                await front.drain(worker_id)
    drain = asyncio.create_task(supervisor.drain(deadline, grace_s=DRAIN_GRACE_S),
                                name="control:drain")
    second = asyncio.create_task(fast.wait(), name="control:second-signal")
    done, _ = await asyncio.wait({drain, second}, return_when=asyncio.FIRST_COMPLETED)
    if second in done and not drain.done():
        log.info("second signal: stopping now")
        drain.cancel()
        await asyncio.wait((drain,))
        await supervisor.stop(FAST_STOP_GRACE_S)
    else:
        second.cancel()
        await asyncio.wait((second,))
        drain.result()
    log.info("drained: every worker has exited")


@dataclass(frozen=True)
class _Desks:
    """Where workers' requests and answers go."""

    tools: ToolBroker
    relays: RelayDesk
    commands: CommandDesk
    feed: CallFeed
    hooks: StatusHooks
    records: RecordWriter | None
    watchers: LevelWatchers


class _LateSend:
    """``Supervisor.send`` once the supervisor exists (the HTTP app is built before it)."""

    supervisor: Supervisor | None = None

    async def __call__(self, worker_id: str, msg: ControlMessage) -> None:
        if self.supervisor is None:
            raise WorkerUnavailable("the SIP workers are not started yet")
        await self.supervisor.send(worker_id, msg)


def _application(settings: Settings, state: ControlState, webhooks: WebhookEndpoint | None,
                 commands: CommandDesk, feed: CallFeed,
                 outbound: Outbound) -> web.Application:
    """The control HTTP application: probes, metrics, the API behind tokens, the webhook.

    And the monitor page, whose files are served without a token: they hold no data, the page
    sends the operator's token with its API requests.
    """
    ctl = settings.control
    open_paths = ["/healthz", "/readyz", *(["/metrics"] if ctl.metrics_open else []),
                  *MONITOR_PATHS]
    if webhooks is not None:
        open_paths.append(settings.openai_calls.webhook_path)  # signed instead
    app = build_app(state, middlewares=[bearer_auth(ctl.api_tokens, open_paths=open_paths,
                                                    open_prefixes=MONITOR_PREFIXES)])
    install_monitor(app)
    if webhooks is not None:
        webhooks.install(app)

    def calls() -> OpenAICalls | None:
        return webhooks.calls if webhooks is not None else None

    def live_direct() -> list[dict[str, Any]]:
        running = calls()
        return running.live() if running is not None else []

    actions = CallActions(state.directory, commands, calls)
    install_api(app, ApiContext(state.directory, actions, feed, live_direct, outbound))
    return app


async def _consume(supervisor: Supervisor, directory: CallDirectory, metrics: ControlMetrics,
                   desks: _Desks, plans: PlanPublisher) -> None:
    async for event in supervisor.events():
        if isinstance(event, WorkerUp):
            directory.worker_up(event.hello)
            log.info("worker %s up (pid %d): %s, %d calls", event.worker_id, event.pid,
                     event.hello.binding, event.hello.capacity)
            # It read the plan file at start; a reload may have come since.
            with contextlib.suppress(GatewayError):
                await supervisor.send(event.worker_id, plans.message)
                await supervisor.send(event.worker_id, desks.watchers.message())
        elif isinstance(event, FromWorker) and isinstance(event.message, ToolRequest):
            desks.tools.submit(event.worker_id, event.message)
        elif isinstance(event, FromWorker) and isinstance(event.message, CommandResult):
            desks.commands.resolve(event.worker_id, event.message)
        elif isinstance(event, FromWorker):
            msg = event.message
            if isinstance(msg, RelayOffered):
                desks.relays.offered(event.worker_id, msg)
            elif isinstance(msg, CallEnded):
                desks.relays.ended(msg.call_id)
                metrics.records.observe(msg.record)
            _publish(desks.feed, msg)
            _status(desks.hooks, msg)
            finished = directory.on_message(event.worker_id, event.message)
            if desks.records is not None:
                await _record(desks.records, directory, event.worker_id, msg)
            for ended in finished:
                log.debug("call %s ended: %s", ended.get("call_id"), ended.get("end_reason"))
                if desks.records is not None:
                    await desks.records.ended(ended)  # backpressure, never dropped
        elif isinstance(event, WorkerDown):
            desks.relays.worker_down(event.worker_id)
            desks.commands.worker_down(event.worker_id, event.reason)
            for ended in directory.worker_down(event.worker_id, event.reason):
                desks.feed.publish(str(ended["call_id"]), "ended",
                                   {"reason": ended.get("end_reason")})
                log.warning("call record: %s", json.dumps(ended, sort_keys=True, default=str))
                if desks.records is not None:
                    await desks.records.ended(ended)
            if not event.expected:
                log.error("worker %s (pid %s) went down: %s; restart in %.1f s",
                          event.worker_id, event.pid, event.reason, event.restart_in_s or 0.0)
                metrics.worker_restarted()


async def _record(records: RecordWriter, directory: CallDirectory, worker_id: str,
                  msg: WorkerMessage) -> None:
    """A call's first row: when it is offered (and again as relayed once it relays)."""
    if isinstance(msg, CallOffered):
        await records.offered(msg.call_id, "bridged", "inbound", msg.time, msg.from_user,
                              msg.to_user, sip_call_id=msg.sip_call_id, worker_id=worker_id)
    elif isinstance(msg, RelayOffered):
        call = directory.call(msg.call_id)
        if call is not None:
            await records.offered(msg.call_id, "relayed", "inbound", float(call["offered_at"]),
                                  msg.from_user, msg.to_user,
                                  sip_call_id=str(call.get("sip_call_id") or "") or None,
                                  worker_id=worker_id, route=msg.route)


def _publish(feed: CallFeed, msg: WorkerMessage) -> None:
    """A worker's call lifecycle message, for the API's event streams."""
    if isinstance(msg, CallOffered):
        feed.publish(msg.call_id, "offered", {"from_user": msg.from_user,
                                              "to_user": msg.to_user, "time": msg.time})
    elif isinstance(msg, CallStarted):
        feed.publish(msg.call_id, "started", {"route": msg.route, "agent": msg.agent,
                                              "codec": msg.codec})
    elif isinstance(msg, CallEvent):
        feed.publish(msg.call_id, msg.kind, {"time": msg.time, **msg.data})
    elif isinstance(msg, CallEnded):
        feed.publish(msg.call_id, "ended", {"reason": msg.reason})


def _status(hooks: StatusHooks, msg: WorkerMessage) -> None:
    """An outbound call's status change, for its status webhook."""
    if isinstance(msg, CallEvent) and msg.kind == "state" \
            and msg.data.get("state") in ("ringing", "answered"):
        hooks.status(msg.call_id, str(msg.data["state"]))
    elif isinstance(msg, CallEnded) and msg.record.get("direction") == "outbound":
        sip_status = msg.record.get("sip_status")
        hooks.status(msg.call_id, status_of_end(msg.reason, bool(msg.record.get("answered"))),
                     sip_status=sip_status if isinstance(sip_status, int) else None,
                     reason=msg.reason)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait((task,))


class _Reloads:
    """SIGHUP: reload and push the dialplan, one reload at a time (a signal meanwhile: again)."""

    def __init__(self, plans: PlanPublisher, supervisor: Supervisor, pool: ToolWorkers) -> None:
        self._plans = plans
        self._supervisor = supervisor
        self._pool = pool
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        if self._task is not None:
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="control:reload")

    async def _run(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    message = await self._plans.reload()
                    if message is not None:
                        sent = await self._supervisor.broadcast(message)
                        log.info("dialplan reloaded: %s is valid (generation %d): pushed "
                                 "to %d worker(s)", message.path, message.version, len(sent))
                        self._pool.ensure_soon(lambda: self._plans.store.current)
                except (OSError, GatewayError) as exc:  # e.g. a plan over the frame limit
                    log.error("dialplan reload not pushed to the workers: %s", exc)
                if not self._again:
                    return
        finally:
            self._task = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait((self._task,))


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, fast: asyncio.Event,
                     reloads: _Reloads) -> None:
    def terminate() -> None:
        if stop.is_set():
            fast.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, terminate)
    loop.add_signal_handler(signal.SIGHUP, reloads.request)


def _remove_signals(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.remove_signal_handler(sig)
