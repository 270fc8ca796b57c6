"""Run SIPp scenarios from ``sipp/`` against a peer on 127.0.0.1 and read what happened.

:func:`run_sipp` runs one scenario to completion and returns a :class:`SippResult`: the exit
code, the successful/failed call counts from the ``-trace_stat`` CSV, the error log and, with
``-trace_msg``, every SIP message sent and received (so a test can assert a 488, a 487 or the
``Retry-After`` of a 503). :func:`start_sipp` returns a running :class:`SippProcess` for
concurrent use (a long call held while another scenario runs); :func:`run_sipp_async` awaits
one run without blocking the event loop.

Every run is bounded: SIPp gets ``-timeout``/``-timeout_error`` and runs under a
:class:`~tests.support.procs.ManagedProcess` lifetime a little longer than that; it binds
127.0.0.1 only (``-i``/``-mi`` plus ``-bind_local``, and ``-ci``/``-cp`` for its UDP control
socket, which otherwise takes 0.0.0.0:8888) and never reads stdin. Each run gets its
own directory with the rendered scenario, ``sipp.out``, ``errors.log``, ``messages.log``,
``stats.csv`` and ``screen.log``.

Keys: SIPp 3.6.1 expands ``-key`` values (``[audio_file]``) only in message text, not in
attributes read when the scenario is loaded (``rtp_stream="[audio_file],-1,0"``,
``response="[expected_status]"``). So the scenario is rendered into the run directory first:
each ``[key]`` outside CDATA sections is replaced by its XML-escaped value; the keys are also
passed as ``-key`` for the message text.
"""

from __future__ import annotations

import asyncio
import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from xml.sax.saxutils import escape

from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.procs import ManagedProcess, ProcessError

#: The scenarios directory of this repository.
SIPP_DIR = Path(__file__).resolve().parents[2] / "sipp"
#: The address every peer binds.
LOCALHOST = "127.0.0.1"
#: Exit codes of SIPp 3.6.1 (``sipp -h``; 255/254 are -1/-2).
EXIT_ALL_OK = 0
EXIT_SOME_FAILED = 1
EXIT_NO_CALLS = 99
EXIT_FATAL = 255
EXIT_BIND_FAILED = 254

_CDATA = re.compile(r"(<!\[CDATA\[.*?\]\]>)", re.DOTALL)
#: Attributes SIPp reads while loading the scenario, where -key would not be expanded.
_LOAD_TIME_ATTR = re.compile(
    r'\b(rtp_stream|response|milliseconds|play_pcap_audio|play_pcap_video)="([^"]*)"')
_KEY_REF = re.compile(r"\[([A-Za-z_][A-Za-z0-9_]*)\]")
_SEPARATOR = re.compile(
    r"^-{10,} (?P<at>[^\n]*)\n(?P<transport>\w+) message (?P<dir>sent|received)[^\n]*\n",
    re.MULTILINE)
_COMPACT = {"f": "from", "t": "to", "i": "call-id", "m": "contact", "v": "via",
            "l": "content-length", "c": "content-type"}


class ScenarioError(ValueError):
    """A scenario cannot be rendered (unknown name, or a load-time key was not given)."""


@dataclass(frozen=True)
class SipMessage:
    """One SIP message from SIPp's ``-trace_msg`` log."""

    direction: Literal["sent", "received"]
    at: str
    text: str

    @property
    def first_line(self) -> str:
        """The request or status line."""
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_response(self) -> bool:
        """Whether this is a response (``SIP/2.0 NNN ...``)."""
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int | None:
        """Response status code, ``None`` for a request."""
        if not self.is_response:
            return None
        parts = self.first_line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    @property
    def method(self) -> str:
        """Request method, or for a response the method in its CSeq."""
        if not self.is_response:
            return self.first_line.split(" ", 1)[0]
        cseq = self.header("CSeq") or ""
        return cseq.split()[-1] if cseq.split() else ""

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Header ``(name, value)`` pairs in order (folded lines joined)."""
        head = self.text.split("\n\n", 1)[0]
        out: list[tuple[str, str]] = []
        for line in head.split("\n")[1:]:
            if line[:1] in (" ", "\t") and out:
                out[-1] = (out[-1][0], f"{out[-1][1]} {line.strip()}")
                continue
            name, sep, value = line.partition(":")
            if sep:
                out.append((name.strip(), value.strip()))
        return out

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive, compact forms too)."""
        wanted = name.lower()
        for n, v in self.headers:
            low = n.lower()
            if _COMPACT.get(low, low) == wanted:
                return v
        return None

    @property
    def call_id(self) -> str:
        """The Call-ID header."""
        return self.header("Call-ID") or ""

    @property
    def body(self) -> str:
        """The message body (SDP, sipfrag), empty if none."""
        parts = self.text.split("\n\n", 1)
        return parts[1].strip() if len(parts) > 1 else ""


