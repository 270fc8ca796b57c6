"""A real SIP peer for harness tests: the gateway's own user agent, echoing every call's audio.

Tests use :class:`EchoUa`, which runs this module as a script (``python -m
tests.support.echo_ua --port P ...``) under a :class:`~tests.support.procs.ManagedProcess`:
pjsua2 allows one endpoint per process, so the user agent never lives inside the pytest
process, and importing this module does not import pjsua2. The script prints ``READY
sip=HOST:PORT pid=PID`` once the transport listens, then one ``EVENT {json}`` line per
:mod:`gateway.sip.events` event and a ``STATS {json}`` line per ended call (no audio, no
secrets), so a test waits on conditions in the log (:meth:`EchoUa.wait_event`) instead of
sleeping.

What a call gets depends on the user part of its Request-URI/To:

* ``ring...``: ``180 Ringing`` and never an answer (for CANCEL tests);
* ``reject-NNN``: final response ``NNN`` (e.g. ``reject-404``);
* ``bye-MS...``: answered, then the UA hangs up (sends BYE) after ``MS`` milliseconds;
* ``refer-MS...``: answered, then after ``MS`` milliseconds a blind transfer (REFER) to
  ``--refer-to``; the UA hangs up once the final NOTIFY reports 200 (pjsua does not,
  pjsua2-notes §3.4);
* anything else: ``180``, then ``200`` after ``--answer-delay-ms``; the caller's audio is
  pushed back into the call's playout buffer, i.e. echoed with about 20-40 ms delay.

With ``--registrar`` the UA also registers ``--user`` there (digest password taken from the
environment variable named by ``--password-env``). ``--run-seconds`` bounds its life;
``SIGTERM``/``SIGINT`` stop it cleanly (hang up, un-REGISTER, destroy the endpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from gateway.config import AccountSettings, Secret, SipSettings, TransportSettings
from gateway.sip.events import IncomingCall, LegEnded, SipEvent, TransferProgress
from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.procs import POLL_S, ManagedProcess, ProcessError

if TYPE_CHECKING:
    from gateway.sip.ua import SipUserAgent

#: The repository root (the script runs as ``-m tests.support.echo_ua`` from there).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Environment variable carrying the registration password to the script.
PASSWORD_ENV = "ECHO_UA_PASSWORD"

_PUMP_INTERVAL_S = 0.01
_BYE_USER = re.compile(r"bye-(\d+)")
_REFER_USER = re.compile(r"refer-(\d+)")
_REJECT_USER = re.compile(r"reject-(\d{3})")


@dataclass
class _Call:
    event: IncomingCall
    echoed_frames: int = 0
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


def _emit(kind: str, payload: dict[str, object]) -> None:
    print(f"{kind} {json.dumps(payload, sort_keys=True)}", flush=True)


def _event_payload(event: SipEvent) -> dict[str, object]:
    if isinstance(event, IncomingCall):
        return {"event": "IncomingCall", "leg_id": event.leg_id,
                "sip_call_id": event.sip_call_id, "from_user": event.from_user,
                "to_user": event.to_user, "request_uri": event.request_uri,
                "source_ip": event.source_ip, "source_port": event.source_port,
                "transport": event.transport, "account": event.account}
    payload: dict[str, object] = {"event": type(event).__name__, **asdict(event)}
    payload.pop("at", None)
    return payload


class EchoAgent:
    """Answers calls per the Request-URI user and echoes their audio."""

    def __init__(self, ua: SipUserAgent, answer_delay_s: float, refer_to: str) -> None:
        self.ua = ua
        self.answer_delay_s = answer_delay_s
        self.refer_to = refer_to
        self.calls: dict[int, _Call] = {}
        self.loop = asyncio.get_running_loop()

    def on_event(self, event: SipEvent) -> None:
        _emit("EVENT", _event_payload(event))
        if isinstance(event, IncomingCall):
            self._incoming(event)
        elif isinstance(event, LegEnded):
            call = self.calls.pop(event.leg_id, None)
            if call is not None:
                for timer in call.timers:
                    timer.cancel()
                _emit("STATS", {"leg_id": event.leg_id,
                                "rx_frames": call.event.media.rx_frames,
                                "rx_dropped": call.event.media.rx_dropped,
                                "echoed_frames": call.echoed_frames})
        elif isinstance(event, TransferProgress):
            if event.final and event.status == 200 and event.leg_id in self.calls:
                self.ua.hangup(event.leg_id)

    def _incoming(self, event: IncomingCall) -> None:
        user = event.to_user or event.request_uri
        leg = event.leg_id
        if (m := _REJECT_USER.fullmatch(user)) is not None:
            self.ua.answer(leg, int(m.group(1)))
            return
        call = self.calls[leg] = _Call(event)
        self.ua.answer(leg, 180)
        if user.startswith("ring"):
            return
        call.timers.append(self.loop.call_later(self.answer_delay_s, self.ua.answer, leg, 200))
        if (m := _BYE_USER.match(user)) is not None:
            delay = self.answer_delay_s + int(m.group(1)) / 1000
            call.timers.append(self.loop.call_later(delay, self.ua.hangup, leg))
        if (m := _REFER_USER.match(user)) is not None:
            delay = self.answer_delay_s + int(m.group(1)) / 1000
            call.timers.append(self.loop.call_later(delay, self.ua.transfer, leg,
                                                    self.refer_to))

    def pump(self) -> None:
        """Move each call's received frames into its playout buffer (the echo)."""
        for call in self.calls.values():
            media = call.event.media
            frames = media.tick()
            if frames:
                media.playout.push("echo", 0, b"".join(frames))
                media.feed()
                call.echoed_frames += len(frames)


