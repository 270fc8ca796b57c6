"""The simulator as the webhook benchmark runs it: OpenAI's SIP side, placing calls and timing them.

Not a benchmark: a launcher, started by :mod:`bench.webhooks` in a process of its own, so its
CPU is not counted as the gateway's. It serves a :class:`~gateway.sim.server.SimulatorServer`
(Realtime WebSocket, Calls REST, signed ``realtime.call.incoming`` webhooks to
``--webhook-url``, the secret from ``$OPENAI_WEBHOOK_SECRET``) and plays the callers itself,
in-process, so every instant is read where it happens, in this process's ``time.time()``:

* ``latency``: ``--calls`` calls at ``--rate`` per second on a fixed schedule. Each is held
  until its sideband has opened, then ``--hold-ms`` more, then the caller hangs up. Per call:
  the webhook's first attempt sent and its answer read (:class:`~gateway.sim.webhooks.
  Attempt`), the ``accept`` request received (the call's state history), the sideband's
  ``session.created`` written (:attr:`SimConnection.sent_at`).
* ``sessions``: ramps to each of ``--levels`` concurrent calls at ``--rate``. Each caller
  speaks once (tone speech) after its sideband opened; the book below then makes every call
  loop: say a sentence, wait ``--tool-interval-s``, call the ``whoami`` tool; the first
  answer contains the guardrail's trip word, once per call. After a level is up it logs
  ``level N ready`` and waits for the orchestrator's release file (``--dir``/``release-N``),
  then ramps on; after the last level every caller hangs up. A level's ``--dir``/``ready-N``
  file (JSON: ramp time, calls up) appears when it is up. Per call: every tool call
  (``response.function_call_arguments.done`` written) and its output
  (``conversation.item.added`` of the ``function_call_output`` written back), error events
  (when, which code), the sidebands' close codes and who ended the call.

Both write ``--dir``/``sim-results.json`` and log ``results written``. An event-loop lag
probe (a 10 ms sleep, how late it wakes) runs throughout, so a slow simulator is visible next
to the figures it could have inflated. Full garbage collections are off, as in
:mod:`bench.simrun`. Every wait is bounded.

Usage (normally only through ``python -m bench.webhooks``)::

    OPENAI_WEBHOOK_SECRET=whsec_... python -m bench.webhooksim --port 8765 \\
        --webhook-url http://127.0.0.1:8080/openai/webhook --dir /tmp/run latency --calls 600
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from gateway.logs import setup_logging
from gateway.sim.calls import CallState
from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimOptions, SimulatorServer
from gateway.sim.simcall import SimCall

_log = logging.getLogger("bench.webhooksim")

#: Instructions of the benchmark agent (the dialplan's) and the scenario matching them.
AGENT_INSTRUCTIONS: Final = "You are the webhook benchmark agent. Answer briefly."
#: The word the benchmark's output guardrail trips on (``never_allowed`` of the tool fixture).
TRIP_WORD: Final = "forbidden"
#: Files in ``--dir``.
RESULTS_FILE: Final = "sim-results.json"
RELEASE_PREFIX: Final = "release-"
READY_PREFIX: Final = "ready-"
#: Generation-2 threshold that never triggers in a run (see :mod:`bench.simrun`).
NO_FULL_COLLECTION: Final = 1_000_000_000
#: Longest wait for one call's accept, and then for its sideband.
SETUP_TIMEOUT_S: Final = 20.0
#: Longest wait for the orchestrator to release a level.
RELEASE_TIMEOUT_S: Final = 180.0
#: Lag probe period.
PROBE_S: Final = 0.01
#: What each caller says to start its call's loop (tone speech), and the silence after it,
#: long enough for the VAD to stop (500 ms).
CALLER_LINE: Final = "Hello, I would like to check my account."
CALLER_SILENCE_MS: Final = 900


def scenario_book(tool_interval_ms: int) -> str:
    """The scenario of the benchmark agent: a guardrail trip once, then say, wait, tool, again.

    The first response (the caller's line) says the trip word: the gateway's guardrail stops
    it and asks for another (``retry``). Every later response is the fallback: a sentence with
    the last tool output, ``tool_interval_ms`` of waiting, then the ``whoami`` call, whose
    output makes the gateway create the next response.
    """
    return f"""
scenarios:
  bench:
    match: {{instructions: "(?i)webhook benchmark agent"}}
    turns:
      - say: "This first answer is {TRIP_WORD} on purpose."
    fallback:
      - say: "Process {{tool_output}} is fine."
      - wait: {tool_interval_ms}
      - call: {{name: whoami, arguments: {{}}}}
"""


def _headers(i: int) -> list[tuple[str, str]]:
    return [("From", f'"Bench {i}" <sip:+1415555{i % 10000:04d}@trunk.example.com>;tag=b{i}'),
            ("To", "<sip:+18005550100@sip.api.openai.com>"),
            ("Call-ID", f"bench-{i}-{time.time_ns()}@trunk")]


class LagProbe:
    """How late the event loop wakes from a :data:`PROBE_S` sleep, sampled all run long."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (unix time, lag ms)

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(PROBE_S)
            lag = (loop.time() - before - PROBE_S) * 1000
            self.samples.append((time.time(), max(0.0, lag)))


# One call's figures -------------------------------------------------------------------------


def _accepted_at(call: SimCall) -> float | None:
    return next((at for state, at in call.record.history if state is CallState.ACCEPTED), None)


def _sideband_at(call: SimCall) -> float | None:
    for conn in call.sidebands:
        if conn.sent_at:
            return conn.sent_at[0]  # its session.created
    return None


def setup_times(call: SimCall) -> dict[str, Any]:
    """The call's set-up instants (``None`` for what did not happen)."""
    first = call.deliveries[0].attempts[0] if call.deliveries and call.deliveries[0].attempts \
        else None
    return {
        "call_id": call.call_id,
        "webhook_sent_at": first.at if first else None,
        "webhook_answered_at": first.answered_at if first else None,
        "webhook_status": first.status if first else None,
        "webhook_attempts": sum(len(d.attempts) for d in call.deliveries),
        "accepted_at": _accepted_at(call),
        "sideband_at": _sideband_at(call),
        "state": str(call.state),
        "ended_by": call.record.ended_by,
    }


def session_activity(call: SimCall) -> dict[str, Any]:
    """Tool calls and their outputs, error events and closes of the call's sidebands."""
    calls: dict[str, float] = {}
    outputs: dict[str, float] = {}
    errors: list[tuple[float, str]] = []
    for conn in call.sidebands:
        for event, at in zip(conn.sent, conn.sent_at, strict=False):
            kind = event.get("type")
            if kind == "response.function_call_arguments.done":
                calls.setdefault(str(event.get("call_id")), at)
            elif kind == "conversation.item.added":
                item = event.get("item") or {}
                if item.get("type") == "function_call_output":
                    outputs.setdefault(str(item.get("call_id")), at)
            elif kind == "error":
                errors.append((at, str((event.get("error") or {}).get("code"))))
    return {
        "tool_calls": [[at, outputs.get(cid)] for cid, at in sorted(calls.items(),
                                                                      key=lambda kv: kv[1])],
        "errors": errors,
        "sidebands": len(call.sidebands),
        "close_codes": [conn.close_code for conn in call.sidebands],
    }


# Modes --------------------------------------------------------------------------------------


async def _hold_then_hang_up(call: SimCall, hold_s: float) -> str | None:
    """Latency mode: wait for accept and sideband, hold, hang up; an error, or ``None``."""
    error: str | None = None
    try:
        await call.wait_accepted(timeout=SETUP_TIMEOUT_S)
        await call.wait_sideband(0, timeout=SETUP_TIMEOUT_S)
        await asyncio.sleep(hold_s)
    except (TimeoutError, AssertionError) as exc:  # CallOutcomeError is an AssertionError
        error = str(exc)
    finally:
        await call.hangup()  # not awaiting anything: it finishes under cancellation too
    return error


async def run_latency(sim: SimulatorServer, args: argparse.Namespace) -> dict[str, Any]:
    """Place ``--calls`` calls at ``--rate``; return every call's set-up instants."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[str | None]] = []
    calls: list[SimCall] = []
    start = loop.time()
    _log.info("placing %d calls at %g/s", args.calls, args.rate)
    for i in range(args.calls):
        await asyncio.sleep(max(0.0, start + i / args.rate - loop.time()))
        call = await sim.incoming_call(_headers(i))
        calls.append(call)
        tasks.append(asyncio.create_task(_hold_then_hang_up(call, args.hold_ms / 1000),
                                         name=f"bench:call:{i}"))
    placed_s = loop.time() - start
    errors = await asyncio.gather(*tasks)
    rows = []
    for call, error in zip(calls, errors, strict=True):
        row = setup_times(call)
        row["error"] = error
        rows.append(row)
    return {"mode": "latency", "rate": args.rate, "placed_s": placed_s, "calls": rows}


async def _start_session(call: SimCall) -> str | None:
    """Sessions mode: wait for accept and sideband, then the caller's one line."""
    try:
        await call.wait_accepted(timeout=SETUP_TIMEOUT_S)
        await call.wait_sideband(0, timeout=SETUP_TIMEOUT_S)
    except (TimeoutError, AssertionError) as exc:
        return str(exc)
    if not await call.say(CALLER_LINE, trailing_silence_ms=CALLER_SILENCE_MS):
        return f"call {call.call_id} had no session for the caller's line ({call.state})"
    return None


async def _released(directory: Path, level: int) -> bool:
    path = directory / f"{RELEASE_PREFIX}{level}"
    deadline = time.monotonic() + RELEASE_TIMEOUT_S
    while time.monotonic() < deadline:
        if path.exists():
            return True
        await asyncio.sleep(0.05)
    return False


async def run_sessions(sim: SimulatorServer, args: argparse.Namespace) -> dict[str, Any]:
    """Ramp through ``--levels``, waiting for a release at each; return every call's record."""
    loop = asyncio.get_running_loop()
    calls: list[SimCall] = []
    levels: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    try:
        for level in args.levels:
            start = loop.time()
            placed = len(calls)
            tasks: list[tuple[SimCall, asyncio.Task[str | None]]] = []
            for k in range(level - placed):
                await asyncio.sleep(max(0.0, start + k / args.rate - loop.time()))
                call = await sim.incoming_call(_headers(len(calls)))
                calls.append(call)
                tasks.append((call, asyncio.create_task(_start_session(call),
                                                        name=f"bench:session:{len(calls)}")))
            for call, task in tasks:
                error = await task
                if error is not None:
                    errors[call.call_id] = error
            up = sum(1 for c in calls if c.state is CallState.ACCEPTED)
            levels.append({"level": level, "ramp_s": loop.time() - start, "up": up,
                           "ready_at": time.time()})
            _write_atomically(Path(args.dir) / f"{READY_PREFIX}{level}", levels[-1])
            _log.info("level %d ready: %d calls up (%d failed to start)", level, up,
                      len(errors))
            if not await _released(Path(args.dir), level):
                _log.error("level %d was not released within %g s", level, RELEASE_TIMEOUT_S)
                break
    finally:
        hung_up_at = time.time()
        for call in calls:
            await call.hangup()
    rows = []
    for i, call in enumerate(calls):
        row = {**setup_times(call), **session_activity(call),
               "level": next(lv for lv in args.levels if i < lv),
               "error": errors.get(call.call_id)}
        rows.append(row)
    return {"mode": "sessions", "rate": args.rate, "levels": levels, "hung_up_at": hung_up_at,
            "tool_interval_s": args.tool_interval_s, "calls": rows}


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON so that ``path`` exists only once it is complete."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data))
    partial.replace(path)


async def _run(args: argparse.Namespace) -> None:
    secret = os.environ.get("OPENAI_WEBHOOK_SECRET", "")
    options = SimOptions(tts_engine="tone", speed=args.speed, keep_closed=None,
                         webhook_url=args.webhook_url, webhook_secret=secret,
                         ring_timeout_s=SETUP_TIMEOUT_S, playout_speed=args.playout_speed,
                         detached_sidebands=False)
    book = parse_scenarios(scenario_book(round(args.tool_interval_s * 1000)), "<bench>")
    probe = LagProbe()
    directory = Path(args.dir)
    async with SimulatorServer(args.host, args.port, book, options) as sim:
        _log.info("webhook simulator listening on %s (Calls API %s)", sim.ws_url, sim.http_url)
        probing = asyncio.create_task(probe.run(), name="bench:lag-probe")
        try:
            if not await _released(directory, 0):
                raise TimeoutError("never told to start")
            _log.info("starting: %s", args.mode)
            started = time.time()
            result = await (run_latency(sim, args) if args.mode == "latency"
                            else run_sessions(sim, args))
        finally:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing
        result["lag"] = [s for s in probe.samples if s[0] >= started]
        out = directory / RESULTS_FILE
        _write_atomically(out, result)
        _log.info("results written to %s", out)
        # Let the gateway see the last hang-ups before the server goes (it closes 1001).
        await asyncio.sleep(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run until done, ``--run-seconds`` or SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m bench.webhooksim",
                                description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--webhook-url", required=True)
    p.add_argument("--dir", required=True, help="release files in, results out")
    p.add_argument("--rate", type=float, default=20.0, help="calls placed per second")
    p.add_argument("--speed", type=float, default=4.0, help="agent audio sent this much faster")
    p.add_argument("--playout-speed", type=float, default=1.0,
                   help="the caller hears the agent this much faster than real time")
    p.add_argument("--tool-interval-s", type=float, default=10.0)
    p.add_argument("--run-seconds", type=float, default=600.0)
    sub = p.add_subparsers(dest="mode", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--calls", type=int, default=600)
    lat.add_argument("--hold-ms", type=float, default=300.0)
    ses = sub.add_parser("sessions")
    ses.add_argument("--levels", type=int, nargs="+", default=[100, 200])
    args = p.parse_args(argv)
    if args.mode == "sessions" and args.levels != sorted(set(args.levels)):
        p.error("--levels must be increasing")
    setup_logging("INFO")
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_FULL_COLLECTION)

    async def bounded() -> None:
        task = asyncio.create_task(_run(args), name="bench:webhooksim")
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await asyncio.wait_for(task, args.run_seconds)
        except (TimeoutError, asyncio.CancelledError):
            _log.error("stopped before the run finished")
            raise SystemExit(1) from None

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(bounded())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
