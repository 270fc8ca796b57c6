"""Packet capture on the loopback interface with tcpdump, and a small pcap reader.

:class:`Capture` runs ``tcpdump -i lo -U -w FILE FILTER`` as a bounded
:class:`~tests.support.procs.ManagedProcess`, returns only once tcpdump is really capturing
(it has said ``listening on`` and the file has its 24-byte pcap header, which ``-U`` writes
at once), and stops it with ``SIGINT`` so it flushes and prints its counters.

:func:`read_pcap` is pure: it reads classic pcap files (micro- or nanosecond timestamps,
either byte order) with the link types tcpdump writes for these captures. Measured here:
``-i lo`` writes ``EN10MB`` (an Ethernet header of zero addresses); ``-i any`` writes
``LINUX_SLL`` (or ``LINUX_SLL2`` with ``-y``); raw IP is accepted too. Only IPv4 UDP datagrams
are returned (fragments are skipped); everything else is ignored. No scapy.
"""

from __future__ import annotations

import os
import re
import signal
import struct
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.procs import ManagedProcess
from tests.support.rtp import Packet

__all__ = ["Capture", "Packet", "read_pcap", "write_pcap"]

#: pcap link types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_EN10MB = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL2 = 276

_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_VLAN = 0x8100
_IPPROTO_UDP = 17
_PCAP_HEADER_BYTES = 24


def _ip(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def _ipv4_udp(ts: float, data: bytes) -> Packet | None:
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    total = int.from_bytes(data[2:4], "big")
    flags_frag = int.from_bytes(data[6:8], "big")
    if data[9] != _IPPROTO_UDP or flags_frag & 0x3FFF:  # not UDP, or a fragment
        return None
    ip_end = min(total, len(data)) if total else len(data)
    udp = data[ihl:ip_end]
    if len(udp) < 8:
        return None
    sport, dport, length = struct.unpack_from("!HHH", udp)
    payload = udp[8:length] if 8 <= length <= len(udp) else udp[8:]
    return Packet(ts, _ip(data[12:16]), sport, _ip(data[16:20]), dport, bytes(payload))


def _network_layer(linktype: int, frame: bytes) -> bytes | None:
    """The IPv4 packet inside a link-layer frame, or ``None`` if it is not IPv4."""
    if linktype == LINKTYPE_EN10MB:
        offset, ethertype = 14, int.from_bytes(frame[12:14], "big")
        while ethertype == _ETHERTYPE_VLAN and len(frame) >= offset + 4:
            ethertype = int.from_bytes(frame[offset + 2:offset + 4], "big")
            offset += 4
        return frame[offset:] if ethertype == _ETHERTYPE_IPV4 else None
    if linktype == LINKTYPE_LINUX_SLL:
        return frame[16:] if int.from_bytes(frame[14:16], "big") == _ETHERTYPE_IPV4 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return frame[20:] if int.from_bytes(frame[0:2], "big") == _ETHERTYPE_IPV4 else None
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4):
        return frame
    if linktype == LINKTYPE_NULL:  # BSD loopback: host-order address family, 2 = AF_INET
        family = int.from_bytes(frame[0:4], "little")
        return frame[4:] if family == 2 or family == 0x02000000 else None
    raise ValueError(f"unsupported pcap link type {linktype}")


def read_pcap(path: Path) -> list[Packet]:
    """The IPv4 UDP datagrams in a classic pcap file, in file order.

    Raises:
        ValueError: Not a pcap file (pcapng is not supported), or an unsupported link type.
    """
    data = path.read_bytes()
    if len(data) < _PCAP_HEADER_BYTES:
        raise ValueError(f"{path}: too short for a pcap header ({len(data)} bytes)")
    for order in ("<", ">"):
        magic = struct.unpack_from(f"{order}I", data)[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            break
    else:
        raise ValueError(f"{path}: not a classic pcap file (magic {data[:4].hex()})")
    scale = 1e-9 if magic == _MAGIC_NS else 1e-6
    linktype = struct.unpack_from(f"{order}I", data, 20)[0] & 0x0FFFFFFF
    record = struct.Struct(f"{order}IIII")
    out: list[Packet] = []
    offset = _PCAP_HEADER_BYTES
    while offset + record.size <= len(data):
        sec, frac, caplen, _origlen = record.unpack_from(data, offset)
        offset += record.size
        frame = data[offset:offset + caplen]
        offset += caplen
        if len(frame) < caplen:  # truncated last record (capture killed mid-write)
            break
        ip = _network_layer(linktype, frame)
        if ip is None:
            continue
        pkt = _ipv4_udp(sec + frac * scale, ip)
        if pkt is not None:
            out.append(pkt)
    return out


def write_pcap(path: Path, packets: list[Packet]) -> None:
    """Write ``packets`` as a microsecond pcap with ``EN10MB`` framing, as ``tcpdump -i lo``.

    For fixtures; IPv4 header checksums and UDP checksums are left zero.
    """
    out = [struct.pack("<IHHiIII", _MAGIC_US, 2, 4, 0, 0, 262144, LINKTYPE_EN10MB)]
    for p in packets:
        udp = struct.pack("!HHHH", p.sport, p.dport, 8 + len(p.payload), 0) + p.payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64,
                         _IPPROTO_UDP, 0, bytes(int(x) for x in p.src.split(".")),
                         bytes(int(x) for x in p.dst.split(".")))
        frame = bytes(12) + _ETHERTYPE_IPV4.to_bytes(2, "big") + ip + udp
        sec = int(p.ts)
        usec = round((p.ts - sec) * 1e6)
        if usec == 1_000_000:
            sec, usec = sec + 1, 0
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


