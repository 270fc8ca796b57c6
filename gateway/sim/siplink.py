"""The simulator's half of its SIP endpoint: one process, one channel, a SimCall per INVITE.

:class:`SipLink` starts :mod:`gateway.sim.sipside` as a child process (pjsua2 allows one
endpoint per process, and its clock thread must not share a GIL with the simulator's work),
hands it one end of a ``socketpair`` (inherited fd; no path to clean up, nobody else can
connect) and speaks :mod:`gateway.sim.sipwire` over the other end on the simulator's event
loop. The channel, not the ``/sim/calls`` HTTP API, carries the calls: it is ordered, costs no
request per 20 ms frame, and ends when either process does.

Per INVITE it places a :class:`~gateway.sim.simcall.SimCall` with the INVITE's headers and its
media security, and follows the call's state: accepted -> 200, rejected -> that status, timed
out -> 408, referred -> REFER to the target (the NOTIFY outcome goes to
``transfer_result``), ended -> BYE. A caller BYE or CANCEL is ``SimCall.hangup``; caller
audio (decoded by pjsua to PCM16 8 kHz) is ``feed_audio``, RFC 4733 keys ``send_dtmf``; the
agent's 20 ms frames go to the endpoint as they play. All of it runs on the loop: the read
task is the only consumer of the channel, so no other thread touches a SimCall.

Overflow policy towards the endpoint: the writer's buffer takes control messages always (a
few per call); agent frames are dropped (and counted in :attr:`SipLink.audio_dropped`) while
more than :data:`WRITE_LIMIT` bytes are waiting. From the endpoint, the socket's buffer and the
endpoint's rings bound what waits (see :mod:`gateway.sim.sipside`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gateway.ipc.framing import FrameDecoder, FrameError
from gateway.sim import sipwire
from gateway.sim.calls import CallControlError, CallState
from gateway.sim.options import SimOptions
from gateway.sim.simcall import SimCall, log_failure

if TYPE_CHECKING:
    from gateway.sim.calldesk import CallDesk

_log = logging.getLogger(__name__)

#: How long the endpoint may take to listen.
START_TIMEOUT_S: Final = 20.0
#: How long it may take to hang up its calls and exit after ``stop``.
STOP_TIMEOUT_S: Final = 6.0
#: Bytes waiting for the endpoint beyond which agent audio frames are dropped.
WRITE_LIMIT: Final = 1 << 20
#: SIP status for a ringing call whose timer ran out (the simulator's choice, as documented).
RING_TIMEOUT_STATUS: Final = 408


class SipEndpointError(RuntimeError):
    """The SIP endpoint process did not start (port taken, bad TLS files, ...)."""


@dataclass(frozen=True)
class SipTransport:
    """A listening SIP transport of the endpoint."""

    type: str
    host: str
    port: int

    @property
    def target(self) -> str:
        """``host:port``, as SIPp takes it."""
        return f"{self.host}:{self.port}"


class _Leg:
    """One SIP dialog of the endpoint and the SimCall it placed."""

    def __init__(self, leg_id: int, call: SimCall) -> None:
        self.leg_id = leg_id
        self.call = call
        self.last: CallState = call.state
        self.answered = False
        self.gone = False


class SipLink:
    """Runs the endpoint process and ties its dialogs to SimCalls.

    Args:
        desk: Where calls are placed.
        options: ``sip_*`` options say where to listen.

    Attributes:
        transports: What the endpoint listens on, once started.
        audio_dropped: Agent frames not sent because the endpoint was not reading.
    """

    def __init__(self, desk: CallDesk, options: SimOptions) -> None:
        self._desk = desk
        self._options = options
        self.transports: list[SipTransport] = []
        self.audio_dropped = 0
        self._legs: dict[int, _Leg] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._decoder = FrameDecoder()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the endpoint and wait until it listens.

        Raises:
            SipEndpointError: It failed or took too long.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv(theirs.fileno()), pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, stdout=2)
        finally:
            theirs.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                first = await self._next_message()
        except TimeoutError:
            await self.stop()
            raise SipEndpointError("the SIP endpoint did not start in time") from None
        if first is None or first.get("type") != "ready":
            await self.stop()
            reason = first.get("reason") if first is not None else "it exited"
            raise SipEndpointError(f"the SIP endpoint did not start: {reason}")
        self.transports = [SipTransport(str(t["type"]), str(t["host"]), int(t["port"]))
                           for t in first["transports"]]
        self._task = asyncio.create_task(self._read_loop(), name="sim:sip:channel-read")
        self._task.add_done_callback(log_failure)
        _log.info("sim SIP endpoint listening on %s",
                  ", ".join(f"{t.type}:{t.target}" for t in self.transports))

    def _argv(self, fd: int) -> list[str]:
        o = self._options
        transports = list(o.sip_transports)
        argv = [sys.executable, "-m", "gateway.sim.sipside", "--fd", str(fd),
                "--host", o.sip_host, "--port", str(o.sip_port or 0),
                "--rtp-port", str(o.sip_rtp_port), "--log-level", str(o.sip_log_level)]
        if o.sip_tls_port is not None:
            transports.append("tls")
            argv += ["--tls-port", str(o.sip_tls_port), "--tls-cert", o.sip_tls_cert_file or "",
                     "--tls-key", o.sip_tls_key_file or ""]
        return [*argv, "--transports", ",".join(transports)]

    async def stop(self) -> None:
        """Hang up every dialog (the endpoint sends BYEs), stop the process, close the channel."""
        self._send({"type": "stop"})
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                _log.warning("sim SIP endpoint (pid %d) did not stop: killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            # The read task ends at EOF after the last ``ended``; bounded in case it does not.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
        self._writer = None

    # --- the channel ----------------------------------------------------------------------

    async def _next_message(self) -> dict[str, Any] | None:
        assert self._reader is not None
        while True:
            message = self._decoder.next_message()
            if message is not None:
                return message
            data = await self._reader.read(65536)
            if not data:
                return None
            self._decoder.feed(data)

    async def _read_loop(self) -> None:
        try:
            while (message := await self._next_message()) is not None:
                try:
                    await self._dispatch(message)
                except (sipwire.WireError, FrameError) as exc:
                    _log.error("sim SIP endpoint sent a bad message: %s", exc)
        except FrameError as exc:
            _log.error("sim SIP channel broken: %s", exc.reason)
        finally:
            # The endpoint is gone: its dialogs are too.
            for leg in list(self._legs.values()):
                leg.gone = True
                await leg.call.hangup()
            self._legs.clear()

    def _send(self, message: dict[str, Any], *, droppable: bool = False) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        if droppable and writer.transport.get_write_buffer_size() > WRITE_LIMIT:
            self.audio_dropped += 1
            return
        writer.write(sipwire.encode(message))

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = sipwire.check(message, sipwire.FROM_ENDPOINT)
        if kind == "invite":
            await self._invite(message)
            return
        leg = self._legs.get(message.get("leg", -1))
        if leg is None:
            return
        call = leg.call
        if kind == "audio":
            call.feed_audio(sipwire.decode_pcm(message["pcm"]))
        elif kind == "dtmf":
            with contextlib.suppress(CallControlError):  # keys before accept: nobody hears
                call.send_dtmf(message["digits"])
        elif kind == "transfer":
            if message["final"] and call.state is CallState.REFERRED:
                await call.transfer_result(200 <= message["status"] < 300)
        elif kind == "ended":
            leg.gone = True
            self._legs.pop(leg.leg_id, None)
            await call.hangup()

    async def _invite(self, message: dict[str, Any]) -> None:
        leg_id = message["leg"]
        headers = [(str(h[0]), str(h[1])) for h in message["headers"]
                   if isinstance(h, list) and len(h) == 2]
        try:
            call = await self._desk.incoming_call(
                headers, media_security=message["media_security"])
        except ValueError as exc:
            _log.warning("sim SIP leg %d: call not placed (%s): 500", leg_id, exc)
            self._send({"type": "answer", "leg": leg_id, "status": 500})
            return
        leg = _Leg(leg_id, call)
        self._legs[leg_id] = leg
        call.on_state_change = lambda _call: self._state_changed(leg)
        call.on_agent_audio = lambda pcm: self._send(
            {"type": "play", "leg": leg_id, "pcm": sipwire.encode_pcm(pcm)}, droppable=True)
        _log.info("sim SIP leg %d is call %s", leg_id, call.call_id)

    def _state_changed(self, leg: _Leg) -> None:
        call = leg.call
        state = call.state
        if state is leg.last or leg.gone:
            return
        leg.last = state
        if state is CallState.ACCEPTED:
            if not leg.answered:  # also back here after a failed transfer
                leg.answered = True
                self._send({"type": "answer", "leg": leg.leg_id, "status": 200})
        elif state is CallState.REFERRED:
            target = call.record.refer_target
            if target is not None:
                self._send({"type": "refer", "leg": leg.leg_id, "target": target})
        elif state is CallState.REJECTED:
            status = call.record.reject_status or 603
            self._send({"type": "answer", "leg": leg.leg_id, "status": status})
        elif state is CallState.TIMED_OUT:
            self._send({"type": "answer", "leg": leg.leg_id, "status": RING_TIMEOUT_STATUS})
        elif state is CallState.ENDED:
            self._send({"type": "hangup", "leg": leg.leg_id})
