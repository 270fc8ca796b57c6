"""A hand-written SIP peer over UDP on 127.0.0.1, for what SIPp cannot or will not send.

Hostile and broken input (an IPv6-only offer, a ``Content-Length`` longer than the datagram,
missing headers, garbage, unknown methods) and dialogs a test steers step by step (a caller
REFER, hold and resume by re-INVITE, an offer-less INVITE refused at capacity and its ACK).
:class:`RawSipPeer` sends exactly the bytes it is given and reads what comes back; it answers
requests the gateway sends it (BYE, NOTIFY) with 200 so dialogs end cleanly. :class:`Dialog`
keeps the RFC 3261 §12 dialog state (Call-ID, tags, remote target, CSeq) of one call it
placed. :class:`RtpSender` streams μ-law silence from the call's media port, so the gateway
sees a live caller. Everything is bounded in time; sockets close on exit.
"""

from __future__ import annotations

import itertools
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from gateway.sip import message

LOCALHOST = "127.0.0.1"
_ids = itertools.count(1)


@dataclass(frozen=True)
class SipMsg:
    """One SIP message as received."""

    text: str
    source: tuple[str, int]

    @property
    def first_line(self) -> str:
        """The request or status line."""
        return self.text.split("\r\n", 1)[0]

    @property
    def status(self) -> int | None:
        """The status code of a response, ``None`` for a request."""
        parts = self.first_line.split(" ", 2)
        if parts[0] == "SIP/2.0" and len(parts) > 1 and parts[1].isdigit():
            return int(parts[1])
        return None

    @property
    def method(self) -> str:
        """The method of a request, or the CSeq method of a response."""
        if self.status is None:
            return self.first_line.split(" ", 1)[0]
        return (self.header("CSeq") or " ").split()[-1]

    def headers(self, name: str) -> list[str]:
        """Every value of header ``name`` (long or compact form), in order."""
        low = name.lower()
        return [v for n, v in message.parse_headers(self.text)[1] if n.lower() == low]

    def header(self, name: str) -> str | None:
        """The first value of header ``name``."""
        values = self.headers(name)
        return values[0] if values else None

    @property
    def body(self) -> str:
        """The message body."""
        return message.body(self.text)

    def tag(self, name: str) -> str | None:
        """The ``tag`` parameter of the From or To header."""
        m = re.search(r";\s*tag=([^;>\s]+)", self.header(name) or "")
        return m.group(1) if m else None


def sdp_offer(media_port: int, *, connection: str = "IN IP4 127.0.0.1",
              direction: str = "sendrecv", proto: str = "RTP/AVP", formats: str = "0 101",
              extra: str = "") -> str:
    """An SDP offer (RFC 4566) for one audio stream; every part can be bent for a test."""
    lines = ["v=0", f"o=raw {next(_ids)} 1 IN IP4 127.0.0.1", "s=-", f"c={connection}",
             "t=0 0", f"m=audio {media_port} {proto} {formats}", "a=rtpmap:0 PCMU/8000",
             "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=ptime:20",
             f"a={direction}"]
    if extra:
        lines.append(extra)
    return "\r\n".join(lines) + "\r\n"


def media_address(sdp: str) -> tuple[str, int]:
    """Where an SDP answer wants RTP: its connection address and audio port."""
    host = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
    port = re.search(r"^m=audio (\d+)", sdp, re.M)
    assert host and port, f"no IPv4 audio address in\n{sdp}"
    return host.group(1), int(port.group(1))