def parse_message_log(text: str) -> list[SipMessage]:
    """Split a SIPp ``-trace_msg`` log into messages."""
    text = text.replace("\r\n", "\n")
    matches = list(_SEPARATOR.finditer(text))
    out: list[SipMessage] = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end():end].strip("\n")
        direction: Literal["sent", "received"] = "sent" if m["dir"] == "sent" else "received"
        out.append(SipMessage(direction, m["at"].strip(), body.rstrip() + "\n"))
    return out


def parse_stat_csv(text: str) -> dict[str, str]:
    """The last row of a SIPp ``-trace_stat`` CSV (``;``-separated) as ``column -> value``."""
    rows = [r for r in csv.reader(text.splitlines(), delimiter=";") if r]
    if len(rows) < 2:
        return {}
    return {name: value for name, value in zip(rows[0], rows[-1], strict=False) if name}


@dataclass(frozen=True)
class SippResult:
    """What one SIPp run did.

    ``successful`` and ``failed`` are SIPp's cumulative call counters from the statistics
    CSV; when SIPp died before writing it they are derived from the exit code
    (``counts_from == "exit_code"``).
    """

    scenario: str
    argv: tuple[str, ...]
    returncode: int
    successful: int
    failed: int
    counts_from: Literal["csv", "exit_code"]
    run_dir: Path
    local_port: int
    media_port: int
    output_log: Path
    error_log: Path
    message_log: Path | None
    stats: Mapping[str, str]
    messages: tuple[SipMessage, ...] = field(repr=False)

    @property
    def ok(self) -> bool:
        """Exit code 0: every call reached the end of the scenario."""
        return self.returncode == EXIT_ALL_OK

    @property
    def errors(self) -> str:
        """The error log's text ("unexpected message", timeouts, regexp failures...)."""
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def action_log(self) -> str:
        """What the scenario's ``<log message=...>`` actions wrote (``-trace_logs``)."""
        try:
            return (self.run_dir / "actions.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def received(self, *, method: str | None = None, status: int | None = None
                 ) -> list[SipMessage]:
        """Messages SIPp received, optionally only ``method`` requests/responses or a status."""
        return [m for m in self.messages if m.direction == "received"
                and (method is None or m.method == method)
                and (status is None or m.status == status)]

    def sent(self, *, method: str | None = None) -> list[SipMessage]:
        """Messages SIPp sent, optionally only one method (or responses to it)."""
        return [m for m in self.messages if m.direction == "sent"
                and (method is None or m.method == method)]

    def final_statuses(self, method: str = "INVITE") -> list[int]:
        """Final (>= 200) response codes received for ``method``, one per transaction."""
        seen: dict[tuple[str, str], int] = {}
        for m in self.received(method=method):
            if m.status is not None and m.status >= 200:
                seen.setdefault((m.call_id, m.header("CSeq") or ""), m.status)
        return list(seen.values())

    def describe(self) -> str:
        """A summary for assertion messages: exit code, counters, errors, output tail."""
        try:
            out = "\n".join(self.output_log.read_text(errors="replace").splitlines()[-15:])
        except FileNotFoundError:
            out = ""
        return (f"sipp {self.scenario}: exit {self.returncode}, {self.successful} successful, "
                f"{self.failed} failed ({self.counts_from}); run dir {self.run_dir}\n"
                f"errors:\n{self.errors[-2000:]}\noutput:\n{out}")


def scenario_path(scenario: str | Path) -> Path:
    """``uac_pcmu`` -> ``sipp/uac_pcmu.xml``; a path is returned as is.

    Raises:
        ScenarioError: The file does not exist.
    """
    path = Path(scenario)
    if path.suffix != ".xml" and not path.is_absolute():
        path = SIPP_DIR / f"{scenario}.xml"
    elif not path.is_absolute() and not path.exists():
        path = SIPP_DIR / path
    if not path.exists():
        raise ScenarioError(f"no SIPp scenario {scenario!r} ({path})")
    return path


