"""Ports for test peers: distinct across every test process on the machine, never the kernel's.

A port that the kernel picked for ``bind(0)``, and that the harness then closed to hand to a
peer, can go to any other process's ``bind(0)`` or outgoing socket before the peer binds it:
CI once lost a soak test to SIPp failing to bind such a port for its control socket
("Address already in use"). So the ports given out here come from a pool outside the
kernel's ephemeral range (``net.ipv4.ip_local_port_range``) and outside the gateway's default
RTP range, which the kernel never hands out by itself; and they are given out in turn, from a
counter in one file shared by every process under an exclusive ``flock``, so two test
processes (CI runs tiers side by side) never get the same port until the pool wraps round.
Each port is also checked free for UDP and TCP on 127.0.0.1 before it is given, which skips
ports still held by a long-lived peer after a wrap.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

#: The counter shared by every test process on this machine.
STATE_FILE = Path("/tmp/gateway-test-ports.state")
#: Never give out ports below this (well-known services, Kamailio's 5060, PostgreSQL's 5432).
POOL_LOW = 10_000
#: The gateway's default ``sip.rtp_port_start``/``rtp_port_range``: a gateway started on its
#: defaults (the docker tier, a user's try) uses these.
DEFAULT_RTP = range(20_000, 22_000)
_PROTOS = (socket.SOCK_DGRAM, socket.SOCK_STREAM)


class PortError(RuntimeError):
    """No run of free ports of the asked length was found in the pool."""


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    """The kernel's ephemeral port range (32768-60999 when it cannot be read)."""
    try:
        low, high = (int(field) for field in path.read_text().split())
    except (OSError, ValueError):
        low, high = 32_768, 60_999
    return range(low, high + 1)


def pool(ephemeral: range) -> range:
    """The largest run of ports in ``POOL_LOW``-65535 outside ``ephemeral`` and ``DEFAULT_RTP``.

    Raises:
        PortError: The ephemeral range leaves no such port.
    """
    cuts = sorted([(ephemeral.start, ephemeral.stop), (DEFAULT_RTP.start, DEFAULT_RTP.stop)])
    runs: list[range] = []
    start = POOL_LOW
    for low, high in cuts:
        if low > start:
            runs.append(range(start, low))
        start = max(start, high)
    if start < 65_536:
        runs.append(range(start, 65_536))
    if not runs:
        raise PortError(f"the ephemeral range {ephemeral.start}-{ephemeral.stop - 1} leaves "
                        f"no ports at or above {POOL_LOW} for tests")
    return max(runs, key=len)


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound right now, for UDP and for TCP."""
    for kind in _PROTOS:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def reserve(count: int = 1, *, align: int = 1, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports, starting at a multiple of ``align``.

    The run is this process's: the shared counter moves past it before the lock is let go.

    Raises:
        PortError: The pool holds no such run (it is smaller than ``count``, or all taken).
    """
    ports = pool(ephemeral_range())
    if count < 1 or count > len(ports):
        raise PortError(f"cannot reserve {count} ports from a pool of {len(ports)}")
    fd = os.open(STATE_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        nxt = int(raw) if raw.isdigit() else ports.start + os.getpid() % len(ports)
        base = _first_free_run(ports, nxt, count, align, host)
        state = str(base + count).encode("ascii")
        os.ftruncate(fd, 0)
        os.pwrite(fd, state, 0)
        return base
    finally:
        os.close(fd)  # closing the file lets go of the lock


def _first_free_run(ports: range, nxt: int, count: int, align: int, host: str) -> int:
    base = nxt
    for _ in range(2 * len(ports)):
        base += -base % align
        if base < ports.start or base + count > ports.stop:
            base = ports.start + -ports.start % align
        taken = next((p for p in range(base, base + count) if not is_free(p, host)), None)
        if taken is None:
            return base
        base = taken + 1
    raise PortError(f"no run of {count} free ports in {ports.start}-{ports.stop - 1}")


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that no other test process has been given and that is free right now."""
    return reserve(1, host=host)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port that no other test process has been given and that is free right now."""
    return reserve(1, host=host)


def free_udp_port_block(count: int = 4, host: str = "127.0.0.1") -> int:
    """An even UDP port ``p`` with ``p .. p+count-1`` all this process's and free right now.

    RTP peers use a block: SIPp's ``-mp`` port plus RTCP and video ports, pjsua RTP+RTCP pairs.
    """
    return reserve(count, align=2, host=host)
