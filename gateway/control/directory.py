"""The control process's view of the SIP workers and their live calls, built from IPC messages.

A :class:`CallDirectory` is fed what workers send (``Hello``, ``Load``, ``CallOffered``,
``CallStarted``, ``CallEvent``, ``CallEnded``, see ``docs/ipc.md``) and what the supervisor
sees (a worker's connection ending, :meth:`CallDirectory.worker_down`). Every method that ends
calls returns them as *ended-call* dicts, the call's summary with a ``record``, for the caller
to persist; a worker's death ends its calls with ``worker <id> died: <reason>``. The queries
return JSON-safe dicts for the HTTP API and a :class:`DirectoryStats` snapshot for the metrics.
Call content never enters the directory: call events are counted by kind, their data is not
kept. Everything is bounded: at most ``2 × capacity`` (at least :data:`MIN_LIVE_LIMIT`) live
calls per worker, the oldest call not yet started (else the oldest) making room for a new
one and counted as evicted; :data:`MAX_RECENT` ended calls; :data:`MAX_WORKERS` workers, down
ones forgotten first. Messages that do not fit the directory's view are counted by
:data:`Unmatched` kind and otherwise ignored. Pure: no I/O; time comes from an injected clock.
"""

from __future__ import annotations

import itertools
import json
import time
import typing
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, assert_never

from gateway.control.outcomes import Outcome, outcome_of
from gateway.ipc.messages import (
    CallEnded,
    CallEvent,
    CallOffered,
    CallStarted,
    CommandResult,
    Hello,
    Load,
    RelayOffered,
    ToolRequest,
    WorkerMessage,
)

__all__ = [
    "MAX_RECENT", "MAX_WORKERS", "MIN_LIVE_LIMIT", "RECORD_KEEP_BYTES", "SETUP_BUCKETS_S",
    "UNMATCHED_KINDS", "WORKER_STATES", "CallDirectory", "DirectoryStats", "Unmatched",
    "WorkerState",
]

WorkerState: TypeAlias = Literal["up", "draining", "down"]
#: Why a message was ignored: its worker is not up, its call is not live, its call id is
#: already live, it names another worker's call (or a worker other than its sender), or the
#: directory already holds :data:`MAX_WORKERS` workers that are not down.
Unmatched: TypeAlias = Literal[
    "unknown_worker", "unknown_call", "duplicate_call", "wrong_worker", "worker_limit"]
WORKER_STATES: Final[tuple[str, ...]] = typing.get_args(WorkerState)
UNMATCHED_KINDS: Final[tuple[str, ...]] = typing.get_args(Unmatched)

#: Ended calls kept for ``recent()`` and ``GET /v1/calls/{id}``.
MAX_RECENT: Final = 200
#: Workers known at once; restarts reuse their worker id, so this only bounds a misbehaving
#: supervisor or peer.
MAX_WORKERS: Final = 256
#: Live calls a worker may hold even when it reports a capacity below 2.
MIN_LIVE_LIMIT: Final = 4
#: Records larger than this (as compact JSON) are not kept in ``recent()`` (``record`` is
#: ``null`` there); the ended-call dicts returned to the caller always carry the full record.
RECORD_KEEP_BYTES: Final = 32 * 1024
#: Upper bounds of the ``gateway_call_setup_seconds`` buckets (offered → started).
SETUP_BUCKETS_S: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_MAX_STATE_CHARS: Final = 64
_MAX_REASON_CHARS: Final = 512


@dataclass(frozen=True, slots=True)
class DirectoryStats:
    """A consistent snapshot of the directory's counters, for one metrics scrape.

    Attributes:
        ended: Calls ended since start, by outcome (every outcome present).
        evicted: Live calls dropped from the view to respect a worker's limit.
        unmatched: Ignored messages by kind (every kind present).
        setup_buckets: Cumulative count of setups at or under each :data:`SETUP_BUCKETS_S`.
        setup_count: Calls started (the histogram's ``+Inf`` bucket).
        setup_sum_s: Sum of their setup times.
        live_by_worker: Live calls per known worker (0 for a down one).
        workers_by_state: Known workers by state (every state present).
    """

    ended: Mapping[Outcome, int]
    evicted: int
    unmatched: Mapping[Unmatched, int]
    setup_buckets: tuple[int, ...]
    setup_count: int
    setup_sum_s: float
    live_by_worker: Mapping[str, int]
    workers_by_state: Mapping[WorkerState, int]


