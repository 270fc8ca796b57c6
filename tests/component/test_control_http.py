"""The control HTTP server over real sockets, fed real IPC messages; the call directory's bounds.

Component tests run the aiohttp application on 127.0.0.1 port 0 and talk to it with a real
``aiohttp.ClientSession``; the unit tests at the end drive :class:`CallDirectory` alone.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.parser import text_string_to_metric_families

from gateway.control.directory import MIN_LIVE_LIMIT, RECORD_KEEP_BYTES, CallDirectory
from gateway.control.http import ControlState, build_app, start_http, stop_http
from gateway.control.metrics import ControlMetrics
from gateway.control.outcomes import OUTCOMES, outcome_of
from gateway.control.readiness import Readiness, ReadinessError
from gateway.ipc.messages import (
    PROTOCOL_VERSION,
    CallEnded,
    CallEvent,
    CallEventKind,
    CallOffered,
    CallStarted,
    Hello,
    Load,
    ToolRequest,
)
from tests.conftest import scaled

component = pytest.mark.component
unit = pytest.mark.unit

T0 = 1_700_000_000.0


class Clock:
    """A Unix clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def hello(worker_id: str, capacity: int = 3, pid: int = 4242) -> Hello:
    return Hello(worker_id=worker_id, pid=pid, protocol=PROTOCOL_VERSION,
                 binding="pjproject 2.15.1 (test)",
                 capacity=capacity, sip_host="127.0.0.1", sip_port=5070)


def offered(call_id: str, at: float = T0, from_user: str = "+15550100") -> CallOffered:
    return CallOffered(call_id=call_id, sip_call_id=f"sip-{call_id}@pbx", from_user=from_user,
                       to_user="200", request_uri_user="200", source_ip="192.0.2.10", time=at)


def started(call_id: str) -> CallStarted:
    return CallStarted(call_id=call_id, route="support", agent="concierge", codec="PCMU")


@dataclass
class Control:
    state: ControlState
    clock: Clock
    url: str
    http: aiohttp.ClientSession

    @property
    def directory(self) -> CallDirectory:
        return self.state.directory

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path) as response:
            return response.status, await response.json()


def make_state(clock: Clock) -> ControlState:
    directory = CallDirectory(clock=clock)
    return ControlState(directory=directory, metrics=ControlMetrics(directory, process=False),
                        readiness=Readiness("starting workers"))


@asynccontextmanager
async def serving(
    state: ControlState, clock: Clock, middlewares: Iterable[Middleware] = (),
    app: web.Application | None = None,
) -> AsyncIterator[Control]:
    server = await start_http(app or build_app(state, middlewares=middlewares), "127.0.0.1", 0)
    try:
        timeout = aiohttp.ClientTimeout(total=scaled(5))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield Control(state, clock, f"http://127.0.0.1:{server.port}", http)
    finally:
        await stop_http(server)


@pytest.fixture
async def control() -> AsyncIterator[Control]:
    clock = Clock()
    async with serving(make_state(clock), clock) as ctl:
        yield ctl


def two_workers(directory: CallDirectory, clock: Clock) -> None:
    """w1 holds a started call and one in setup; w2 holds one started call."""
    directory.worker_up(hello("w1"))
    directory.worker_up(hello("w2", capacity=5, pid=4343))
    for worker_id, call_id in (("w1", "w1-1"), ("w1", "w1-2"), ("w2", "w2-1")):
        directory.on_message(worker_id, offered(call_id, clock.now))
    clock.now += 0.08
    directory.on_message("w1", started("w1-1"))
    clock.now += 0.4
    directory.on_message("w2", started("w2-1"))
    clock.now += 10


def metric_values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# Component: the HTTP server ------------------------------------------------------------------


@component
async def test_healthz_answers_ok_while_the_process_runs(control: Control) -> None:
    async with control.http.get(control.url + "/healthz") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {"status": "ok"}
    async with control.http.head(control.url + "/healthz") as response:
        assert response.status == 200