class RawSipPeer:
    """A UDP SIP peer bound to ``bind:0`` (or ``port``) that talks to ``target``.

    Args:
        target: The gateway's SIP address.
        bind: Local address; another 127.x address tests source-address checks.
        auto_answer: Answer requests the gateway sends (BYE, NOTIFY, OPTIONS) with 200.
    """

    def __init__(self, target: tuple[str, int], *, bind: str = LOCALHOST, port: int = 0,
                 auto_answer: bool = True) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind, port))
        self.host, self.port = self.sock.getsockname()
        self.auto_answer = auto_answer
        #: Every message received, in order.
        self.received: list[SipMsg] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, data: str | bytes) -> None:
        """Send one datagram exactly as given."""
        self.sock.sendto(data.encode() if isinstance(data, str) else data, self.target)

    def recv(self, timeout_s: float) -> SipMsg | None:
        """The next message within ``timeout_s``, or ``None``."""
        self.sock.settimeout(max(0.001, timeout_s))
        try:
            data, source = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        msg = SipMsg(data.decode("utf-8", "replace"), source)
        self.received.append(msg)
        if self.auto_answer and msg.status is None and msg.method != "ACK":
            self.respond(msg, 200, "OK")
        return msg

    def expect(self, match: Callable[[SipMsg], bool], timeout_s: float = 5.0) -> SipMsg:
        """Read until a message matches; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is not None and match(msg):
                return msg
        seen = "\n".join(m.first_line for m in self.received[-10:])
        raise AssertionError(f"no matching SIP message in {timeout_s} s; last seen:\n{seen}")

    def final(self, call_id: str, method: str = "INVITE", timeout_s: float = 10.0) -> SipMsg:
        """The final (>= 200) response to ``method`` of dialog ``call_id``."""
        return self.expect(lambda m: m.status is not None and m.status >= 200
                           and m.method == method and m.header("Call-ID") == call_id,
                           timeout_s)

    def quiet(self, seconds: float) -> list[SipMsg]:
        """Everything received during ``seconds``."""
        out: list[SipMsg] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is not None:
                out.append(msg)
        return out

    def respond(self, request: SipMsg, status: int, reason: str, *, to_tag: str | None = None,
                headers: tuple[str, ...] = (), body: str = "") -> None:
        """Answer ``request`` (copying Via, From, To, Call-ID, CSeq).

        The To tag is ``to_tag``, else a new one (none on a 100); ``body`` goes as SDP.
        """
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in request.headers("Via")]
        to = request.header("To") or ""
        if status > 100 and ";tag=" not in to:
            to += f";tag={to_tag or f'raw{next(_ids)}'}"
        lines += [f"From: {request.header('From')}", f"To: {to}",
                  f"Call-ID: {request.header('Call-ID')}", f"CSeq: {request.header('CSeq')}",
                  *headers]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), request.source)

    def request_text(self, method: str, uri: str, *, call_id: str, from_tag: str,
                     to: str, cseq: int, branch: str | None = None, body: str = "",
                     content_type: str = "application/sdp",
                     headers: tuple[str, ...] = ()) -> str:
        """A complete request as text (``Content-Length`` computed from ``body``)."""
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch="
                 f"{branch or 'z9hG4bK' + uuid.uuid4().hex[:16]}",
                 "Max-Forwards: 70",
                 f"From: <sip:raw@{self.host}:{self.port}>;tag={from_tag}",
                 f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:raw@{self.host}:{self.port}>", *headers]
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body


@dataclass
class Dialog:
    """One call placed by a :class:`RawSipPeer` (RFC 3261 §12.1.2 UAC dialog state)."""

    peer: RawSipPeer
    request_uri: str
    call_id: str = field(default_factory=lambda: f"raw-{uuid.uuid4().hex}")
    from_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    to_tag: str | None = None
    remote_target: str | None = None
    cseq: int = 0
    answer: SipMsg | None = None

    @property
    def to(self) -> str:
        """The To header value, with the remote tag once known."""
        base = f"<{self.request_uri}>"
        return f"{base};tag={self.to_tag}" if self.to_tag else base

    def invite(self, body: str = "", *, headers: tuple[str, ...] = (),
               content_type: str = "application/sdp", timeout_s: float = 10.0) -> SipMsg:
        """Send an (re-)INVITE, wait for its final response and ACK it."""
        self.cseq += 1
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        uri = self.remote_target or self.request_uri
        self.peer.send(self.peer.request_text(
            "INVITE", uri, call_id=self.call_id, from_tag=self.from_tag, to=self.to,
            cseq=self.cseq, branch=branch, body=body, content_type=content_type,
            headers=headers))
        final = self.peer.final(self.call_id, "INVITE", timeout_s)
        assert final.status is not None
        if 200 <= final.status < 300:
            self.to_tag = final.tag("To") or self.to_tag
            contact = final.header("Contact") or ""
            m = re.search(r"<([^>]+)>", contact)
            self.remote_target = m.group(1) if m else self.remote_target
            self.answer = final
            self.ack(final)
        else:
            # Non-2xx: the ACK belongs to the INVITE transaction (RFC 3261 §17.1.1.3).
            self.to_tag = self.to_tag or final.tag("To")
            self.peer.send(self.peer.request_text(
                "ACK", uri, call_id=self.call_id, from_tag=self.from_tag, to=self.to,
                cseq=self.cseq, branch=branch))
        return final

    def ack(self, final: SipMsg) -> None:
        """ACK a 2xx (a new transaction to the remote target, RFC 3261 §13.2.2.4)."""
        self.peer.send(self.peer.request_text(
            "ACK", self.remote_target or self.request_uri, call_id=self.call_id,
            from_tag=self.from_tag, to=self.to, cseq=self.cseq))

    def request(self, method: str, *, headers: tuple[str, ...] = (), body: str = "",
                content_type: str = "application/sdp", timeout_s: float = 10.0) -> SipMsg:
        """Send an in-dialog request and return its final response."""
        self.cseq += 1
        self.peer.send(self.peer.request_text(
            method, self.remote_target or self.request_uri, call_id=self.call_id,
            from_tag=self.from_tag, to=self.to, cseq=self.cseq, body=body,
            content_type=content_type, headers=headers))
        return self.peer.final(self.call_id, method, timeout_s)


class RtpSender:
    """Sends 20 ms μ-law silence packets (PT 0) from ``port`` to ``dest`` until stopped."""

    def __init__(self, port: int, dest: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCALHOST, port))
        self.dest = dest
        self.sent = 0
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-rtp", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def pause(self) -> None:
        """Stop sending (a caller on hold, or one that vanished)."""
        self._paused.set()

    def resume(self) -> None:
        """Send again."""
        self._paused.clear()

    def _run(self) -> None:
        seq, ts, ssrc = 1, 0, 0x5EED
        next_at = time.monotonic()
        while not self._stop.is_set():
            if not self._paused.is_set():
                header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
                self.sock.sendto(header + b"\xff" * 160, self.dest)
                self.sent += 1
                seq, ts = seq + 1, ts + 160
            next_at += 0.02
            self._stop.wait(max(0.0, next_at - time.monotonic()))