def render_scenario(src: Path, dest: Path, keys: Mapping[str, str]) -> Path:
    """Copy ``src`` to ``dest`` with ``[key]`` replaced outside CDATA sections.

    Raises:
        ScenarioError: A load-time attribute still refers to a key that was not given.
    """
    def sub(text: str) -> str:
        return _KEY_REF.sub(lambda m: escape(keys[m[1]], {'"': "&quot;"}) if m[1] in keys
                            else m[0], text)

    parts = _CDATA.split(src.read_text())
    rendered = "".join(p if p.startswith("<![CDATA[") else sub(p) for p in parts)
    for part in _CDATA.split(rendered):
        if part.startswith("<![CDATA["):
            continue
        for attr in _LOAD_TIME_ATTR.finditer(part):
            missing = _KEY_REF.findall(attr[2])
            if missing:
                raise ScenarioError(f"{src.name}: {attr[1]}=\"{attr[2]}\" needs keys "
                                    f"{missing}; pass them in keys=")
    dest.write_text(rendered)
    return dest


class SippProcess:
    """A running SIPp; :meth:`result` waits for it and reads its logs.

    Create it with :func:`start_sipp`. Use it as a context manager so it is stopped (and
    waited for) even when the test fails.
    """

    def __init__(self, *, scenario: str, argv: Sequence[str], run_dir: Path, local_port: int,
                 media_port: int, calls: int, timeout_s: float, trace_messages: bool) -> None:
        self.scenario = scenario
        self.calls = calls
        self.run_dir = run_dir
        self.local_port = local_port
        self.media_port = media_port
        self.timeout_s = timeout_s
        self.argv = tuple(argv)
        self.output_log = run_dir / "sipp.out"
        self.error_log = run_dir / "errors.log"
        self.message_log = run_dir / "messages.log" if trace_messages else None
        self.stat_csv = run_dir / "stats.csv"
        self.process = ManagedProcess(argv, log_path=self.output_log, name=f"sipp {scenario}",
                                      cwd=run_dir, max_lifetime_s=timeout_s + 10,
                                      grace_s=3.0)

    def start(self) -> Self:
        """Start SIPp (once; later calls do nothing)."""
        if not self.process.started:
            self.process.start()
        return self

    def stop(self) -> None:
        """Stop SIPp (``SIGTERM``, then ``SIGKILL``) and wait for it."""
        self.process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Still running."""
        return self.process.running

    def result(self, timeout_s: float | None = None) -> SippResult:
        """Wait for SIPp to finish (stopping it after ``timeout_s``) and read its logs.

        Args:
            timeout_s: Longest wait; default: the run's ``-timeout`` plus 5 s.
        """
        limit = self.timeout_s + 5 if timeout_s is None else timeout_s
        try:
            code = self.process.wait(limit)
        except ProcessError:
            stopped = self.process.stop()
            code = -1 if stopped is None else stopped
        return self._read(code)

    def _read(self, code: int) -> SippResult:
        stats: dict[str, str] = {}
        if self.stat_csv.exists():
            stats = parse_stat_csv(self.stat_csv.read_text(errors="replace"))
        counts_from: Literal["csv", "exit_code"] = "csv"
        try:
            successful = int(stats["SuccessfulCall(C)"])
            failed = int(stats["FailedCall(C)"])
        except (KeyError, ValueError):
            counts_from = "exit_code"
            successful, failed = (self.calls, 0) if code == EXIT_ALL_OK else (0, self.calls)
        messages: list[SipMessage] = []
        if self.message_log is not None and self.message_log.exists():
            messages = parse_message_log(self.message_log.read_text(errors="replace"))
        return SippResult(
            scenario=self.scenario, argv=self.argv, returncode=code, successful=successful,
            failed=failed, counts_from=counts_from, run_dir=self.run_dir,
            local_port=self.local_port, media_port=self.media_port,
            output_log=self.output_log, error_log=self.error_log,
            message_log=self.message_log, stats=stats, messages=tuple(messages))


_run_counter = 0


def start_sipp(scenario: str | Path, target: str | None, *, log_dir: Path,
               local_port: int | None = None, media_port: int | None = None, calls: int = 1,
               concurrent: int | None = None, rate: float | None = None,
               hold_ms: int | None = None, keys: Mapping[str, str] | None = None,
               timeout_s: float = 30.0, service: str = "echo", trace_messages: bool = True,
               extra_args: Sequence[str] = ()) -> SippProcess:
    """Render ``scenario`` and start SIPp on it (not yet waited for).

    Args:
        scenario: A name in ``sipp/`` (``"uac_pcmu"``) or a path.
        target: ``host:port`` of the peer for UAC scenarios; ``None`` for a UAS scenario.
        log_dir: Parent of this run's own directory.
        local_port: SIP port SIPp binds (default: a free one).
        media_port: SIPp's ``-mp`` RTP port (default: a free even port with 3 free above).
        calls: ``-m``: stop after this many calls.
        concurrent: ``-l``: most simultaneous calls.
        rate: ``-r``: calls per second (SIPp's default is 10).
        hold_ms: ``-d``: the length of each ``<pause/>`` without its own duration.
        keys: ``[key]`` values: rendered into the scenario and passed as ``-key``.
        timeout_s: ``-timeout``: SIPp gives up (exit code 255) after this long.
        service: ``-s``: the user part of the Request-URI.
        trace_messages: Log every SIP message (``-trace_msg``); off for big load runs.
        extra_args: More SIPp arguments.

    Raises:
        ScenarioError: Unknown scenario, or a load-time key missing from ``keys``.
        ValueError: ``hold_ms`` does not fit in ``timeout_s``.
    """
    if hold_ms is not None and hold_ms / 1000 + 2 > timeout_s:
        raise ValueError(f"hold_ms={hold_ms} needs timeout_s above {hold_ms / 1000 + 2:g}")
    global _run_counter
    _run_counter += 1
    src = scenario_path(scenario)
    run_dir = log_dir / f"sipp-{src.stem}-{_run_counter}"
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = dict(keys or {})
    rendered = render_scenario(src, run_dir / src.name, keys)
    local_port = free_udp_port() if local_port is None else local_port
    media_port = free_udp_port_block(4) if media_port is None else media_port
    argv = ["sipp"]
    if target is not None:
        argv.append(target)
    argv += ["-sf", str(rendered), "-s", service,
             "-i", LOCALHOST, "-mi", LOCALHOST, "-bind_local",
             # The control socket binds 0.0.0.0:8888 by default: keep it local and private.
             "-ci", LOCALHOST, "-cp", str(free_udp_port()),
             "-p", str(local_port), "-mp", str(media_port),
             "-m", str(calls), "-nostdin",
             "-timeout", f"{math.ceil(timeout_s)}s", "-timeout_error",
             "-trace_err", "-error_file", str(run_dir / "errors.log"),
             "-trace_stat", "-stf", str(run_dir / "stats.csv"),
             "-trace_screen", "-screen_file", str(run_dir / "screen.log"),
             "-trace_logs", "-log_file", str(run_dir / "actions.log")]
    if trace_messages:
        argv += ["-trace_msg", "-message_file", str(run_dir / "messages.log")]
    if concurrent is not None:
        argv += ["-l", str(concurrent)]
    if rate is not None:
        argv += ["-r", f"{rate:g}"]
    if hold_ms is not None:
        argv += ["-d", str(hold_ms)]
    for name, value in keys.items():
        argv += ["-key", name, value]
    argv += list(extra_args)
    proc = SippProcess(scenario=src.stem, argv=argv, run_dir=run_dir, local_port=local_port,
                       media_port=media_port, calls=calls, timeout_s=timeout_s,
                       trace_messages=trace_messages)
    return proc.start()


def run_sipp(scenario: str | Path, target: str | None, *, log_dir: Path,
             local_port: int | None = None, media_port: int | None = None, calls: int = 1,
             concurrent: int | None = None, rate: float | None = None,
             hold_ms: int | None = None, keys: Mapping[str, str] | None = None,
             timeout_s: float = 30.0, service: str = "echo", trace_messages: bool = True,
             extra_args: Sequence[str] = ()) -> SippResult:
    """Run ``scenario`` to the end and return what happened; arguments as :func:`start_sipp`."""
    with start_sipp(scenario, target, log_dir=log_dir, local_port=local_port,
                    media_port=media_port, calls=calls, concurrent=concurrent, rate=rate,
                    hold_ms=hold_ms, keys=keys, timeout_s=timeout_s, service=service,
                    trace_messages=trace_messages, extra_args=extra_args) as proc:
        return proc.result()


async def run_sipp_async(scenario: str | Path, target: str | None, *, log_dir: Path,
                         local_port: int | None = None, media_port: int | None = None,
                         calls: int = 1, concurrent: int | None = None,
                         rate: float | None = None, hold_ms: int | None = None,
                         keys: Mapping[str, str] | None = None, timeout_s: float = 30.0,
                         service: str = "echo", trace_messages: bool = True,
                         extra_args: Sequence[str] = ()) -> SippResult:
    """:func:`run_sipp` for async code: SIPp is waited for in a worker thread.

    Cancelling the awaiting task stops SIPp (and waits for it) before re-raising; the worker
    thread then returns as soon as SIPp has exited.
    """
    with start_sipp(scenario, target, log_dir=log_dir, local_port=local_port,
                    media_port=media_port, calls=calls, concurrent=concurrent, rate=rate,
                    hold_ms=hold_ms, keys=keys, timeout_s=timeout_s, service=service,
                    trace_messages=trace_messages, extra_args=extra_args) as proc:
        return await asyncio.to_thread(proc.result)
