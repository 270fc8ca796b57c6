"""Scripted SIP peers for front tests: fake workers behind Kamailio, callers and targets.

:class:`SipEndpoint` is a UDP socket on 127.0.0.x with a reader thread that records every
message and lets a subclass answer requests as they arrive, so a peer keeps answering (OPTIONS
probes, BYEs) while the test waits on something else. :class:`FakeWorker` behaves like one
gateway SIP worker as the front sees it: it answers OPTIONS 200 (503 while draining), takes
INVITEs up to its capacity with 100 then 200 (Contact, Record-Route copied), answers 503 +
Retry-After when full or draining, and can be told to stay silent, answer 486/480, or only
ring. :class:`Dialog` is an RFC 3261 §12 UAC dialog with a route set (Record-Route reversed),
which the gateway's existing raw peer does not keep and a proxy in the path needs. Messages
are parsed with :class:`tests.support.rawsip.SipMsg`. Everything is bounded in time.
"""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

from tests.support.rawsip import SipMsg

LOCALHOST = "127.0.0.1"
_tags = itertools.count(1)
_URI_IN_ANGLES = re.compile(r"<([^>]+)>")

WorkerMode = Literal["answer", "busy", "silent", "486", "480", "ring"]


def new_branch() -> str:
    """A fresh RFC 3261 branch."""
    return "z9hG4bK" + uuid.uuid4().hex[:16]


def uris(values: list[str]) -> list[str]:
    """Every ``<uri>`` in header values such as Record-Route (several per line allowed)."""
    return [u for v in values for u in _URI_IN_ANGLES.findall(v)]


def response_text(request: SipMsg, status: int, reason: str, *, to_tag: str | None = None,
                  contact: str | None = None, headers: tuple[str, ...] = ()) -> str:
    """A response to ``request`` (RFC 3261 §8.2.6): Via, From, To, Call-ID, CSeq copied;
    Record-Route copied on dialog-creating responses (§12.1.1)."""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in request.headers("Via")]
    if request.method in ("INVITE", "SUBSCRIBE", "REFER") and 100 < status < 300:
        lines += [f"Record-Route: {v}" for v in request.headers("Record-Route")]
    to = request.header("To") or ""
    if status > 100 and ";tag=" not in to:
        to += f";tag={to_tag or f'tag{next(_tags)}'}"
    lines += [f"From: {request.header('From')}", f"To: {to}",
              f"Call-ID: {request.header('Call-ID')}", f"CSeq: {request.header('CSeq')}"]
    if contact is not None:
        lines.append(f"Contact: <{contact}>")
    lines += [*headers, "Content-Length: 0", "", ""]
    return "\r\n".join(lines)


