"""Metrics counted from finished call records."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.control.record_metrics import MAX_ERROR_CODES, RecordMetrics

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def test_records_feed_the_counters_and_a_relayed_call_counts_once() -> None:
    registry = CollectorRegistry()
    metrics = RecordMetrics(registry)
    metrics.observe({"leg_id": 1, "kind": "relayed", "direction": "inbound"})  # the worker's
    metrics.observe({"call_id": "rtc_1", "kind": "relayed", "sip_leg": "w1:1",  # its agent's
                     "tool_calls": [{"name": "t", "ok": True, "duration_s": 0.2},
                                    {"name": "t", "ok": False, "duration_s": 1.5}],
                     "handoffs": [{"from": "a", "to": "b"}],
                     "guardrail_events": [{"action": "say"}, {"action": "weird"}],
                     "usage": {"input_audio": 120, "output_audio": 300, "responses": 2},
                     "cost_usd": 0.0231})
    metrics.observe({"leg_id": 2, "kind": "bridged", "direction": "outbound",
                     "realtime": {"drops": 2}, "tool_calls": "junk", "usage": None})
    text = generate_latest(registry).decode()
    assert 'gateway_calls_finished_total{direction="inbound",kind="relayed"} 1.0' in text
    assert 'gateway_calls_finished_total{direction="outbound",kind="bridged"} 1.0' in text
    assert 'gateway_tool_calls_total{ok="true"} 1.0' in text
    assert 'gateway_tool_calls_total{ok="false"} 1.0' in text
    assert "gateway_tool_duration_seconds_count 2.0" in text
    assert "gateway_handoffs_total 1.0" in text
    assert 'gateway_guardrail_trips_total{action="say"} 1.0' in text
    assert 'gateway_guardrail_trips_total{action="other"} 1.0' in text
    assert 'gateway_realtime_tokens_total{kind="output_audio"} 300.0' in text
    assert "gateway_realtime_cost_usd_total 0.0231" in text
    assert "gateway_realtime_drops_total 2.0" in text


def test_turn_latencies_make_a_histogram_and_errors_count_by_a_bounded_code() -> None:
    registry = CollectorRegistry()
    metrics = RecordMetrics(registry)
    metrics.observe({"leg_id": 1, "turn_latency_ms": [150, 420, "junk", -5],
                     "realtime_errors": {"invalid_value": 2, "server_error": 1, "bad": "x"}})
    for n in range(MAX_ERROR_CODES + 3):
        metrics.observe({"leg_id": 2, "realtime_errors": {f"code_{n}": 1}})
    text = generate_latest(registry).decode()
    assert "gateway_turn_latency_seconds_count 2.0" in text
    assert 'gateway_turn_latency_seconds_bucket{le="0.2"} 1.0' in text
    assert 'gateway_turn_latency_seconds_bucket{le="0.5"} 2.0' in text
    assert 'gateway_realtime_errors_total{code="invalid_value"} 2.0' in text
    assert 'gateway_realtime_errors_total{code="server_error"} 1.0' in text
    # Two codes came first, so 30 of the 35 new ones get a series; 5 count as "other".
    assert 'gateway_realtime_errors_total{code="other"} 5.0' in text
    assert text.count("gateway_realtime_errors_total{") == MAX_ERROR_CODES + 1
