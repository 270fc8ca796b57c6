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
signal stops at once. SIGHUP validates the dialplan once and, only when it is good, has every
worker reload it; a bad file is refused everywhere and the old plan stays.
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
from pathlib import Path
from typing import Final

from gateway.config import Settings
from gateway.control.directory import CallDirectory
from gateway.control.http import ControlState, build_app, start_http, stop_http
from gateway.control.metrics import ControlMetrics
from gateway.control.readiness import Readiness
from gateway.control.supervisor import (
    FromWorker,
    Supervisor,
    WorkerDown,
    WorkerSpec,
    WorkerUp,
    ipc_socket_path,
)
from gateway.control.topology import Plan, WorkerSlot, front_spec
from gateway.dialplan.store import DialplanStore
from gateway.errors import GatewayError
from gateway.front.kamailio import KamailioFront
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
                log_path: Path | None = None) -> WorkerSpec:
    """How to start the worker of ``slot`` (``gateway worker ...`` with this interpreter)."""
    argv = [sys.executable, "-m", "gateway", "worker"]
    if settings.source != "<defaults>":
        argv += ["-c", settings.source]
    argv += ["--id", slot.worker_id, "--ipc", str(ipc), "--sip-port", str(slot.sip_port),
             "--rtp-port-start", str(slot.rtp_port_start),
             "--rtp-port-range", str(slot.rtp_port_range), "--realtime-url", realtime_url,
             "--front-address", "127.0.0.1"]
    if settings.realtime.embedded:
        argv.append("--embedded-simulator")
    return WorkerSpec(slot.worker_id, tuple(argv), log_path=log_path)


async def run_control(settings: Settings, plan: Plan, *,
                      env: Mapping[str, str] | None = None) -> None:
    """Run the control process until it has drained (see the module docstring)."""
    from gateway.app import embedded_simulator  # the simulator's imports stay out of workers

    env = env or {}
    store = DialplanStore(settings.dialplan, env=env)  # ConfigErrors: refuse a bad plan
    readiness = Readiness("starting")
    directory = CallDirectory()
    metrics = ControlMetrics(directory)
    state = ControlState(directory, metrics, readiness)
    stop = asyncio.Event()
    fast = asyncio.Event()
    _sweep_stale_run_dirs()
    run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
    (run_dir / PID_FILE).write_text(f"{os.getpid()}\n")
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, run_dir, True)
        http = await start_http(build_app(state), settings.control.host,
                                settings.control.port)
        stack.push_async_callback(stop_http, http)
        url = settings.realtime.url
        if settings.realtime.embedded:
            url = await stack.enter_async_context(embedded_simulator(settings))
        ipc = ipc_socket_path(run_dir / "ipc")
        (run_dir / "ipc").mkdir(mode=0o700)
        specs = [worker_spec(settings, slot, ipc, url) for slot in plan.workers]
        digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:32]
        supervisor = Supervisor(specs, run_dir=run_dir / "ipc", settings_digest=digest)
        await supervisor.start()
        stack.push_async_callback(supervisor.stop, FAST_STOP_GRACE_S)
        events = asyncio.create_task(_consume(supervisor, directory, metrics),
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
        _install_signals(loop, stop, fast, store, supervisor)
        stack.callback(_remove_signals, loop)
        readiness.ready()
        sip_desc = ", ".join(f"{t.type}:{t.host}:{t.port}" for t in settings.sip.transports)
        log.info("gateway ready (pid %d): SIP on %s (%s, %s); %d worker(s) x %d calls; "
                 "agents on %s; control HTTP on %s:%d", os.getpid(), sip_desc,
                 "Kamailio front" if front else "no front", plan.why, len(plan.workers),
                 capacity, url, http.host, http.port)
        await stop.wait()
        readiness.draining("shutting down")
        await _drain(settings, supervisor, front, fast)


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


async def _consume(supervisor: Supervisor, directory: CallDirectory,
                   metrics: ControlMetrics) -> None:
    async for event in supervisor.events():
        if isinstance(event, WorkerUp):
            directory.worker_up(event.hello)
            log.info("worker %s up (pid %d): %s, %d calls", event.worker_id, event.pid,
                     event.hello.binding, event.hello.capacity)
        elif isinstance(event, FromWorker):
            for ended in directory.on_message(event.worker_id, event.message):
                log.debug("call %s ended: %s", ended.get("call_id"), ended.get("end_reason"))
        elif isinstance(event, WorkerDown):
            for ended in directory.worker_down(event.worker_id, event.reason):
                log.warning("call record: %s", json.dumps(ended, sort_keys=True, default=str))
            if not event.expected:
                log.error("worker %s (pid %s) went down: %s; restart in %.1f s",
                          event.worker_id, event.pid, event.reason, event.restart_in_s or 0.0)
                metrics.worker_restarted()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait((task,))


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, fast: asyncio.Event,
                     store: DialplanStore, supervisor: Supervisor) -> None:
    def terminate() -> None:
        if stop.is_set():
            fast.set()
        stop.set()

    def reload() -> None:
        errors = store.reload()
        if errors is not None:
            for err in errors.errors:
                log.error("dialplan reload refused by every worker, keeping the old one: %s",
                          err)
            return
        log.info("dialplan %s is valid (generation %d): reloading every worker", store.path,
                 store.generation)
        for worker_id in supervisor.worker_ids:
            pid = supervisor.info(worker_id).pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, terminate)
    loop.add_signal_handler(signal.SIGHUP, reload)


def _remove_signals(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.remove_signal_handler(sig)