@component
async def test_readyz_follows_starting_ready_draining(control: Control) -> None:
    readiness = control.state.readiness
    assert await control.get("/readyz") == (
        503, {"status": "starting", "reason": "starting workers"})
    readiness.starting("1 of 2 workers up")
    assert await control.get("/readyz") == (
        503, {"status": "starting", "reason": "1 of 2 workers up"})
    readiness.ready()
    assert await control.get("/readyz") == (200, {"status": "ready"})
    assert await control.get("/healthz") == (200, {"status": "ok"})
    readiness.draining("SIGTERM received")
    assert await control.get("/readyz") == (
        503, {"status": "draining", "reason": "SIGTERM received"})
    with pytest.raises(ReadinessError):
        readiness.ready()
    with pytest.raises(ReadinessError):
        readiness.starting("again")
    assert (await control.get("/readyz"))[0] == 503


@component
async def test_metrics_expose_calls_workers_setup_and_counters(control: Control) -> None:
    directory, clock = control.directory, control.clock
    two_workers(directory, clock)
    directory.on_message("w2", CallEnded(call_id="w2-1", reason="caller hung up"))
    directory.on_message("w1", offered("w1-3", clock.now))
    directory.on_message("w1", CallEnded(call_id="w1-3", reason="refused: 503 Busy (full)"))
    directory.worker_load("w2", Load(active=0, capacity=5, draining=True))
    control.state.metrics.worker_restarted()
    control.state.metrics.ipc_dropped(3)
    control.state.metrics.ipc_dropped(0)

    async with control.http.get(control.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        values = metric_values(await response.text())

    def value(name: str, **labels: str) -> float:
        return values[(name, frozenset(labels.items()))]

    assert value("gateway_calls_active", worker="w1") == 2
    assert value("gateway_calls_active", worker="w2") == 0
    assert value("gateway_calls_total", outcome="ok") == 1
    assert value("gateway_calls_total", outcome="refused") == 1
    assert value("gateway_calls_total", outcome="worker_died") == 0
    assert value("gateway_call_setup_seconds_bucket", le="0.05") == 0
    assert value("gateway_call_setup_seconds_bucket", le="0.1") == 1
    assert value("gateway_call_setup_seconds_bucket", le="0.5") == 2
    assert value("gateway_call_setup_seconds_bucket", le="+Inf") == 2
    assert value("gateway_call_setup_seconds_count") == 2
    assert value("gateway_call_setup_seconds_sum") == pytest.approx(0.08 + 0.48)
    assert value("gateway_workers", state="up") == 1
    assert value("gateway_workers", state="draining") == 1
    assert value("gateway_workers", state="down") == 0
    assert value("gateway_worker_restarts_total") == 1
    assert value("gateway_ipc_dropped_total") == 3
    assert value("gateway_calls_evicted_total") == 0
    # No call ids, SIP Call-IDs or numbers in any label.
    labels = {v for (_, pairs) in values for (_, v) in pairs}
    assert not {"w1-1", "sip-w1-1@pbx", "+15550100"} & labels


@component
async def test_metrics_speak_openmetrics_when_asked(control: Control) -> None:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with control.http.get(control.url + "/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).rstrip().endswith("# EOF")


@component
async def test_v1_calls_lists_live_calls_across_two_workers(control: Control) -> None:
    two_workers(control.directory, control.clock)
    control.directory.worker_load("w1", Load(active=2, capacity=3))

    status, body = await control.get("/v1/calls")

    assert status == 200
    calls = {c["call_id"]: c for c in body["calls"]}
    assert list(calls) == ["w1-1", "w1-2", "w2-1"]
    first = calls["w1-1"]
    assert first["worker_id"] == "w1"
    assert first["sip_call_id"] == "sip-w1-1@pbx"
    assert (first["from_user"], first["to_user"]) == ("+15550100", "200")
    assert (first["route"], first["agent"], first["codec"]) == ("support", "concierge", "PCMU")
    assert first["state"] == "started"
    assert first["offered_at"] == T0
    assert first["setup_s"] == pytest.approx(0.08)
    assert first["duration_s"] == pytest.approx(10.4)
    assert first["live"] is True and first["ended_at"] is None
    assert calls["w1-2"]["state"] == "offered"
    assert calls["w1-2"]["started_at"] is None and calls["w1-2"]["duration_s"] is None
    assert calls["w2-1"]["worker_id"] == "w2"
    workers = {w["worker_id"]: w for w in body["workers"]}
    assert workers["w1"] | {"up_at": 0} == {
        "worker_id": "w1", "pid": 4242, "state": "up", "active": 2, "capacity": 3, "calls": 2,
        "sip_host": "127.0.0.1", "sip_port": 5070, "binding": "pjproject 2.15.1 (test)",
        "up_at": 0, "down_at": None, "down_reason": None}
    assert (workers["w2"]["pid"], workers["w2"]["capacity"], workers["w2"]["calls"]) == (
        4343, 5, 1)


@component
async def test_a_worker_going_down_ends_its_calls_with_the_reason(control: Control) -> None:
    directory = control.directory
    two_workers(directory, control.clock)

    ended = directory.worker_down("w1", "killed by signal 9")

    assert sorted(e["call_id"] for e in ended) == ["w1-1", "w1-2"]
    for entry in ended:
        assert entry["end_reason"] == "worker w1 died: killed by signal 9"
        assert entry["outcome"] == "worker_died"
        assert entry["record"]["end_reason"] == entry["end_reason"]
    assert ended[0]["record"]["answered"] is True and ended[1]["record"]["answered"] is False
    assert directory.worker_down("w1", "again") == []

    status, body = await control.get("/v1/calls")
    assert [c["call_id"] for c in body["calls"]] == ["w2-1"]
    w1 = next(w for w in body["workers"] if w["worker_id"] == "w1")
    assert (w1["state"], w1["calls"], w1["down_reason"]) == ("down", 0, "killed by signal 9")

    status, body = await control.get("/v1/calls/w1-1")
    assert status == 200
    assert body["call"]["live"] is False
    assert body["call"]["end_reason"] == "worker w1 died: killed by signal 9"

    async with control.http.get(control.url + "/metrics") as response:
        values = metric_values(await response.text())
    assert values[("gateway_calls_total", frozenset({("outcome", "worker_died")}))] == 2
    assert values[("gateway_calls_active", frozenset({("worker", "w1")}))] == 0
    assert values[("gateway_workers", frozenset({("state", "down")}))] == 1

    # The restarted worker takes calls again under the same id.
    directory.worker_up(hello("w1", pid=5151))
    directory.on_message("w1", offered("w1-9", control.clock.now))
    status, body = await control.get("/v1/calls")
    assert [c["call_id"] for c in body["calls"]] == ["w2-1", "w1-9"]


@component
async def test_call_by_id_live_then_ended_then_unknown(control: Control) -> None:
    directory = control.directory
    two_workers(directory, control.clock)

    status, body = await control.get("/v1/calls/w2-1")
    assert status == 200 and body["call"]["live"] is True

    record = {"sip_status": 200, "answered": True, "end_reason": "caller hung up"}
    ended = directory.on_message("w2", CallEnded(call_id="w2-1", reason="caller hung up",
                                                 record=record))
    assert [e["outcome"] for e in ended] == ["ok"]
    status, body = await control.get("/v1/calls/w2-1")
    assert status == 200
    call = body["call"]
    assert (call["live"], call["state"], call["outcome"]) == (False, "ended", "ok")
    assert call["record"] == record
    assert call["duration_s"] == pytest.approx(10.0)

    status, body = await control.get("/v1/calls/nope-1")
    assert status == 404
    assert body["error"] == "not_found" and body["reason"]


@component
async def test_unknown_paths_and_wrong_methods_answer_json(control: Control) -> None:
    async with control.http.get(control.url + "/v2/nothing") as response:
        assert response.status == 404
        assert response.content_type == "application/json"
        assert await response.json() == {"error": "not_found", "reason": "no such endpoint"}
    for path in ("/v1/calls", "/healthz", "/metrics"):
        async with control.http.post(control.url + path, data=b"{}") as response:
            assert response.status == 405
            assert response.content_type == "application/json"
            body = await response.json()
            assert body["error"] == "method_not_allowed"
            assert "POST" in body["reason"]
            assert "GET" in response.headers["Allow"]


@component
async def test_middlewares_can_refuse_with_json_and_failures_are_json() -> None:
    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/healthz", "/readyz"):
            return await handler(request)
        if request.headers.get("Authorization") != "Bearer s3cret":
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
        if request.path == "/boom":
            raise RuntimeError("a bug")
        return await handler(request)

    clock = Clock()
    async with serving(make_state(clock), clock, middlewares=[bearer]) as ctl:
        assert (await ctl.get("/healthz"))[0] == 200
        async with ctl.http.get(ctl.url + "/v1/calls") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert (await response.json())["error"] == "unauthorized"
        auth = {"Authorization": "Bearer s3cret"}
        async with ctl.http.get(ctl.url + "/v1/calls", headers=auth) as response:
            assert response.status == 200
        async with ctl.http.get(ctl.url + "/boom", headers=auth) as response:
            assert response.status == 500
            body = await response.json()
            assert body["error"] == "internal_error"
            assert "a bug" not in json.dumps(body)


@component
async def test_port_zero_binds_a_free_port_and_stop_waits_for_requests_in_flight() -> None:
    clock = Clock()
    state = make_state(clock)
    app = build_app(state)
    entered = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(0.2)
        return web.json_response({"done": True})

    app.router.add_get("/slow", slow)
    server = await start_http(app, "127.0.0.1", 0)
    assert server.port > 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=scaled(5))) as http:
        request = asyncio.create_task(_fetch_json(http, f"http://127.0.0.1:{server.port}/slow"),
                                      name="test:slow-request")
        await asyncio.wait_for(entered.wait(), scaled(5))
        await stop_http(server)
        assert await request == (200, {"done": True})
        with pytest.raises(aiohttp.ClientConnectionError):
            await _fetch_json(http, f"http://127.0.0.1:{server.port}/healthz")