async def _pump(agent: EchoAgent, stop: asyncio.Event) -> None:
    while not stop.is_set():
        agent.pump()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _PUMP_INTERVAL_S)


def _settings(args: argparse.Namespace) -> SipSettings:
    accounts: tuple[AccountSettings, ...] = ()
    if args.registrar:
        password = os.environ.get(args.password_env, "") if args.password_env else ""
        domain = args.domain or args.registrar.split(":", 1)[1].split(";", 1)[0]
        accounts = (AccountSettings(
            name="registrar", registrar=args.registrar, user=args.user, domain=domain,
            auth_user=args.user, password=Secret(password), expires_s=args.expires),)
    return SipSettings(
        transports=(TransportSettings(host=args.host, port=args.port),),
        accounts=accounts, max_calls=args.max_calls,
        rtp_port_start=args.rtp_port, rtp_port_range=args.rtp_port_range,
    )


async def _main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from gateway.sip.ua import SipUserAgent  # pjsua2: only in the script's process

    ua = SipUserAgent(_settings(args), pjsip_log_level=args.pjsip_log_level,
                      answer_deadline_s=args.answer_deadline_s, poll_ms=args.poll_ms)
    agent = EchoAgent(ua, args.answer_delay_ms / 1000, args.refer_to)
    ua.start(loop, agent.on_event)
    try:
        bound = ua.transports[0]
        print(f"READY sip={bound.host}:{bound.port} pid={os.getpid()}", flush=True)
        pump = asyncio.create_task(_pump(agent, stop), name="echo-ua:pump")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.run_seconds)
        stop.set()
        await pump
    finally:
        ua.stop()
    print("STOPPED", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the echo user agent until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="SIP UDP port (0: any)")
    parser.add_argument("--rtp-port", type=int, default=20000, help="first RTP port")
    parser.add_argument("--rtp-port-range", type=int, default=100)
    parser.add_argument("--max-calls", type=int, default=1)
    parser.add_argument("--answer-delay-ms", type=int, default=0)
    parser.add_argument("--answer-deadline-s", type=float, default=45.0,
                        help="an unanswered INVITE gets 503 after this long")
    parser.add_argument("--run-seconds", type=float, default=120.0)
    parser.add_argument("--refer-to", default="sip:agent@127.0.0.1:5090",
                        help="transfer target of refer-MS calls")
    parser.add_argument("--registrar", default="", help="e.g. sip:127.0.0.1:5060")
    parser.add_argument("--user", default="gw")
    parser.add_argument("--domain", default="")
    parser.add_argument("--password-env", default="", help="variable holding the password")
    parser.add_argument("--expires", type=int, default=60)
    parser.add_argument("--pjsip-log-level", type=int, default=1)
    parser.add_argument("--poll-ms", type=int, default=None,
                        help="the SIP thread's longest libHandleEvents wait (default: the UA's)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_main(args))


# The launcher (runs in the test process) --------------------------------------------------


class EchoUa:
    """The echo user agent in its own process, for a ``with`` block.

    Args:
        run_dir: Where its log (``echo_ua.log``) goes.
        max_calls: ``SipSettings.max_calls`` (the call beyond it gets 503 + Retry-After).
        port: SIP UDP port (default: a free one).
        answer_delay_ms: Delay between 180 and 200 for echo calls.
        registrar: Registrar URI to register ``user`` at (e.g. ``Kamailio.uri``).
        user: The registration user.
        password: The digest password (passed in the environment, never on the command line).
        refer_to: Transfer target of ``refer-MS`` calls.
        run_seconds: Hard bound on its life.
        answer_deadline_s: An INVITE nobody answers gets 503 after this long.
        poll_ms: The SIP thread's longest ``libHandleEvents`` wait (default: the UA's own).
        pjsip_log_level: PJSIP's log level in the UA's log.
    """

    def __init__(self, run_dir: Path, *, max_calls: int = 1, port: int | None = None,
                 answer_delay_ms: int = 0, registrar: str | None = None, user: str = "gw",
                 password: str | None = None, refer_to: str = "sip:agent@127.0.0.1:5090",
                 run_seconds: float = 120.0, start_timeout_s: float = 15.0,
                 answer_deadline_s: float = 45.0, poll_ms: int | None = None,
                 pjsip_log_level: int = 1) -> None:
        self.port = free_udp_port() if port is None else port
        rtp_slots = 2 * (max_calls + 2)
        self.rtp_port = free_udp_port_block(rtp_slots)
        self.start_timeout_s = start_timeout_s
        argv = [sys.executable, "-m", "tests.support.echo_ua", "--port", str(self.port),
                "--rtp-port", str(self.rtp_port), "--rtp-port-range", str(rtp_slots),
                "--max-calls", str(max_calls), "--answer-delay-ms", str(answer_delay_ms),
                "--refer-to", refer_to, "--run-seconds", str(run_seconds),
                "--answer-deadline-s", str(answer_deadline_s),
                "--pjsip-log-level", str(pjsip_log_level)]
        if poll_ms is not None:
            argv += ["--poll-ms", str(poll_ms)]
        env = {"PYTHONPATH": str(REPO_ROOT)}
        if registrar:
            argv += ["--registrar", registrar, "--user", user]
            if password is not None:
                argv += ["--password-env", PASSWORD_ENV]
                env[PASSWORD_ENV] = password
        self.process = ManagedProcess(argv, log_path=run_dir / "echo_ua.log", name="echo_ua",
                                      env=env, cwd=REPO_ROOT, max_lifetime_s=run_seconds + 15,
                                      grace_s=8.0)

    @property
    def address(self) -> str:
        """``127.0.0.1:port``: the SIPp target."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start it and wait for ``READY`` with the SIP port bound.

        Raises:
            ProcessError: It exited or did not get ready in time.
        """
        self.process.start()
        try:
            self.process.wait_ready(lambda log: "READY sip=" in log, port=self.port,
                                    timeout_s=self.start_timeout_s)
        except BaseException:
            self.process.stop()
            raise
        return self

    def stop(self) -> int | None:
        """Stop it (``SIGTERM``: hang up, un-REGISTER, destroy the endpoint) and wait."""
        return self.process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def records(self, kind: str = "EVENT") -> list[dict[str, Any]]:
        """The ``EVENT`` (or ``STATS``) lines logged so far, decoded."""
        out: list[dict[str, Any]] = []
        prefix = f"{kind} "
        for line in self.process.log_text().splitlines():
            if line.startswith(prefix):
                out.append(json.loads(line[len(prefix):]))
        return out

    def events(self, name: str | None = None, **fields: object) -> list[dict[str, Any]]:
        """Events so far, optionally only type ``name`` with these field values."""
        return [e for e in self.records("EVENT")
                if (name is None or e.get("event") == name)
                and all(e.get(k) == v for k, v in fields.items())]

    def wait_event(self, name: str, timeout_s: float = 10.0,
                   where: Callable[[Mapping[str, Any]], bool] | None = None,
                   **fields: object) -> dict[str, Any]:
        """Wait for the first event ``name`` with these field values (and ``where``).

        Raises:
            ProcessError: None within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            for event in self.events(name, **fields):
                if where is None or where(event):
                    return event
            if time.monotonic() >= deadline:
                raise ProcessError(f"no {name} {fields} event within {timeout_s} s\n"
                                   f"{self.process.log_tail()}")
            time.sleep(POLL_S)

    def call_stats(self) -> list[dict[str, Any]]:
        """Per-call counters logged when each call ended (frames received and echoed)."""
        return self.records("STATS")


if __name__ == "__main__":
    sys.exit(main())
