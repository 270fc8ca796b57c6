"""The ``gateway`` command line: one console script with sub-commands.

Each sub-command imports what it needs when it runs, so ``gateway --help`` and the checking
commands stay fast and work without the SIP stack. Exit codes: 0 success, 1 invalid input
(config/dialplan errors, printed as ``file:line: field: reason``), 2 usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.config import Settings, load_settings
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
    sim.add_argument("--webhook-url", metavar="URL",
                     help="Realtime Calls: POST realtime.call.incoming here for each call placed "
                     "with POST /sim/calls (e.g. the gateway's http://127.0.0.1:8080/openai/webhook)")
    sim.add_argument("--webhook-secret-env", default="OPENAI_WEBHOOK_SECRET", metavar="VAR",
                     help="environment variable holding the whsec_... signing secret "
                     "(default OPENAI_WEBHOOK_SECRET; never on the command line)")
    sim.add_argument("--ring-timeout", type=float, default=30.0, metavar="S",
                     help="Realtime Calls: a call not accepted within S seconds times out "
                     "(default 30)")
    sim.add_argument("--sip-port", type=int, metavar="PORT",
                     help="Realtime Calls: answer SIP calls (UDP and TCP) on --host:PORT like "
                     "OpenAI's SIP endpoint: each INVITE rings, posts the webhook and waits for "
                     "accept (0 picks a free port; default: no SIP endpoint)")
    sim.add_argument("--sip-tls-port", type=int, metavar="PORT",
                     help="also SIP over TLS on this port (needs --sip-tls-cert/--sip-tls-key)")
    sim.add_argument("--sip-tls-cert", metavar="PEM", help="TLS certificate for --sip-tls-port")
    sim.add_argument("--sip-tls-key", metavar="PEM", help="TLS private key for --sip-tls-port")
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
    droute.add_argument("--ingress", choices=("sip", "openai"), default="sip",
                        help="how the call arrives: sip (an INVITE, default) or openai (a "
                        "Realtime Calls webhook)")

    from gateway.control.callout import add_parser as add_callout_parser
    from gateway.records.cli import add_parser as add_calls_parser

    add_callout_parser(sub)

    add_calls_parser(sub)

    from gateway.front.upstream import DEFAULT_RUN_DIR

    front = sub.add_parser("front", help="Kamailio front tools")
    front_sub = front.add_subparsers(dest="front_command", metavar="ACTION", required=True)
    up = front_sub.add_parser(
        "upstream", help="render a Kamailio config that dispatches to several gateway instances",
        description="Render kamailio.cfg for an upstream dispatcher: one SIP address in front "
        "of several gateway instances (each a `gateway run` with its own front, usually on its "
        "own host). It spreads new calls by load, fails over on 500/503/408 and silence, "
        "probes the instances with OPTIONS, record-routes, rate-limits INVITEs per source and "
        "passes the caller's address in X-Gateway-Upstream-Source (list the upstream's "
        "address in each instance's sip.front_upstream and sip.trunk_allow). See docs/front.md, "
        "\"Several hosts\".")
    up.add_argument("--listen", required=True, type=_ip_port, metavar="IP:PORT",
                    help="UDP address callers and trunks send to")
    up.add_argument("--instance", required=True, action="append", type=_ip_port,
                    metavar="IP:PORT", dest="instances",
                    help="UDP address of one instance's front (repeat for each instance; "
                    "the first listed wins ties)")
    up.add_argument("--allow", action="append", type=_ip_network, default=[], metavar="NET",
                    help="source network allowed to call (repeatable; default: any, since "
                    "each instance applies its own sip.trunk_allow to the caller's address)")
    up.add_argument("--invites-per-s", type=int, default=50, metavar="N",
                    help="new INVITEs per second one source may send (default 50; 0: no limit)")
    up.add_argument("--ping-interval", type=int, default=5, metavar="S",
                    help="seconds between OPTIONS probes of each instance (default 5)")
    up.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, metavar="DIR",
                    help=f"Kamailio's -Y directory: its lists and sockets (default "
                    f"{DEFAULT_RUN_DIR})")
    up.add_argument("-o", "--output", type=Path, metavar="FILE",
                    help="write the config to FILE and its dispatcher and address lists into "
                    "--run-dir (default: print the config only)")
    return p


def _ip_port(value: str) -> tuple[str, int]:
    from gateway.front.upstream import parse_hostport

    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ip_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an IP network") from None


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
        if args.command == "front":
            return _front_upstream(args)
        if args.command == "call-out":
            from gateway.control.callout import run as run_callout

            return run_callout(args)
        if args.command == "calls":
            from gateway.records.cli import run as run_calls

            return run_calls(args)
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
        caller_name=args.caller_name, ingress=args.ingress,
        source_ip=args.source, out=sys.stdout, env=os.environ,
    )


def _front_upstream(args: argparse.Namespace) -> int:
    from gateway.front.spec import Listen
    from gateway.front.upstream import ANY_SOURCE, Instance, UpstreamSpec, render_upstream

    try:
        spec = UpstreamSpec(
            listen=(Listen("udp", *args.listen),),
            instances=tuple(Instance(host, port) for host, port in args.instances),
            run_dir=args.run_dir.absolute(), allow=tuple(args.allow) or ANY_SOURCE,
            invites_per_s=args.invites_per_s, ping_interval_s=args.ping_interval)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = render_upstream(spec)
    if args.output is None:
        sys.stdout.write(files.config)
        print(f"# not written: {spec.run_dir}/dispatcher.list and address.list, which this "
              "config reads; use -o FILE", file=sys.stderr)
        return 0
    paths = spec.front_spec().paths
    written = {args.output: files.config, paths.dispatcher_list: files.dispatcher_list}
    if files.address_list is not None:
        written[paths.address_list] = files.address_list
    try:
        paths.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path, text in written.items():
            _write_private(path, text)
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    print(f"run: kamailio -f {args.output} -DD -E -Y {paths.run_dir}", file=sys.stderr)
    return 0


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


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

    secret = os.environ.get(args.webhook_secret_env, "") if args.webhook_url else ""
    setup_logging("INFO", secrets=[secret] if secret else [])
    if args.webhook_url and not secret:
        print(f"error: --webhook-url needs the signing secret in ${args.webhook_secret_env}",
              file=sys.stderr)
        return 2
    book = load_scenarios(args.scenarios) if args.scenarios else ScenarioBook.default()
    try:
        options = SimOptions(
            speed=args.speed, tts_engine=args.tts, keep_closed=SERVICE_KEEP_CLOSED,
            webhook_url=args.webhook_url, webhook_secret=secret or None,
            ring_timeout_s=args.ring_timeout, sip_port=args.sip_port, sip_host=args.host,
            sip_tls_port=args.sip_tls_port, sip_tls_cert_file=args.sip_tls_cert,
            sip_tls_key_file=args.sip_tls_key)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

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
    setup_logging(settings.logging.level, settings.logging.format, _secrets(settings))
    from gateway.control.app import run_control
    from gateway.control.topology import plan as plan_processes

    # Always a control process (HTTP API, records, tool pool, supervision) and its SIP
    # workers: one worker on loopback needs no front, more (or a public address) get one.
    plan = plan_processes(settings, os.cpu_count() or 1)
    main_coro = run_control(settings, plan, env=os.environ)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_bounded(main_coro, args.run_seconds))
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ)
    setup_logging(settings.logging.level, settings.logging.format, _secrets(settings))
    from gateway.worker.main import run_worker

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_worker(settings, args, dict(os.environ)))
    return 0


def _secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold, for the log redaction filter."""
    return [settings.realtime.api_key.value, settings.openai_calls.webhook_secret.value,
            *(h.value for h in settings.realtime.headers.values()),
            *(a.password.value for a in settings.sip.accounts),
            *(t.value for t in settings.control.api_tokens), settings.records.password.value,
            settings.control.status_webhook_secret.value]


async def _bounded(coro: Coroutine[Any, Any, None], seconds: float | None) -> None:
    """Run ``coro``; with ``seconds``, cancel it cleanly after that long."""
    if seconds is None:
        await coro
        return
    try:
        await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        log.info("stopping after --run-seconds %.1f", seconds)
