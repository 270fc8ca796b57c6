"""The ``gateway`` command line: one console script with sub-commands.

Each sub-command imports what it needs when it runs, so ``gateway --help`` and the checking
commands stay fast and work without the SIP stack. Exit codes: 0 success, 1 invalid input
(config/dialplan errors, printed as ``file:line: field: reason``), 2 usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from gateway import __version__
from gateway.config import load_settings
from gateway.errors import ConfigError, ConfigErrors, GatewayError
from gateway.logs import setup_logging

log = logging.getLogger("gateway")


def _header(value: str) -> tuple[str, str]:
    name, sep, val = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value!r}")
    return name, val


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    p = argparse.ArgumentParser(
        prog="gateway",
        description="SIP telephony gateway for OpenAI Realtime voice agents.",
    )
    p.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start the gateway (default: embedded local simulator)",
                         description="Start the gateway. With no configuration it runs on the "
                         "embedded default: the local Realtime simulator, no API key needed.")
    run.add_argument("-c", "--config", help="YAML configuration file (default: $GATEWAY_CONFIG "
                     "or ./gateway.yaml when present, else built-in defaults)")
    run.add_argument("--run-seconds", type=float, default=None,
                     help="stop by itself after this many seconds (for smoke tests)")

    worker = sub.add_parser("worker", help="(internal) one SIP worker process; `gateway run` "
                            "starts these itself", description="One SIP worker process, "
                            "started and supervised by `gateway run` (the control process).")
    worker.add_argument("-c", "--config", help="the gateway's YAML configuration file")
    from gateway.worker.main import add_arguments

    add_arguments(worker)

    sim = sub.add_parser("sim", help="run the local Realtime API simulator",
                         description="Run the local, protocol-faithful Realtime API simulator "
                         "on a WebSocket (ws://HOST:PORT/v1/realtime).")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--scenarios", help="YAML scenario file (see docs/simulator.md)")
    sim.add_argument("--speed", type=float, default=4.0,
                     help="send agent audio this many times faster than real time (default 4)")
    sim.add_argument("--tts", choices=("auto", "espeak", "tone"), default="auto",
                     help="speech synthesis: espeak-ng, tones, or auto (espeak-ng if installed)")
    sim.add_argument("--run-seconds", type=float, default=None, help=argparse.SUPPRESS)

    call = sub.add_parser("call", help="place a test call (pjsua2 softphone)",
                          description="Call SIP_URI, play a WAV into the call, record what comes "
                          "back, hang up after --duration seconds; prints a JSON summary.")
    call.add_argument("uri", metavar="SIP_URI", help="e.g. sip:100@127.0.0.1:5060")
    call.add_argument("--play", metavar="IN.wav", help="WAV file to play (8 or 16 kHz mono)")
    call.add_argument("--record", metavar="OUT.wav", help="record what the far end sends")
    call.add_argument("--duration", type=float, default=10.0,
                      help="seconds to stay on the call after answer (default 10)")
    call.add_argument("--bind", default="127.0.0.1", help="local address (default 127.0.0.1)")
    call.add_argument("--port", type=int, default=0, help="local SIP port (default: any)")
    call.add_argument("--codec", choices=("PCMU", "PCMA"), help="offer only this codec")
    call.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp",
                      help="SIP transport (default udp)")
    call.add_argument("--dtmf", default="", metavar="DIGITS",
                      help="press these keys (RFC 4733) after --dtmf-after seconds")
    call.add_argument("--dtmf-after", type=float, default=1.0, metavar="S",
                      help="seconds after answer to send --dtmf (default 1)")
    call.add_argument("--srtp", choices=("off", "optional", "mandatory"), default="off",
                      help="offer SDES-SRTP (RTP/SAVP with a=crypto); default off")

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = cfg_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", nargs="?", help="YAML file (default: as for `gateway run`)")

    dp = sub.add_parser("dialplan", help="dialplan tools")
    dp_sub = dp.add_subparsers(dest="dialplan_command", metavar="ACTION", required=True)
    dcheck = dp_sub.add_parser("check", help="validate a dialplan file")
    dcheck.add_argument("file")
    droute = dp_sub.add_parser("route", help="show which route and agent a call would get")
    droute.add_argument("file", nargs="?", help="dialplan (default: the configured one)")
    droute.add_argument("--from", dest="from_user", required=True, help="caller (From user)")
    droute.add_argument("--to", dest="to_user", required=True, help="callee (To user / DID)")
    droute.add_argument("--caller-name", help="caller display name (From header)")
    droute.add_argument("--request-uri", help="request URI (default: sip:TO@127.0.0.1)")
    droute.add_argument("--header", type=_header, action="append", default=[],
                        metavar="NAME=VALUE", help="a SIP header of the INVITE (repeatable)")
    droute.add_argument("--account", help="ingress account or transport name")
    droute.add_argument("--source", default="127.0.0.1", help="source IP address")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "config":
            return _config_check(args.file)
        if args.command == "dialplan":
            return _dialplan(args)
        if args.command == "call":
            return _call(args)
        if args.command == "sim":
            return _sim(args)
        if args.command == "run":
            return _run(args)
        if args.command == "worker":
            return _worker(args)
    except ConfigErrors as exc:
        for err in exc.errors:
            print(f"error: {err}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except GatewayError as exc:  # e.g. the SIP port is taken: say so, without a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")  # exits with status 2


def _config_check(path: str | None) -> int:
    settings = load_settings(path, os.environ)
    print(f"OK: {settings.source}")
    rt = settings.realtime
    where = "embedded simulator" if rt.embedded else rt.url
    print(f"  realtime: {where} model={rt.model} api_key={'set' if rt.api_key else 'unset'}")
    for t in settings.sip.transports:
        print(f"  sip transport: {t.type} {t.host}:{t.port}")
    for a in settings.sip.accounts:
        print(f"  sip account: {a.name} -> {a.registrar} as {a.user}")
    print(f"  dialplan: {settings.dialplan}")
    return 0


def _dialplan(args: argparse.Namespace) -> int:
    from gateway.dialplan import commands
    from gateway.dialplan.router import first_values

    if args.dialplan_command == "check":
        return commands.check(args.file, sys.stdout, os.environ)
    path = args.file or load_settings(None, os.environ).dialplan
    return commands.route(
        path, from_user=args.from_user, to_user=args.to_user,
        request_uri=args.request_uri, headers=first_values(args.header),
        account=args.account,
        caller_name=args.caller_name,
        source_ip=args.source, out=sys.stdout, env=os.environ,
    )


def _call(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from gateway.sip.caller import CallReport, place_call

    printed = False

    def emit(report: CallReport) -> None:
        nonlocal printed
        if not printed:
            printed = True
            print(json.dumps(dataclasses.asdict(report)), flush=True)

    report = place_call(args.uri, play=args.play, record=args.record, duration_s=args.duration,
                        bind=args.bind, port=args.port, codec=args.codec,
                        transport=args.transport, dtmf=args.dtmf,
                        dtmf_after_s=args.dtmf_after, srtp=args.srtp, on_report=emit)
    emit(report)
    return 0 if report.answered_at is not None else 1


def _sim(args: argparse.Namespace) -> int:
    from gateway.sim.scenario import ScenarioBook, load_scenarios
    from gateway.sim.server import SERVICE_KEEP_CLOSED, SimOptions, serve

    setup_logging("INFO")
    book = load_scenarios(args.scenarios) if args.scenarios else ScenarioBook.default()
    options = SimOptions(speed=args.speed, tts_engine=args.tts, keep_closed=SERVICE_KEEP_CLOSED)

    def ready(url: str) -> None:
        log.info("Realtime simulator listening on %s (no API key needed; any Bearer token works)",
                 url)

    async def go() -> None:
        await _bounded(serve(args.host, args.port, book, options, ready), args.run_seconds)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return 0


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ)
    secrets = [settings.realtime.api_key.value,
               *(h.value for h in settings.realtime.headers.values()),
               *(a.password.value for a in settings.sip.accounts)]
    setup_logging(settings.logging.level, settings.logging.format, secrets)
    from gateway.control.topology import plan as plan_processes

    plan = plan_processes(settings, os.cpu_count() or 1)
    if plan.front or len(plan.workers) > 1:
        from gateway.control.app import run_control

        main_coro = run_control(settings, plan, env=os.environ)
    else:
        from gateway.app import run_gateway

        main_coro = run_gateway(settings, env=os.environ)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_bounded(main_coro, args.run_seconds))
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ)
    secrets = [settings.realtime.api_key.value,
               *(h.value for h in settings.realtime.headers.values()),
               *(a.password.value for a in settings.sip.accounts)]
    setup_logging(settings.logging.level, settings.logging.format, secrets)
    from gateway.worker.main import run_worker

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_worker(settings, args, dict(os.environ)))
    return 0


async def _bounded(coro: Coroutine[Any, Any, None], seconds: float | None) -> None:
    """Run ``coro``; with ``seconds``, cancel it cleanly after that long."""
    if seconds is None:
        await coro
        return
    try:
        await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        log.info("stopping after --run-seconds %.1f", seconds)
