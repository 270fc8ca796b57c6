"""The Realtime simulator as the load benchmark runs it: ``gateway sim`` plus a turn log.

Not a benchmark: a launcher. It serves exactly what ``gateway sim`` serves (the default
scenario book, ``SimOptions(speed, keep_closed=16)``) and also sets ``SimOptions.turn_log``,
so the simulator appends one JSON line per VAD turn (:class:`gateway.sim.turns.TurnRecord`)
to ``--turn-log``: when it read the append that completed the stop, when it wrote the first
audio of the answer, in its own ``time.time()`` clock. ``bench/turns.py`` reads it. Full
garbage collections are off (see :func:`main`), so they do not pause the simulator's loop.

With ``--sip-tls-port`` it also plays OpenAI's SIP endpoint for relayed calls, as ``gateway
sim --sip-port 0 --sip-tls-port P --sip-tls-cert C --sip-tls-key K --webhook-url URL`` does:
each INVITE rings, posts a signed ``realtime.call.incoming`` to ``--webhook-url`` (the secret
from ``$OPENAI_WEBHOOK_SECRET``, never on the command line) and waits for the accept.

Usage::

    python -m bench.simrun --port 8765 --speed 4 --turn-log /tmp/turns.jsonl --run-seconds 60
    OPENAI_WEBHOOK_SECRET=whsec_... python -m bench.simrun --port 8765 --turn-log t.jsonl \
        --sip-tls-port 5081 --sip-tls-cert cert.pem --sip-tls-key key.pem \
        --webhook-url http://127.0.0.1:8080/openai/webhook
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from gateway.logs import setup_logging
from gateway.sim.scenario import ScenarioBook
from gateway.sim.server import SERVICE_KEEP_CLOSED, SimOptions, serve

_log = logging.getLogger("bench.simrun")
#: Generation-2 threshold that never triggers in a benchmark's lifetime (see :func:`main`).
NO_FULL_COLLECTION = 1_000_000_000


async def _run(args: argparse.Namespace) -> None:
    # Playing OpenAI's SIP endpoint (relayed calls): SIP on UDP/TCP (a free port) and TLS.
    endpoint: dict[str, Any] = {}
    if args.sip_tls_port is not None:
        endpoint = {"sip_port": 0, "sip_tls_port": args.sip_tls_port,
                    "sip_tls_cert_file": args.sip_tls_cert, "sip_tls_key_file": args.sip_tls_key}
    if args.webhook_url is not None:
        endpoint |= {"webhook_url": args.webhook_url,
                     "webhook_secret": os.environ.get("OPENAI_WEBHOOK_SECRET")}
    options = SimOptions(speed=args.speed, tts_engine=args.tts, keep_closed=SERVICE_KEEP_CLOSED,
                         response_latency_ms=args.response_latency_ms, turn_log=args.turn_log,
                         **endpoint)

    def ready(url: str) -> None:
        _log.info("Realtime simulator listening on %s (turn log %s)", url, args.turn_log)

    task = asyncio.create_task(serve(args.host, args.port, ScenarioBook.default(), options,
                                     ready), name="sim")
    # SIGTERM (the bench stopping it) ends the server cleanly: sessions closed, log closed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(task, args.run_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.simrun", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--speed", type=float, default=4.0)
    p.add_argument("--tts", choices=("auto", "espeak", "tone"), default="auto")
    p.add_argument("--response-latency-ms", type=int, default=SimOptions().response_latency_ms)
    p.add_argument("--turn-log", required=True, help="JSON lines file, one line per VAD turn")
    p.add_argument("--run-seconds", type=float, default=None)
    p.add_argument("--sip-tls-port", type=int, help="also answer SIP over TLS on this port "
                   "(and UDP/TCP on a free one), like OpenAI's SIP endpoint")
    p.add_argument("--sip-tls-cert", help="TLS certificate (PEM) for --sip-tls-port")
    p.add_argument("--sip-tls-key", help="its private key (PEM)")
    p.add_argument("--webhook-url", help="post realtime.call.incoming here for each SIP call "
                   "(secret in $OPENAI_WEBHOOK_SECRET)")
    args = p.parse_args(argv)
    setup_logging("INFO")
    # The simulator keeps every event of its live sessions for inspection: hundreds of
    # thousands of objects at tens of calls. A full collection of that heap stalled its loop
    # for 30-40 ms at 10 calls, a delay in reading appends that the turn latency would charge
    # to the gateway. Young collections still run; the few cycles that reach the old
    # generation stay until exit (this process lives minutes).
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_FULL_COLLECTION)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