class Capture:
    """tcpdump on an interface for the duration of a ``with`` block.

    Args:
        path: The pcap file to write (its directory must exist); tcpdump's own output goes
            to ``path`` with suffix ``.tcpdump.log``.
        bpf_filter: A pcap filter, e.g. ``"udp and port 16000"``.
        interface: ``lo`` by default (all our peers are on 127.0.0.1).
        max_lifetime_s: Hard bound on tcpdump's life.
        start_timeout_s: How long to wait for tcpdump to start capturing.
        buffer_kib: The kernel capture buffer (``-B``); 0 keeps libpcap's 2 MiB. Under load
            (thousands of RTP packets a second, tcpdump sharing the cores) the default buffer
            overflows and the capture, not the sender, loses packets: see
            :attr:`dropped_by_kernel`.
        snaplen: Bytes kept of each packet (``-s``); 0 keeps all of it.
    """

    def __init__(self, path: Path, bpf_filter: str = "udp", *, interface: str = "lo",
                 max_lifetime_s: float = 300.0, start_timeout_s: float = 10.0,
                 buffer_kib: int = 0, snaplen: int = 0) -> None:
        self.path = path
        self.bpf_filter = bpf_filter
        self.interface = interface
        self.start_timeout_s = start_timeout_s
        # --immediate-mode: without it libpcap hands packets over in blocks or after a 1 s
        # timeout, and a capture stopped within that second loses them (measured: "18 packets
        # received by filter, 0 captured").
        argv = ["tcpdump", "-i", interface, "--immediate-mode", "-U", "-n", "-s", str(snaplen),
                "-w", str(path)]
        if buffer_kib:
            argv += ["-B", str(buffer_kib)]
        if os.geteuid() == 0:
            argv += ["-Z", "root"]  # keep root so it can write into a root-only tmp dir
        self._proc = ManagedProcess(
            [*argv, bpf_filter], log_path=path.with_suffix(".tcpdump.log"),
            name="tcpdump", max_lifetime_s=max_lifetime_s, stop_signal=signal.SIGINT,
            grace_s=5.0)

    def start(self) -> Self:
        """Start tcpdump and wait until it captures.

        Raises:
            ProcessError: tcpdump exited or did not start in time.
        """
        self._proc.start()
        try:
            self._proc.wait_ready(lambda log: "listening on" in log,
                                  timeout_s=self.start_timeout_s)
            self._proc.wait_ready(lambda _: self._has_header(), timeout_s=self.start_timeout_s)
        except BaseException:
            self._proc.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop tcpdump (``SIGINT``: it flushes the file) and wait for it."""
        self._proc.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def packets(self) -> list[Packet]:
        """The UDP datagrams captured so far (complete after :meth:`stop`)."""
        return read_pcap(self.path)

    @property
    def dropped_by_kernel(self) -> int | None:
        """tcpdump's "packets dropped by kernel" count, once it has stopped."""
        m = re.search(r"(\d+) packets? dropped by kernel", self._proc.log_text())
        return int(m.group(1)) if m else None

    def log_text(self) -> str:
        """tcpdump's own output."""
        return self._proc.log_text()

    def _has_header(self) -> bool:
        try:
            return self.path.stat().st_size >= _PCAP_HEADER_BYTES
        except FileNotFoundError:
            return False

