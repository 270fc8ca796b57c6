"""Who holds a socket address: the front's guard against a second listener on its ports.

Kamailio sets ``SO_REUSEADDR`` on its UDP sockets, so a second Kamailio (say, one left behind
by a killed control process) binds the same UDP port next to the first and the kernel picks
which one gets each datagram (``reference/scale-front.md``, trap 3). Before starting, the
adapter probes each listen address with a bind that refuses to share it (UDP without
``SO_REUSEADDR``; TCP with it, which only fails on a live listener, not on ``TIME_WAIT``).
After starting, it reads ``/proc/net/{udp,tcp}[6]`` and ``/proc/<pid>/fd`` to check that
every socket on those addresses is Kamailio's own, and after a ``SIGKILL`` which members of
its process group are still alive. Linux only; the functions here are small,
synchronous and fast (a few ``/proc`` reads).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from pathlib import Path

_TCP_LISTEN = "0A"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def address_in_use(transport: str, host: str, port: int) -> bool:
    """Whether binding ``host:port`` for ``transport`` would have to share it with someone."""
    stream = transport != "udp"
    kind = socket.SOCK_STREAM if stream else socket.SOCK_DGRAM
    with socket.socket(_family(host), kind) as probe:
        if stream:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _decode_address(hex_addr: str) -> tuple[str, int]:
    addr, _, port = hex_addr.partition(":")
    raw = bytes.fromhex(addr)
    # /proc/net prints the address as 32-bit words in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw)), int(port, 16)


def socket_inodes(transport: str, host: str, port: int) -> set[int]:
    """Inodes of the sockets bound to ``host:port`` or the wildcard on that port.

    For TCP and TLS only listening sockets count.
    """
    proto = "udp" if transport == "udp" else "tcp"
    wanted = ipaddress.ip_address(host)
    inodes: set[int] = set()
    for suffix in ("", "6"):
        try:
            lines = Path(f"/proc/net/{proto}{suffix}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            try:
                addr, bound_port = _decode_address(fields[1])
            except ValueError:
                continue
            if bound_port != port or (proto == "tcp" and fields[3] != _TCP_LISTEN):
                continue
            ip = ipaddress.ip_address(addr)
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            if ip == wanted or mapped == wanted or ip.is_unspecified:
                inodes.add(int(fields[9]))
    return inodes


def process_socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open (empty if it cannot be read)."""
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for entry in entries:
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def descendant_pids(pid: int) -> list[int]:
    """Every live process below ``pid`` (its children, theirs...), best effort."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                out += kids
                todo += kids
    return out


def socket_owners(inodes: set[int], limit: int = 3) -> list[str]:
    """``pid (name)`` of up to ``limit`` processes holding any of ``inodes``, best effort."""
    found: list[str] = []
    if not inodes:
        return found
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        if process_socket_inodes(int(proc.name)) & inodes:
            try:
                name = (proc / "comm").read_text().strip()
            except OSError:
                name = "?"
            found.append(f"{proc.name} ({name})")
            if len(found) >= limit:
                break
    return found


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that have not exited yet.

    Zombies do not count: they hold no sockets any more.
    """
    members: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members