class SipEndpoint:
    """A UDP SIP peer with a reader thread; subclasses answer requests in :meth:`handle`.

    Args:
        name: Shown in messages and used as the Contact user.
        host: Local address (another 127.x address gives a distinct source IP).
        port: Local port (0: the kernel's choice).
        target: Where :meth:`send` goes by default (the front).
    """

    def __init__(self, name: str, *, host: str = LOCALHOST, port: int = 0,
                 target: tuple[str, int] | None = None) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.05)
        self.host, self.port = self.sock.getsockname()
        self.target = target
        self.received: list[SipMsg] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sip-{name}", daemon=True)

    @property
    def contact(self) -> str:
        """This peer's Contact URI."""
        return f"sip:{self.name}@{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            msg = SipMsg(data.decode("utf-8", "replace"), source)
            with self._cond:
                self.received.append(msg)
                self._cond.notify_all()
            if msg.status is None:
                try:
                    self.handle(msg)
                except OSError:
                    return

    def handle(self, msg: SipMsg) -> None:
        """Answer a request (default: 200 to anything but ACK)."""
        if msg.method != "ACK":
            self.reply(msg, 200, "OK")

    def reply(self, request: SipMsg, status: int, reason: str, *, to_tag: str | None = None,
              contact: str | None = None, headers: tuple[str, ...] = ()) -> None:
        """Send a response to where ``request`` came from."""
        text = response_text(request, status, reason, to_tag=to_tag, contact=contact,
                             headers=headers)
        self.sock.sendto(text.encode(), request.source)

    def send(self, data: str | bytes, dest: tuple[str, int] | None = None) -> None:
        """Send one datagram as given."""
        to = dest or self.target
        assert to is not None, "no destination"
        self.sock.sendto(data.encode() if isinstance(data, str) else data, to)

    def messages(self, match: Callable[[SipMsg], bool] | None = None) -> list[SipMsg]:
        """Everything received so far (that matches)."""
        with self._cond:
            return [m for m in self.received if match is None or match(m)]

    def requests(self, method: str) -> list[SipMsg]:
        """Requests of ``method`` received so far."""
        return self.messages(lambda m: m.status is None and m.method == method)

    def wait_for(self, match: Callable[[SipMsg], bool], timeout_s: float = 5.0,
                 since: int = 0) -> SipMsg:
        """The first message (from index ``since``) that matches; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for msg in self.received[since:]:
                    if match(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(m.first_line for m in self.received[-10:])
                    raise AssertionError(f"{self.name}: no matching SIP message in "
                                         f"{timeout_s} s; last seen:\n{seen}")
                self._cond.wait(left)

    def quiet_for(self, seconds: float) -> list[SipMsg]:
        """Let ``seconds`` pass (the reader keeps answering); returns what arrived meanwhile."""
        since = len(self.messages())
        time.sleep(seconds)
        return self.messages()[since:]

    def final(self, call_id: str, method: str = "INVITE", timeout_s: float = 10.0,
              since: int = 0) -> SipMsg:
        """The final (>= 200) response to ``method`` in dialog ``call_id``."""
        return self.wait_for(lambda m: m.status is not None and m.status >= 200
                             and m.method == method and m.header("Call-ID") == call_id,
                             timeout_s, since)

    def request_text(self, method: str, uri: str, *, call_id: str, from_tag: str, to: str,
                     cseq: int, branch: str | None = None, route: tuple[str, ...] = (),
                     headers: tuple[str, ...] = (), body: str = "") -> str:
        """A complete request from this peer (``Content-Length`` from ``body``)."""
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch="
                 f"{branch or new_branch()}",
                 "Max-Forwards: 70",
                 f"From: <sip:{self.name}@{self.host}:{self.port}>;tag={from_tag}",
                 f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <{self.contact}>"]
        lines += [f"Route: <{r}>" for r in route]
        lines += list(headers)
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body


@dataclass
class WorkerCall:
    """A call a fake worker answered."""

    invite: SipMsg
    to_tag: str
    last_response: str


class FakeWorker(SipEndpoint):
    """One gateway SIP worker as the front sees it.

    Args:
        name: Worker id.
        capacity: Calls it takes before answering 503 + Retry-After.
        mode: What it does with an INVITE it has room for: ``answer`` (100, 200), ``ring``
            (100, 180, nothing more), ``silent`` (nothing at all), ``busy`` (503 +
            Retry-After), ``486`` or ``480``.
        retry_after_s: Retry-After of its 503.
    """

    def __init__(self, name: str, *, capacity: int = 3, mode: WorkerMode = "answer",
                 retry_after_s: int = 5, host: str = LOCALHOST, port: int = 0,
                 target: tuple[str, int] | None = None) -> None:
        super().__init__(name, host=host, port=port, target=target)
        self.capacity = capacity
        self.mode: WorkerMode = mode
        self.retry_after_s = retry_after_s
        #: While set, OPTIONS and new INVITEs get 503 (SIGTERM drain).
        self.draining = False
        self.calls: dict[str, WorkerCall] = {}
        self._lock = threading.Lock()

    @property
    def active_calls(self) -> int:
        """Calls answered and not yet ended."""
        with self._lock:
            return len(self.calls)

    def handle(self, msg: SipMsg) -> None:
        method = msg.method
        call_id = msg.header("Call-ID") or ""
        if method == "OPTIONS":
            if self.draining:
                self.reply(msg, 503, "Draining", headers=(f"Retry-After: {self.retry_after_s}",))
            else:
                self.reply(msg, 200, "OK")
        elif method == "INVITE" and msg.tag("To") is None:
            self._invite(msg, call_id)
        elif method == "ACK":
            pass
        elif method == "BYE":
            with self._lock:
                self.calls.pop(call_id, None)
            self.reply(msg, 200, "OK")
        elif method == "CANCEL":
            self.reply(msg, 200, "OK")
            with self._lock:
                call = self.calls.pop(call_id, None)
            if call is not None:
                self.reply(call.invite, 487, "Request Terminated", to_tag=call.to_tag)
        else:
            self.reply(msg, 200, "OK")

    def _invite(self, msg: SipMsg, call_id: str) -> None:
        with self._lock:
            known = self.calls.get(call_id)
            if known is not None:  # a retransmission: repeat the last answer
                self.sock.sendto(known.last_response.encode(), msg.source)
                return
            full = len(self.calls) >= self.capacity
        if self.mode == "silent":
            return
        if self.draining or full or self.mode == "busy":
            self.reply(msg, 503, "Service Unavailable",
                       headers=(f"Retry-After: {self.retry_after_s}",))
            return
        if self.mode in ("486", "480"):
            reason = "Busy Here" if self.mode == "486" else "Temporarily Unavailable"
            self.reply(msg, int(self.mode), reason)
            return
        tag = f"{self.name}-{next(_tags)}"
        self.reply(msg, 100, "Trying")
        if self.mode == "ring":
            final = response_text(msg, 180, "Ringing", to_tag=tag, contact=self.contact)
        else:
            final = response_text(msg, 200, "OK", to_tag=tag, contact=self.contact)
        with self._lock:
            self.calls[call_id] = WorkerCall(msg, tag, final)
        self.sock.sendto(final.encode(), msg.source)

    def bye(self, call_id: str) -> int:
        """End an answered call from this side (a UAS BYE along the route set, RFC 3261
        §12.2.1.1); returns the index to wait for the answer from."""
        with self._lock:
            call = self.calls.pop(call_id)
        inv = call.invite
        contact = uris(inv.headers("Contact"))
        route = uas_route(inv)
        lines = [f"BYE {contact[0]} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch={new_branch()}",
                 "Max-Forwards: 70", f"From: {inv.header('To')};tag={call.to_tag}",
                 f"To: {inv.header('From')}", f"Call-ID: {call_id}", "CSeq: 1 BYE",
                 *(f"Route: <{r}>" for r in route), "Content-Length: 0", "", ""]
        since = len(self.received)
        # Loose routing: the next hop is the first Route, i.e. the proxy the INVITE came from.
        self.send("\r\n".join(lines), self.target or inv.source)
        return since

    def invites(self) -> list[SipMsg]:
        """Initial INVITEs received, one per call (UDP retransmissions left out)."""
        seen: set[str] = set()
        out: list[SipMsg] = []
        for m in self.messages(lambda m: m.status is None and m.method == "INVITE"
                               and m.tag("To") is None):
            call_id = m.header("Call-ID") or ""
            if call_id not in seen:
                seen.add(call_id)
                out.append(m)
        return out


@dataclass
class Dialog:
    """A UAC dialog (RFC 3261 §12.1.2) placed by ``peer`` through ``proxy``.

    Requests go to ``peer.target`` (the front); in-dialog ones carry the route set learnt
    from the 2xx's Record-Route, reversed.
    """

    peer: SipEndpoint
    request_uri: str
    call_id: str = field(default_factory=lambda: f"front-{uuid.uuid4().hex}")
    from_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    to_tag: str | None = None
    remote_target: str | None = None
    route: tuple[str, ...] = ()
    cseq: int = 0
    invite_branch: str = ""

    @property
    def to(self) -> str:
        """The To header value, with the remote tag once known."""
        base = f"<{self.request_uri}>"
        return f"{base};tag={self.to_tag}" if self.to_tag else base

    def send_invite(self, *, headers: tuple[str, ...] = ()) -> int:
        """Send the initial INVITE without waiting; returns the index to wait from."""
        self.cseq += 1
        self.invite_branch = new_branch()
        since = len(self.peer.received)
        self.peer.send(self.peer.request_text(
            "INVITE", self.request_uri, call_id=self.call_id, from_tag=self.from_tag,
            to=self.to, cseq=self.cseq, branch=self.invite_branch, headers=headers))
        return since

    def invite(self, *, headers: tuple[str, ...] = (), timeout_s: float = 10.0,
               ack: bool = True) -> SipMsg:
        """Send the INVITE, wait for its final response and ACK it (unless ``ack=False``
        for a 2xx, which a test then ACKs its own way)."""
        since = self.send_invite(headers=headers)
        return self.complete(since, timeout_s=timeout_s, ack=ack)

    def complete(self, since: int, *, timeout_s: float = 10.0, ack: bool = True) -> SipMsg:
        """Wait for the INVITE's final response (from ``since``) and ACK it."""
        final = self.peer.final(self.call_id, "INVITE", timeout_s, since)
        assert final.status is not None
        if 200 <= final.status < 300:
            self.to_tag = final.tag("To")
            contact = uris(final.headers("Contact"))
            self.remote_target = contact[0] if contact else None
            self.route = tuple(reversed(uris(final.headers("Record-Route"))))
            if ack:
                self.ack()
        else:
            # Non-2xx: the ACK is part of the INVITE transaction (RFC 3261 §17.1.1.3).
            self.to_tag = final.tag("To")
            self.peer.send(self.peer.request_text(
                "ACK", self.request_uri, call_id=self.call_id, from_tag=self.from_tag,
                to=self.to, cseq=self.cseq, branch=self.invite_branch))
        return final

    def cancel(self, timeout_s: float = 10.0) -> SipMsg:
        """CANCEL the pending INVITE (same branch and CSeq number, RFC 3261 §9.1); returns
        the CANCEL's own final response."""
        since = len(self.peer.received)
        self.peer.send(self.peer.request_text(
            "CANCEL", self.request_uri, call_id=self.call_id, from_tag=self.from_tag,
            to=f"<{self.request_uri}>", cseq=self.cseq, branch=self.invite_branch))
        return self.peer.final(self.call_id, "CANCEL", timeout_s, since)

    def ack(self, *, with_to_tag: bool = True) -> None:
        """ACK the 2xx (a new transaction along the route set, RFC 3261 §13.2.2.4)."""
        to = self.to if with_to_tag else f"<{self.request_uri}>"
        self.peer.send(self.peer.request_text(
            "ACK", self.remote_target or self.request_uri, call_id=self.call_id,
            from_tag=self.from_tag, to=to, cseq=self.cseq, route=self.route))

    def request(self, method: str, *, headers: tuple[str, ...] = (),
                timeout_s: float = 10.0) -> SipMsg:
        """Send an in-dialog request along the route set and return its final response."""
        self.cseq += 1
        since = len(self.peer.received)
        self.peer.send(self.peer.request_text(
            method, self.remote_target or self.request_uri, call_id=self.call_id,
            from_tag=self.from_tag, to=self.to, cseq=self.cseq, route=self.route,
            headers=headers))
        return self.peer.final(self.call_id, method, timeout_s, since)

    def bye(self, timeout_s: float = 10.0) -> SipMsg:
        """End the call."""
        return self.request("BYE", timeout_s=timeout_s)


def uas_route(invite: SipMsg) -> tuple[str, ...]:
    """The route set of the UAS side of a dialog: Record-Route as received (§12.1.1)."""
    return tuple(uris(invite.headers("Record-Route")))
