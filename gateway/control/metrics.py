"""Prometheus metrics of the control process, in a registry of its own.

:class:`ControlMetrics` owns one ``CollectorRegistry`` per control application (never the
global one, so tests and several applications in one process do not clash). Call and worker
metrics are read from the :class:`~gateway.control.directory.CallDirectory` at scrape time,
from one :class:`~gateway.control.directory.DirectoryStats` snapshot, so a scrape is
consistent and nothing is counted twice; what only the supervisor and the IPC channels see
(restarts, dropped messages) is counted through :meth:`ControlMetrics.worker_restarted` and
:meth:`ControlMetrics.ipc_dropped`. Labels come from closed sets or worker ids (as many as
there are workers), never call ids, numbers or reasons. ``docs/control.md`` lists the metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from gateway.control.directory import SETUP_BUCKETS_S, CallDirectory, DirectoryStats
from gateway.control.record_metrics import RecordMetrics

__all__ = ["ControlMetrics"]

_CALLS_ACTIVE: Final = "gateway_calls_active"
_CALLS_TOTAL: Final = "gateway_calls_total"
_CALLS_EVICTED: Final = "gateway_calls_evicted_total"
_CALL_SETUP: Final = "gateway_call_setup_seconds"
_WORKERS: Final = "gateway_workers"
_IPC_UNMATCHED: Final = "gateway_ipc_unmatched_total"


class ControlMetrics:
    """The metrics of one control application and the registry they are exposed from.

    Args:
        directory: Source of the call and worker metrics.
        process: Also export the standard ``process_*`` metrics (CPU, memory, open files)
            of this process.
    """

    def __init__(self, directory: CallDirectory, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_DirectoryCollector(directory))
        if process:
            ProcessCollector(registry=self.registry)
        self._restarts = Counter(
            "gateway_worker_restarts", "SIP worker processes restarted by the supervisor.",
            registry=self.registry)
        self._ipc_dropped = Counter(
            "gateway_ipc_dropped",
            "Droppable IPC messages (load, call_event) dropped by a full outbox.",
            registry=self.registry)
        #: Counted from finished call records (tools, guardrails, tokens, cost).
        self.records = RecordMetrics(self.registry)

    def worker_restarted(self) -> None:
        """Count one worker restart (not its first start)."""
        self._restarts.inc()

    def ipc_dropped(self, count: int = 1) -> None:
        """Count ``count`` more dropped IPC messages, e.g. the growth of ``IpcChannel.dropped``.

        Raises:
            ValueError: ``count`` is negative.
        """
        if count < 0:
            raise ValueError("a dropped-message count cannot decrease")
        if count:
            self._ipc_dropped.inc(count)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for an HTTP ``Accept`` header, and its content type.

        Prometheus text format unless ``accept`` asks for OpenMetrics.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _DirectoryCollector:
    """Reads a :class:`CallDirectory` at scrape time."""

    def __init__(self, directory: CallDirectory) -> None:
        self._directory = directory

    def describe(self) -> Iterable[Metric]:
        # Names only, so that registering does not depend on (or run) a scrape.
        return _families(None)

    def collect(self) -> Iterable[Metric]:
        return _families(self._directory.stats())


def _families(stats: DirectoryStats | None) -> list[Metric]:
    active = GaugeMetricFamily(
        _CALLS_ACTIVE, "Live calls (offered or started) per SIP worker.", labels=["worker"])
    total = CounterMetricFamily(
        _CALLS_TOTAL, "Calls ended, by outcome: ok, refused, unanswered, failed, worker_died.",
        labels=["outcome"])
    evicted = CounterMetricFamily(
        _CALLS_EVICTED,
        "Live calls dropped from the directory because a worker exceeded twice its capacity.")
    setup = HistogramMetricFamily(
        _CALL_SETUP, "Time from call_offered to call_started (answered and bridged).",
        unit="seconds")
    workers = GaugeMetricFamily(_WORKERS, "Known SIP workers by state.", labels=["state"])
    unmatched = CounterMetricFamily(
        _IPC_UNMATCHED, "IPC messages the call directory ignored, by kind.", labels=["kind"])
    families: list[Metric] = [active, total, evicted, setup, workers, unmatched]
    if stats is None:
        return families
    for worker_id, live in sorted(stats.live_by_worker.items()):
        active.add_metric([worker_id], live)
    for outcome, count in stats.ended.items():
        total.add_metric([outcome], count)
    evicted.add_metric([], stats.evicted)
    buckets = [(repr(float(bound)), float(count))
               for bound, count in zip(SETUP_BUCKETS_S, stats.setup_buckets, strict=True)]
    buckets.append(("+Inf", float(stats.setup_count)))
    setup.add_metric([], buckets, sum_value=stats.setup_sum_s)
    for state, count in stats.workers_by_state.items():
        workers.add_metric([state], count)
    for kind, count in stats.unmatched.items():
        unmatched.add_metric([kind], count)
    return families