async def _fetch_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


# Unit: the directory's bounds and bookkeeping -------------------------------------------------


@unit
def test_live_calls_beyond_twice_capacity_evict_the_oldest_in_setup() -> None:
    clock = Clock()
    directory = CallDirectory(clock=clock)
    directory.worker_up(hello("w1", capacity=3))  # limit 6
    for n in range(1, 7):
        directory.on_message("w1", offered(f"w1-{n}"))
    directory.on_message("w1", started("w1-1"))
    directory.on_message("w1", started("w1-3"))

    directory.on_message("w1", offered("w1-7"))

    ids = [c["call_id"] for c in directory.live_calls()]
    assert ids == ["w1-1", "w1-3", "w1-4", "w1-5", "w1-6", "w1-7"]
    assert directory.stats().evicted == 1
    # The evicted call's real end still yields a complete ended call, counted once.
    ended = directory.on_message("w1", CallEnded(call_id="w1-2", reason="caller cancelled"))
    assert [(e["call_id"], e["from_user"], e["outcome"]) for e in ended] == [
        ("w1-2", "+15550100", "unanswered")]
    stats = directory.stats()
    assert stats.ended["unanswered"] == 1 and stats.unmatched["unknown_call"] == 0


@unit
def test_eviction_takes_the_oldest_call_when_all_are_started_and_follows_load() -> None:
    directory = CallDirectory(clock=Clock())
    directory.worker_up(hello("w1", capacity=0))
    for n in range(1, MIN_LIVE_LIMIT + 2):
        directory.on_message("w1", offered(f"w1-{n}"))
        directory.on_message("w1", started(f"w1-{n}"))
    assert [c["call_id"] for c in directory.live_calls()][0] == "w1-2"
    assert len(directory.live_calls()) == MIN_LIVE_LIMIT

    directory.worker_load("w1", Load(active=3, capacity=5))  # limit 10
    for n in range(10, 16):
        directory.on_message("w1", offered(f"w1-{n}"))
    assert len(directory.live_calls()) == 10
    assert directory.stats().evicted == 1


