"""Waking the SIP thread out of ``libHandleEvents`` when the event loop queues a command.

The SIP thread spends its time in pjsip's ioqueue poll (``epoll_wait`` on the SIP sockets).
pjsua2 has no call that interrupts it, so a command the loop queued (answer, hang up, REFER)
used to wait for the poll's timeout, and the timeout had to be short (10 ms) while calls were
up: a hundred wake-ups a second, each taking the GIL, for nothing.

The doorbell is a datagram to the worker's own SIP UDP transport: its arrival ends the poll at
once. pjsip's UDP transport drops a datagram of 32 bytes or fewer before parsing it, without a
log line (``udp_on_read_complete`` in ``sip_transport_udp.c``, ``MIN_SIZE``), so the bell does
nothing else; anyone who can reach the port could send such datagrams anyway. It rings once
until the SIP thread answers (:meth:`Doorbell.answer`, before it takes its commands), so a
burst of commands costs one datagram.

Sending is the only I/O; which address to ring (:func:`ring_address`) is pure.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading

log = logging.getLogger(__name__)

#: What the bell sends: a blank line, well under pjsip's 32-byte floor (and the CRLF a SIP
#: keep-alive is made of, should anything on the path look at it).
RING = b"\r\n"


def ring_address(host: str) -> str:
    """The address to send the bell to for a transport bound to ``host``.

    A wildcard bind is reached on the loopback address of its family; a specific address is
    rung there (a local address is delivered on the host, whatever the interface).
    """
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host  # a name: resolved once, by the Doorbell
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return str(ip)


class Doorbell:
    """Rings a UDP port (any thread); one datagram until :meth:`answer`.

    Raises:
        OSError: The address does not resolve or no socket can be made for it.
    """

    def __init__(self, host: str, port: int) -> None:
        family, _, _, _, address = socket.getaddrinfo(
            ring_address(host), port, type=socket.SOCK_DGRAM)[0]
        self._address = address
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._lock = threading.Lock()
        self._rung = False
        self._failed = False
        self._closed = False
        #: Datagrams sent (one per wake-up asked for, not per command).
        self.rings = 0

    @property
    def target(self) -> tuple[str, int]:
        """The ``(host, port)`` the bell goes to."""
        return str(self._address[0]), int(self._address[1])

    def ring(self) -> None:
        """Wake the SIP thread, unless a ring it has not answered is on its way."""
        with self._lock:  # held over the send too: close() may run on the SIP thread
            if self._rung or self._closed:
                return
            self._rung = True
            try:
                self._socket.sendto(RING, self._address)
                self.rings += 1
            except BlockingIOError:
                pass  # the socket's buffer is full of rings: the thread will wake
            except OSError as exc:
                self._rung = False
                if not self._failed:  # the poll timeout still bounds the wait; say it once
                    self._failed = True
                    log.warning("SIP thread doorbell to %s:%d failed (%s): commands wait "
                                "for the poll timeout", *self.target, exc)

    def answer(self) -> None:
        """The SIP thread is awake and about to take its commands: the next one rings."""
        with self._lock:
            self._rung = False

    def close(self) -> None:
        """Close the sending socket; later rings do nothing."""
        with self._lock:
            self._closed = True
            self._socket.close()
