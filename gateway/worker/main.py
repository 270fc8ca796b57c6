"""``gateway worker``: one SIP worker process, started and supervised by the control process.

It runs today's call path (:func:`gateway.app.run_gateway`) with the settings of its slot and
the finished dialplan the control process wrote (``--plan``; later plans come as ``reload``
messages), so it never imports the dialplan's Python code; its Python tools and guardrails run
in the control process's pool (:class:`~gateway.worker.tools.RemoteTools`). Settings of its slot:
one UDP transport on a loopback port of its own, its own RTP port range, the Realtime URL the
control process gives (the embedded simulator runs there, once), no registrations (the front
registers), and trust in the front's ``X-Gateway-Source`` header for the caller's real
address. It reports to the control process over :mod:`gateway.ipc` and exits when told to
shut down, when a drain has finished (no call left, or the deadline passed), or when the
control process goes away (it drains first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Sequence

from gateway.app import run_gateway
from gateway.calls.manager import CallManager
from gateway.config import Secret, Settings, TransportSettings
from gateway.ipc.unix import connect_unix
from gateway.sip.ua import FrontTrust, SipUserAgent
from gateway.worker.link import WorkerLink
from gateway.worker.plan import PushedPlan

log = logging.getLogger("gateway.worker")

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's command line (``gateway worker --help``)."""
    parser.add_argument("--id", required=True, help="worker id the control process gave")
    parser.add_argument("--ipc", required=True, help="control process's Unix socket")
    parser.add_argument("--plan", required=True,
                        help="the dialplan the control process validated (its plan file)")
    parser.add_argument("--sip-port", type=int, required=True, help="loopback UDP SIP port")
    parser.add_argument("--rtp-port-start", type=int, required=True)
    parser.add_argument("--rtp-port-range", type=int, required=True)
    parser.add_argument("--realtime-url", required=True, help="Realtime API URL for calls")
    parser.add_argument("--embedded-simulator", action="store_true",
                        help="the Realtime URL is the control process's embedded simulator")
    parser.add_argument("--front-address", action="append", default=[],
                        help="source address of the SIP front (repeatable); none: no front")
    parser.add_argument("--front-proxy", default=None, metavar="URI",
                        help="the front's SIP URI (sip:host:port;lr): calls this worker "
                        "places leave through it")
    parser.add_argument("--own-transports", action="store_true",
                        help="no front: bind the configured sip.transports (not --sip-port)")


def worker_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings of this worker's slot, derived from the gateway's."""
    transports = settings.sip.transports if args.own_transports else \
        (TransportSettings(type="udp", host="127.0.0.1", port=args.sip_port),)
    # SIP goes to loopback behind the front; media stays on the configured address, where
    # callers send their RTP (and from where a relayed call's TLS leg reaches OpenAI).
    sip = dataclasses.replace(
        settings.sip, transports=transports,
        rtp_port_start=args.rtp_port_start, rtp_port_range=args.rtp_port_range,
        rtp_host=settings.sip.rtp_host or settings.sip.transports[0].host,
        public_address=settings.sip.public_address)
    realtime = dataclasses.replace(settings.realtime, url=args.realtime_url)
    if args.embedded_simulator and not realtime.api_key.value:
        # The embedded simulator wants some bearer token; never a real one.
        realtime = dataclasses.replace(realtime, api_key=Secret("local-simulator"))
    return dataclasses.replace(settings, sip=sip, realtime=realtime)


async def run_worker(settings: Settings, args: argparse.Namespace,
                     env: dict[str, str] | None = None) -> int:
    """Run one worker until shutdown; returns the exit status."""
    stop = asyncio.Event()
    drain_task: asyncio.Task[None] | None = None
    manager_ref: list[CallManager] = []

    def on_drain(deadline_s: float) -> None:
        nonlocal drain_task
        drain_task = asyncio.create_task(_finish_drain(manager_ref, deadline_s, stop),
                                         name=f"worker:{args.id}:drain")

    plans = PushedPlan.from_file(args.plan)  # ConfigErrors: not started by a control process
    channel = await connect_unix(args.ipc, name=f"worker:{args.id}")
    link = WorkerLink(args.id, channel, on_drain=on_drain, on_shutdown=stop.set, plans=plans)

    async def started(ua: SipUserAgent, manager: CallManager) -> None:
        manager_ref.append(manager)
        await link.start(ua, manager)

    front = (FrontTrust(frozenset(args.front_address), proxy=args.front_proxy)
             if args.front_address else None)
    try:
        await run_gateway(worker_settings(settings, args), env=env or dict(os.environ),
                          stop=stop, front=front, started=started, plans=plans,
                          tools=link.tools,
                          ready_message=f"worker {args.id} ready")
    finally:
        if drain_task is not None:
            drain_task.cancel()
            await asyncio.wait((drain_task,))
        await link.close()
    return 0


async def _finish_drain(manager_ref: Sequence[CallManager], deadline_s: float,
                        stop: asyncio.Event) -> None:
    if manager_ref:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(manager_ref[0].wait_idle(), deadline_s)
    left = manager_ref[0].active if manager_ref else 0
    if left:
        log.info("drain deadline passed: ending %d call(s)", left)
    else:
        log.info("drained: no call left")
    stop.set()