@dataclass(slots=True)
class _Call:
    worker_id: str
    offered: CallOffered
    started_at: float | None = None
    route: str | None = None
    agent: str | None = None
    codec: str | None = None
    state: str = "offered"
    kind: str = "bridged"
    events: dict[str, int] = field(default_factory=dict)

    def view(self, now: float) -> dict[str, Any]:
        o = self.offered
        started = self.started_at
        return {
            "call_id": o.call_id, "worker_id": self.worker_id, "sip_call_id": o.sip_call_id,
            "from_user": o.from_user, "to_user": o.to_user,
            "request_uri_user": o.request_uri_user, "source_ip": o.source_ip,
            "state": self.state, "kind": self.kind, "route": self.route, "agent": self.agent,
            "codec": self.codec,
            "offered_at": o.time, "started_at": started,
            "setup_s": None if started is None else max(0.0, started - o.time),
            "duration_s": None if started is None else max(0.0, now - started),
            "events": dict(self.events), "live": True,
            "ended_at": None, "end_reason": None, "outcome": None,
        }


@dataclass(slots=True)
class _Worker:
    hello: Hello
    up_at: float
    state: WorkerState = "up"
    active: int = 0
    capacity: int = 0
    #: Live calls by call id, in the order they were offered.
    calls: dict[str, _Call] = field(default_factory=dict)
    down_at: float | None = None
    down_reason: str | None = None

    @property
    def live_limit(self) -> int:
        return max(2 * self.capacity, MIN_LIVE_LIMIT)

    def view(self) -> dict[str, Any]:
        h = self.hello
        return {
            "worker_id": h.worker_id, "pid": h.pid, "state": self.state,
            "active": self.active, "capacity": self.capacity, "calls": len(self.calls),
            "sip_host": h.sip_host, "sip_port": h.sip_port, "binding": h.binding,
            "up_at": self.up_at, "down_at": self.down_at, "down_reason": self.down_reason,
        }


