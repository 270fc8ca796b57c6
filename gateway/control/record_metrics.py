"""Prometheus metrics from finished call records: by kind, tools, guardrails, tokens and cost.

:class:`RecordMetrics` reads each finished call's record once (a SIP worker's ``call_ended``
record, or a webhook call's sideband record) and counts what it says. Labels come from closed
sets only (kind, direction, ok, guardrail action, token kind), never names, numbers or reasons;
the one open label, a Realtime error's code, is bounded: the first :data:`MAX_ERROR_CODES`
codes seen get their own series, later ones count under ``other``.
A relayed call has two records, the worker's (the call) and the sideband's (its agent): the
call is counted from the first, its agent's activity from the second, so nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.calls.usage import KINDS

__all__ = ["MAX_ERROR_CODES", "RecordMetrics"]

_KINDS: Final = ("bridged", "relayed", "direct")
_DIRECTIONS: Final = ("inbound", "outbound")
_ACTIONS: Final = ("say", "retry", "transfer", "hangup", "cancel", "other")
_TOOL_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TURN_BUCKETS: Final = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
#: Error codes with a series of their own (the rest: ``other``).
MAX_ERROR_CODES: Final = 32


class RecordMetrics:
    """Counters fed by finished call records (module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._calls = Counter("gateway_calls_finished", "Calls finished, by kind and direction.",
                              ["kind", "direction"], registry=registry)
        self._tools = Counter("gateway_tool_calls", "Tool calls by the agents, by outcome.",
                              ["ok"], registry=registry)
        self._tool_seconds = Histogram("gateway_tool_duration_seconds",
                                       "How long the agents' tool calls took.",
                                       buckets=_TOOL_BUCKETS, registry=registry)
        self._handoffs = Counter("gateway_handoffs", "Handoffs between agents.",
                                 registry=registry)
        self._guardrails = Counter("gateway_guardrail_trips", "Output guardrails tripped, by "
                                   "action.", ["action"], registry=registry)
        self._tokens = Counter("gateway_realtime_tokens", "Realtime API tokens used, by kind.",
                               ["kind"], registry=registry)
        self._cost = Counter("gateway_realtime_cost_usd", "What the Realtime API tokens cost, "
                             "US dollars (by the calls' price table).", registry=registry)
        self._turns = Histogram("gateway_turn_latency_seconds",
                                "Caller's speech stop to the agent's first audio, as the gateway "
                                "sees the Realtime API (gateway.calls.turns).",
                                buckets=_TURN_BUCKETS, registry=registry)
        self._errors = Counter("gateway_realtime_errors", "Realtime API error events, by code.",
                               ["code"], registry=registry)
        self._codes: set[str] = set()
        self._drops = Counter("gateway_realtime_drops", "Realtime connections that dropped "
                              "mid-call.", registry=registry)

    def observe(self, record: Mapping[str, Any]) -> None:
        """Count one finished call's record (never raises on odd content)."""
        kind = _choice(record.get("kind"), _KINDS, "bridged")
        sideband = "call_id" in record and "leg_id" not in record
        if not (sideband and kind == "relayed"):  # the worker's record counts the call
            direction = _choice(record.get("direction"), _DIRECTIONS, "inbound")
            self._calls.labels(kind, direction).inc()
        for tool in _dicts(record.get("tool_calls")):
            self._tools.labels("true" if tool.get("ok") else "false").inc()
            seconds = tool.get("duration_s")
            if isinstance(seconds, int | float) and seconds >= 0:
                self._tool_seconds.observe(float(seconds))
        handoffs = record.get("handoffs")
        if isinstance(handoffs, list) and handoffs:
            self._handoffs.inc(len(handoffs))
        for trip in _dicts(record.get("guardrail_events")):
            self._guardrails.labels(_choice(trip.get("action"), _ACTIONS, "other")).inc()
        usage = record.get("usage")
        if isinstance(usage, Mapping):
            for token_kind in KINDS:
                count = usage.get(token_kind)
                if isinstance(count, int) and count > 0:
                    self._tokens.labels(token_kind).inc(count)
        cost = record.get("cost_usd")
        if isinstance(cost, int | float) and cost > 0:
            self._cost.inc(float(cost))
        latencies = record.get("turn_latency_ms")
        for ms in latencies if isinstance(latencies, list) else ():
            if isinstance(ms, int | float) and ms >= 0:
                self._turns.observe(ms / 1000)
        errors = record.get("realtime_errors")
        if isinstance(errors, Mapping):
            for code, count in errors.items():
                if isinstance(code, str) and isinstance(count, int) and count > 0:
                    self._errors.labels(self._code(code)).inc(count)
        realtime = record.get("realtime")
        if isinstance(realtime, Mapping):
            drops = realtime.get("drops")
            if isinstance(drops, int) and drops > 0:
                self._drops.inc(drops)

    def _code(self, code: str) -> str:
        code = code[:64]
        if code in self._codes:
            return code
        if len(self._codes) >= MAX_ERROR_CODES:
            return "other"
        self._codes.add(code)
        return code


def _choice(value: Any, allowed: tuple[str, ...], default: str) -> str:
    return value if isinstance(value, str) and value in allowed else default


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
