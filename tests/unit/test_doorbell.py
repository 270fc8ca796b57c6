"""The SIP thread's doorbell (gateway/sip/doorbell.py) against real UDP sockets on 127.0.0.1.

That pjsip ends its poll on the bell and ignores it is checked with the real endpoint in
``tests/sip/test_harness.py`` (``test_a_command_wakes_the_sip_thread_at_once``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from gateway.sip.doorbell import RING, Doorbell, ring_address

pytestmark = pytest.mark.unit


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def _pending(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out: list[bytes] = []
    try:
        while True:
            out.append(sock.recv(64))
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(2.0)


@pytest.mark.parametrize(("host", "expected"), [
    ("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("[::]", "::1"), ("127.0.0.5", "127.0.0.5"),
    ("192.0.2.10", "192.0.2.10"), ("[2001:db8::1]", "2001:db8::1"), ("localhost", "localhost"),
])
def test_the_bell_goes_to_loopback_for_a_wildcard_bind_and_to_the_address_otherwise(
        host: str, expected: str) -> None:
    assert ring_address(host) == expected


def test_a_ring_is_one_short_datagram_well_under_pjsips_floor(listener: socket.socket) -> None:
    bell = Doorbell("0.0.0.0", listener.getsockname()[1])
    try:
        bell.ring()
        data = listener.recv(64)
    finally:
        bell.close()
    assert data == RING
    assert len(data) <= 32  # sip_transport_udp.c drops these unparsed
    assert bell.target == ("127.0.0.1", listener.getsockname()[1])


def test_rings_before_the_answer_coalesce_into_one_datagram(listener: socket.socket) -> None:
    bell = Doorbell("127.0.0.1", listener.getsockname()[1])
    try:
        for _ in range(50):
            bell.ring()
        assert listener.recv(64) == RING
        assert _pending(listener) == []
        assert bell.rings == 1
        bell.answer()
        bell.ring()
        bell.ring()
        assert listener.recv(64) == RING
        assert _pending(listener) == []
        assert bell.rings == 2
    finally:
        bell.close()


def test_a_closed_bell_stays_silent(listener: socket.socket) -> None:
    bell = Doorbell("127.0.0.1", listener.getsockname()[1])
    bell.close()
    bell.answer()
    bell.ring()
    assert _pending(listener) == []
    assert bell.rings == 0


def test_a_failing_send_is_said_once_and_the_bell_tries_again(
        caplog: pytest.LogCaptureFixture) -> None:
    # 192.0.2.0/24 (TEST-NET-1) with no route is not guaranteed, so make the send fail for
    # real another way: a broadcast address without SO_BROADCAST is refused (EACCES).
    bell = Doorbell("255.255.255.255", 9)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.sip.doorbell"):
            bell.ring()
            bell.ring()  # not swallowed as "already rung": the failed ring did not count
        assert bell.rings == 0
        warnings = [r for r in caplog.records if "doorbell" in r.getMessage()]
        assert len(warnings) == 1
        assert "poll timeout" in warnings[0].getMessage()
    finally:
        bell.close()


def test_an_unresolvable_host_is_an_oserror() -> None:
    with pytest.raises(OSError):
        Doorbell("no-such-host.invalid", 5060)