@unit
def test_recent_ended_calls_are_bounded_newest_first() -> None:
    directory = CallDirectory(clock=Clock(), max_recent=3)
    directory.worker_up(hello("w1"))
    for n in range(1, 6):
        directory.on_message("w1", offered(f"w1-{n}"))
        directory.on_message("w1", CallEnded(call_id=f"w1-{n}", reason="caller cancelled"))
    assert [e["call_id"] for e in directory.recent()] == ["w1-5", "w1-4", "w1-3"]
    assert [e["call_id"] for e in directory.recent(1)] == ["w1-5"]
    assert directory.call("w1-1") is None
    assert directory.stats().ended["unanswered"] == 5


@unit
def test_a_large_record_is_returned_but_not_kept() -> None:
    directory = CallDirectory(clock=Clock())
    directory.worker_up(hello("w1"))
    directory.on_message("w1", offered("w1-1"))
    record = {"tool_calls": [{"name": "lookup", "n": "x" * RECORD_KEEP_BYTES}]}
    [entry] = directory.on_message("w1", CallEnded(call_id="w1-1", reason="ok", record=record))
    assert entry["record"] == record
    kept = directory.call("w1-1")
    assert kept is not None and kept["record"] is None


@unit
def test_worker_count_is_bounded_forgetting_down_workers_first() -> None:
    directory = CallDirectory(clock=Clock(), max_workers=2)
    directory.worker_up(hello("w1"))
    directory.worker_up(hello("w2"))
    directory.worker_up(hello("w3"))
    assert [w["worker_id"] for w in directory.workers()] == ["w1", "w2"]
    assert directory.stats().unmatched["worker_limit"] == 1
    directory.worker_down("w1", "exit code 1")
    directory.worker_up(hello("w3"))
    assert [w["worker_id"] for w in directory.workers()] == ["w2", "w3"]