class CallDirectory:
    """Workers and live calls across them, as the control process knows them.

    Args:
        clock: Unix time in seconds (``time.time``); the worker's ``CallOffered.time`` is on
            the same clock, since workers run on the control process's host.
        max_recent: Ended calls kept.
        max_workers: Workers kept.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_recent: int = MAX_RECENT,
        max_workers: int = MAX_WORKERS,
    ) -> None:
        if max_recent < 1 or max_workers < 1:
            raise ValueError("max_recent and max_workers must be at least 1")
        self._clock = clock
        self._max_workers = max_workers
        self._workers: dict[str, _Worker] = {}
        self._calls: dict[str, _Call] = {}
        # Evicted calls, kept so that their CallEnded still yields a full ended call.
        self._evicted: OrderedDict[str, _Call] = OrderedDict()
        self._max_evicted = max_recent
        self._recent: deque[dict[str, Any]] = deque(maxlen=max_recent)
        self._ended: dict[Outcome, int] = dict.fromkeys(typing.get_args(Outcome), 0)
        self._unmatched: dict[Unmatched, int] = dict.fromkeys(typing.get_args(Unmatched), 0)
        self._evictions = 0
        self._setup_counts = [0] * (len(SETUP_BUCKETS_S) + 1)
        self._setup_sum = 0.0

    # Feeding ---------------------------------------------------------------------------

    def worker_up(self, hello: Hello) -> list[dict[str, Any]]:
        """A worker said hello: list it as up with its announced capacity.

        Returns:
            The calls ended because the same worker id was still up (its previous process
            died unnoticed), usually none.
        """
        ended: list[dict[str, Any]] = []
        wid = hello.worker_id
        old = self._workers.get(wid)
        if old is not None and old.state != "down":
            ended = self.worker_down(wid, f"replaced by a new process (pid {hello.pid})")
        if wid not in self._workers and len(self._workers) >= self._max_workers:
            down = [w for w in self._workers.values() if w.state == "down"]
            if not down:
                self._unmatched["worker_limit"] += 1
                return ended
            oldest = min(down, key=lambda w: w.down_at or 0.0)
            del self._workers[oldest.hello.worker_id]
        self._workers[wid] = _Worker(hello, up_at=self._clock(), capacity=hello.capacity)
        return ended

    def worker_load(self, worker_id: str, load: Load) -> None:
        """A worker reported its load; ``draining`` moves it between up and draining."""
        worker = self._up_worker(worker_id)
        if worker is None:
            return
        worker.active = load.active
        worker.capacity = load.capacity
        worker.state = "draining" if load.draining else "up"

    def worker_down(self, worker_id: str, reason: str) -> list[dict[str, Any]]:
        """A worker's process or connection is gone: end every call it held.

        Args:
            worker_id: The worker.
            reason: What happened, e.g. ``exit code -9`` or the channel's reason.

        Returns:
            One ended call per call that was live on it, with ``end_reason``
            ``worker <id> died: <reason>``, outcome ``worker_died`` and a record made from
            what the directory knew. Empty when the worker is unknown or already down.
        """
        worker = self._workers.get(worker_id)
        if worker is None or worker.state == "down":
            return []
        now = self._clock()
        end_reason = f"worker {worker_id} died: {reason}"[:_MAX_REASON_CHARS]
        ended = []
        for call in list(worker.calls.values()):
            record = {
                "sip_call_id": call.offered.sip_call_id, "route": call.route,
                "agent": call.agent, "answered": call.started_at is not None,
                "codec": call.codec, "end_reason": end_reason, "sip_status": None,
            }
            ended.append(self._end(worker, call, end_reason, "worker_died", record, now))
        for call_id in [k for k, c in self._evicted.items() if c.worker_id == worker_id]:
            del self._evicted[call_id]  # judged stale when evicted; nothing to record
        worker.state = "down"
        worker.active = 0
        worker.down_at = now
        worker.down_reason = reason[:_MAX_REASON_CHARS]
        return ended

    def on_message(self, worker_id: str, msg: WorkerMessage) -> list[dict[str, Any]]:
        """Apply one message received from ``worker_id``'s channel.

        ``Hello`` and ``Load`` go to :meth:`worker_up` and :meth:`worker_load`; tool requests
        and command results are not the directory's business and are ignored.

        Returns:
            The calls this message ended (a ``CallEnded``, or a ``Hello`` replacing a worker
            that was still up), for the caller to persist.
        """
        if isinstance(msg, Hello):
            if msg.worker_id == worker_id:
                return self.worker_up(msg)
            self._unmatched["wrong_worker"] += 1
        elif isinstance(msg, Load):
            self.worker_load(worker_id, msg)
        elif isinstance(msg, CallOffered):
            self._offered(worker_id, msg)
        elif isinstance(msg, RelayOffered):
            call = self._live_call(worker_id, msg.call_id)
            if call is not None:
                call.kind, call.route = "relayed", msg.route
        elif isinstance(msg, CallStarted):
            self._started(worker_id, msg)
        elif isinstance(msg, CallEvent):
            self._event(worker_id, msg)
        elif isinstance(msg, CallEnded):
            return self._call_ended(worker_id, msg)
        elif isinstance(msg, (ToolRequest, CommandResult)):
            pass
        else:
            assert_never(msg)
        return []

    def _up_worker(self, worker_id: str) -> _Worker | None:
        worker = self._workers.get(worker_id)
        if worker is None or worker.state == "down":
            self._unmatched["unknown_worker"] += 1
            return None
        return worker

    def _live_call(self, worker_id: str, call_id: str) -> _Call | None:
        if self._up_worker(worker_id) is None:
            return None
        call = self._calls.get(call_id)
        if call is None:
            self._unmatched["unknown_call"] += 1
            return None
        if call.worker_id != worker_id:
            self._unmatched["wrong_worker"] += 1
            return None
        return call

    def _offered(self, worker_id: str, msg: CallOffered) -> None:
        worker = self._up_worker(worker_id)
        if worker is None:
            return
        if msg.call_id in self._calls:
            self._unmatched["duplicate_call"] += 1
            return
        if len(worker.calls) >= worker.live_limit:
            self._evict(worker)
        call = _Call(worker_id, msg)
        worker.calls[msg.call_id] = call
        self._calls[msg.call_id] = call

    def _evict(self, worker: _Worker) -> None:
        # A call still in setup is the likelier leftover of a lost end than an answered one.
        victim = next((c for c in worker.calls.values() if c.started_at is None), None)
        if victim is None:
            victim = next(iter(worker.calls.values()))
        call_id = victim.offered.call_id
        del worker.calls[call_id]
        del self._calls[call_id]
        self._evicted[call_id] = victim
        while len(self._evicted) > self._max_evicted:
            self._evicted.popitem(last=False)
        self._evictions += 1

    def _started(self, worker_id: str, msg: CallStarted) -> None:
        call = self._live_call(worker_id, msg.call_id)
        if call is None:
            return
        call.route, call.agent, call.codec = msg.route, msg.agent, msg.codec
        if call.started_at is None:
            call.started_at = now = self._clock()
            call.state = "started"
            self._observe_setup(max(0.0, now - call.offered.time))

    def _event(self, worker_id: str, msg: CallEvent) -> None:
        call = self._live_call(worker_id, msg.call_id)
        if call is None:
            return
        if msg.kind == "levels":  # a meter's samples (4/s while watched), not call activity
            return
        call.events[msg.kind] = call.events.get(msg.kind, 0) + 1
        state = msg.data.get("state") if msg.kind == "state" else None
        if isinstance(state, str) and state:
            call.state = state[:_MAX_STATE_CHARS]
        agent = msg.data.get("to_agent") if msg.kind == "handoff" else None
        if isinstance(agent, str) and agent:
            call.agent = agent[:128]  # the agent speaking now

    def _call_ended(self, worker_id: str, msg: CallEnded) -> list[dict[str, Any]]:
        evicted = self._evicted.get(msg.call_id)
        if (msg.call_id not in self._calls and evicted is not None
                and evicted.worker_id == worker_id and self._up_worker(worker_id) is not None):
            call: _Call | None = self._evicted.pop(msg.call_id)
        else:
            call = self._live_call(worker_id, msg.call_id)
        if call is None:
            return []
        outcome = outcome_of(msg.reason, answered=call.started_at is not None)
        worker = self._workers[worker_id]
        return [self._end(worker, call, msg.reason, outcome, dict(msg.record), self._clock())]

    def _end(self, worker: _Worker, call: _Call, reason: str, outcome: Outcome,
             record: dict[str, Any], now: float) -> dict[str, Any]:
        call_id = call.offered.call_id
        worker.calls.pop(call_id, None)
        if self._calls.get(call_id) is call:
            del self._calls[call_id]
        entry = call.view(now)
        entry.update(live=False, state="ended", ended_at=now, end_reason=reason,
                     outcome=outcome, record=record)
        kept = entry if _json_size(record) <= RECORD_KEEP_BYTES else {**entry, "record": None}
        self._recent.append(kept)
        self._ended[outcome] += 1
        return entry

    def _observe_setup(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(SETUP_BUCKETS_S) if seconds <= bound),
                     len(SETUP_BUCKETS_S))
        self._setup_counts[index] += 1
        self._setup_sum += seconds

    # Queries -----------------------------------------------------------------------------

    def live_calls(self) -> list[dict[str, Any]]:
        """Every live call across workers, in the order they were offered."""
        now = self._clock()
        return [call.view(now) for call in self._calls.values()]

    def call(self, call_id: str) -> dict[str, Any] | None:
        """A live call, else the most recent ended call with this id, else ``None``."""
        live = self._calls.get(call_id)
        if live is not None:
            return live.view(self._clock())
        for entry in reversed(self._recent):
            if entry["call_id"] == call_id:
                return dict(entry)
        return None

    def workers(self) -> list[dict[str, Any]]:
        """Every known worker (down ones included until forgotten), by worker id."""
        return [self._workers[wid].view() for wid in sorted(self._workers)]

    def recent(self, limit: int = MAX_RECENT) -> list[dict[str, Any]]:
        """Ended calls, newest first, at most ``limit``."""
        return [dict(e) for e in itertools.islice(reversed(self._recent), max(0, limit))]

    def stats(self) -> DirectoryStats:
        """The counters and gauges behind the metrics, taken together."""
        cumulative = tuple(itertools.accumulate(self._setup_counts[:-1]))
        by_state: dict[WorkerState, int] = dict.fromkeys(typing.get_args(WorkerState), 0)
        for worker in self._workers.values():
            by_state[worker.state] += 1
        return DirectoryStats(
            ended=dict(self._ended), evicted=self._evictions, unmatched=dict(self._unmatched),
            setup_buckets=cumulative, setup_count=sum(self._setup_counts),
            setup_sum_s=self._setup_sum,
            live_by_worker={wid: len(w.calls) for wid, w in self._workers.items()},
            workers_by_state=by_state,
        )


def _json_size(value: Mapping[str, Any]) -> int:
    # ASCII-only output, so characters are bytes.
    return len(json.dumps(value, separators=(",", ":")))
