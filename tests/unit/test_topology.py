"""gateway.control.topology: which processes a configuration asks for."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings, TransportSettings
from gateway.control.topology import front_spec, plan
from gateway.sip.message import FrontSource, front_source

pytestmark = pytest.mark.unit


def sip(**changes: Any) -> Settings:
    base = Settings()
    return dataclasses.replace(base, sip=dataclasses.replace(base.sip, **changes))


def test_the_default_is_one_worker_on_loopback_without_a_front() -> None:
    p = plan(Settings(), cpus=2)
    assert not p.front
    assert [w.worker_id for w in p.workers] == ["w1"]
    assert p.workers[0].rtp_port_start == Settings().sip.rtp_port_start


def test_a_public_transport_turns_the_front_on_with_a_worker_per_core() -> None:
    p = plan(sip(transports=(TransportSettings(host="192.0.2.5", port=5060),)), cpus=4)
    assert p.front
    assert "192.0.2.5" in p.why
    assert len(p.workers) == 4


def test_workers_get_their_own_ports_and_disjoint_even_rtp_ranges() -> None:
    p = plan(sip(workers=3, rtp_port_start=20000, rtp_port_range=1001,
                 worker_port_start=5300), cpus=2)
    assert p.front  # more than one worker needs the front
    assert [w.sip_port for w in p.workers] == [5300, 5301, 5302]
    ranges = [(w.rtp_port_start, w.rtp_port_start + w.rtp_port_range) for w in p.workers]
    assert ranges == [(20000, 20332), (20332, 20664), (20664, 20996)]
    assert all(w.rtp_port_range % 2 == 0 for w in p.workers)


def test_front_none_keeps_one_worker_and_front_kamailio_forces_the_front() -> None:
    assert not plan(sip(front="none"), cpus=8).front
    forced = plan(sip(front="kamailio"), cpus=1)
    assert forced.front
    assert len(forced.workers) == 2  # a worker's death never leaves the address empty


def test_front_spec_dispatches_to_every_worker_with_its_capacity(tmp_path: Path) -> None:
    settings = sip(workers=2, transports=(TransportSettings(host="127.0.0.1", port=5070),))
    p = plan(settings, cpus=2)
    spec = front_spec(settings, p.workers, 3, tmp_path)
    assert [(w.id, w.port, w.capacity) for w in spec.workers] == [("w1", 5200, 3),
                                                                ("w2", 5201, 3)]
    assert [(ln.transport, ln.port) for ln in spec.listen] == [("udp", 5070)]
    assert spec.trunk_allow == settings.sip.trunk_allow


@pytest.mark.parametrize(("value", "expected"), [
    ("192.0.2.7;port=5062;proto=tcp;account=trunk", FrontSource("192.0.2.7", 5062, "tcp",
                                                                "trunk")),
    ("2001:db8::1;port=5060;proto=udp", FrontSource("2001:db8::1", 5060, "udp", None)),
    (" 10.0.0.1 ; PORT=7 ; proto=TLS ", FrontSource("10.0.0.1", 7, "tls", None)),
])
def test_front_source_header_is_parsed(value: str, expected: FrontSource) -> None:
    assert front_source(value) == expected


@pytest.mark.parametrize("value", ["", "example.com;port=1", "10.0.0.1;port=x",
                                   "10.0.0.1;port=70000", "10.0.0.1;proto=sctp"])
def test_a_malformed_front_source_header_is_not_trusted(value: str) -> None:
    assert front_source(value) is None


def test_the_front_rate_limit_follows_the_setting(tmp_path: Path) -> None:
    settings = sip(workers=2, front_invites_per_s=30)
    spec = front_spec(settings, plan(settings, cpus=2).workers, 3, tmp_path)
    assert spec.pike is not None and spec.pike.reqs_density_per_unit == 60
    off = sip(workers=2, front_invites_per_s=0)
    assert front_spec(off, plan(off, cpus=2).workers, 3, tmp_path).pike is None