@unit
def test_messages_that_do_not_fit_are_counted_and_ignored() -> None:
    directory = CallDirectory(clock=Clock())
    directory.worker_up(hello("w1"))
    directory.worker_up(hello("w2"))
    directory.on_message("w1", offered("w1-1"))

    directory.on_message("w9", offered("w9-1"))  # never said hello
    directory.on_message("w1", started("w1-404"))
    directory.on_message("w1", offered("w1-1"))
    directory.on_message("w2", offered("w1-1"))
    directory.on_message("w2", CallEnded(call_id="w1-1", reason="caller hung up"))
    directory.on_message("w2", hello("w1"))
    directory.on_message("w1", ToolRequest(1, "w1-1", "guardrail", 5.0, path="m:f", text="t"))

    assert directory.stats().unmatched == {
        "unknown_worker": 1, "unknown_call": 1, "duplicate_call": 2, "wrong_worker": 2,
        "worker_limit": 0}
    assert [c["call_id"] for c in directory.live_calls()] == ["w1-1"]
    assert directory.stats().ended == dict.fromkeys(OUTCOMES, 0)


@unit
def test_hello_for_a_worker_still_up_ends_its_previous_calls() -> None:
    directory = CallDirectory(clock=Clock())
    directory.worker_up(hello("w1", pid=100))
    directory.on_message("w1", offered("w1-1"))
    ended = directory.on_message("w1", hello("w1", pid=200))
    assert [e["end_reason"] for e in ended] == [
        "worker w1 died: replaced by a new process (pid 200)"]
    [w1] = directory.workers()
    assert (w1["pid"], w1["state"], w1["calls"]) == (200, "up", 0)


@unit
def test_call_events_are_counted_without_their_content() -> None:
    directory = CallDirectory(clock=Clock())
    directory.worker_up(hello("w1"))
    directory.on_message("w1", offered("w1-1"))
    directory.on_message("w1", started("w1-1"))
    events: list[tuple[CallEventKind, dict[str, str]]] = [
        ("transcript", {"text": "my card number is 4111"}), ("transcript", {"text": "thanks"}),
        ("state", {"state": "transferring"})]
    for kind, data in events:
        directory.on_message("w1", CallEvent(call_id="w1-1", kind=kind, time=T0, data=data))
    [call] = directory.live_calls()
    assert call["events"] == {"transcript": 2, "state": 1}
    assert call["state"] == "transferring"
    assert "4111" not in json.dumps(directory.live_calls())


@unit
@pytest.mark.parametrize(("reason", "answered", "outcome"), [
    ("caller hung up", True, "ok"),
    ("agent ended the call: done", True, "ok"),
    ("transferred to sip:desk@pbx", True, "ok"),
    ("caller cancelled", False, "unanswered"),
    ("refused: 404 Not Found (refused by admission or dialplan)", False, "refused"),
    ("internal error: KeyError", True, "failed"),
    ("Realtime session failed: 401", True, "failed"),
    ("Realtime session lost", True, "failed"),
    ("agent unavailable: no such agent", False, "failed"),
    ("no media after answer", True, "failed"),
])
def test_outcome_classes(reason: str, answered: bool, outcome: str) -> None:
    assert outcome_of(reason, answered=answered) == outcome


PROBE = """
import sys
for name in ("aiohttp", "asyncio", "prometheus_client", "pjsua2", "websockets"):
    sys.modules[name] = None
import gateway.control.directory, gateway.control.outcomes, gateway.control.readiness
"""


@unit
def test_pure_control_modules_import_without_io_libraries() -> None:
    proc = subprocess.run([sys.executable, "-W", "error", "-c", PROBE],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
