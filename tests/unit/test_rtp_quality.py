"""A call record's ``rtp`` from pjsua2's RTCP statistics (gateway.sip.legs.rtp_quality)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.sip.legs import rtp_quality

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def _stream(pkt: int, loss: int, jitter_mean_us: float, jitter_max_us: float,
            discard: int = 0) -> SimpleNamespace:
    return SimpleNamespace(pkt=pkt, loss=loss, discard=discard,
                           jitterUsec=SimpleNamespace(mean=jitter_mean_us, max=jitter_max_us))


def test_packets_loss_and_jitter_in_ms() -> None:
    rtcp = SimpleNamespace(rxStat=_stream(1500, 3, 1234.0, 20500.0, discard=1),
                           txStat=_stream(1498, 0, 800.0, 900.0),
                           rttUsec=SimpleNamespace(mean=2500.0))
    assert rtp_quality(rtcp) == {
        "rx_packets": 1500, "rx_lost": 3, "rx_discarded": 1, "rx_jitter_ms_mean": 1.23,
        "rx_jitter_ms_max": 20.5, "tx_packets": 1498, "tx_lost": 0, "tx_jitter_ms_mean": 0.8,
        "rtt_ms_mean": 2.5}
