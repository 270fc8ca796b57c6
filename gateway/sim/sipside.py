"""The simulator's SIP endpoint: "OpenAI's" SIP side, a pjsua2 process driven by the simulator.

pjsua2 allows one ``Endpoint`` per process and runs callbacks on C threads, so this runs in a
process of its own (``python -m gateway.sim.sipside --fd N``), started and stopped by
:class:`gateway.sim.siplink.SipLink`, and speaks :mod:`gateway.sim.sipwire` over the
connected Unix stream it inherits as fd ``N``. It makes no decisions: an INVITE gets 180 and
is reported (``invite``); the simulator answers, rejects, refers or hangs up the dialog by
command, and hears of caller DTMF, REFER outcomes and the dialog's end.

Threading (pjsua2-notes §5.2): one Python thread, this process's main thread, creates, polls
(``libHandleEvents``) and destroys the endpoint, runs every pjsua callback and reads and writes
the socket (non-blocking, between polls). The conference clock thread runs each call's
:class:`_Port` frame callbacks, which touch only two deques of that call: caller frames in
(``RX_FRAMES``, oldest dropped; the main thread batches them to the simulator after each
poll) and agent frames out (``TX_FRAMES``, oldest dropped; silence when empty, so RTP keeps its
20 ms pace). Nothing in a callback raises into pjsua2. Ports are destroyed explicitly and
calls dropped inside their DISCONNECTED callback (pjsua2-notes §4.1, §4.2).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from gateway.ipc.framing import FrameDecoder, FrameError
from gateway.sim import sipwire
from gateway.sip import message as sipmsg
from gateway.sip._pj import create_endpoint, error_text, fast_bytes, pj

_log = logging.getLogger("gateway.sim.sip")

FRAME_BYTES: Final = 320  # 20 ms of PCM16 at 8 kHz
#: Caller frames waiting for the socket (1 s); the oldest is dropped when the simulator lags.
RX_FRAMES: Final = 50
#: Agent frames waiting for the clock (2 s); the oldest is dropped when more arrive than the
#: 20 ms clock plays (``playout_speed`` above 1 with a SIP caller).
TX_FRAMES: Final = 100
#: Bytes queued for the simulator beyond which caller audio stays in its ring (and the ring
#: drops the oldest); control messages are always queued (one per call event: bounded).
OUTBOX_LIMIT: Final = 1 << 20
_BUSY_POLL_MS: Final = 5
_IDLE_POLL_MS: Final = 50
_DTMF_IS_UPDATE: Final = 1  # PJMEDIA_STREAM_DTMF_IS_UPDATE (pjmedia/stream.h)
_TRANSPORTS: Final = {"udp": "PJSIP_TRANSPORT_UDP", "tcp": "PJSIP_TRANSPORT_TCP",
                      "tls": "PJSIP_TRANSPORT_TLS"}


class _Port(pj.AudioMediaPort):  # type: ignore[misc]
    """Between the bridge and one call's deques (clock thread)."""

    def __init__(self, leg: _Leg) -> None:
        super().__init__()
        self._rx = leg.rx
        self._tx = leg.tx
        self._leg = leg
        self._silence = pj.ByteVector(bytes(FRAME_BYTES))

    def onFrameReceived(self, frame: Any) -> None:
        """A decoded caller frame: into the call's ring."""
        try:
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
                data = fast_bytes(frame.buf)
                if len(data) == FRAME_BYTES:
                    if len(self._rx) == RX_FRAMES:
                        self._leg.rx_dropped += 1
                    self._rx.append(data)
        except BaseException:
            self._leg.callback_errors += 1

    def onFrameRequested(self, frame: Any) -> None:
        """The next agent frame, or silence."""
        try:
            data = self._tx.popleft() if self._tx else None
        except IndexError:
            data = None
        except BaseException:
            self._leg.callback_errors += 1
            data = None
        try:
            frame.buf = pj.ByteVector(data) if data else self._silence
            frame.size = FRAME_BYTES
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        except BaseException:
            self._leg.callback_errors += 1


class _Leg(pj.Call):  # type: ignore[misc]
    """One incoming SIP dialog (main thread, except the deques)."""

    def __init__(self, side: SipSide, account: Any, call_id: int, leg_id: int) -> None:
        super().__init__(account, call_id)
        self.side = side
        self.leg_id = leg_id
        self.rx: deque[bytes] = deque(maxlen=RX_FRAMES)
        self.tx: deque[bytes] = deque(maxlen=TX_FRAMES)
        self.rx_dropped = 0
        self.tx_dropped = 0
        self.callback_errors = 0
        self.port: _Port | None = None
        self.final_sent = False

    def onCallState(self, prm: Any) -> None:
        """INVITE session state changed; DISCONNECTED ends the leg."""
        self.side.guard(self._on_state)

    def _on_state(self) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.side.leg_gone(self, int(info.lastStatusCode), str(info.lastReason))

    def onCallMediaState(self, prm: Any) -> None:
        """Media up (or changed): connect the port both ways."""
        self.side.guard(self._on_media)

    def _on_media(self) -> None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            audio = self.getAudioMedia(index)
            if self.port is None:
                fmt = pj.MediaFormatAudio()
                fmt.init(pj.PJMEDIA_FORMAT_PCM, 8000, 1, 20000, 16)
                self.port = _Port(self)
                self.port.createPort(f"sim{self.leg_id}", fmt)
            audio.startTransmit(self.port)
            self.port.startTransmit(audio)
            return

    def onDtmfEvent(self, prm: Any) -> None:
        """A caller key (RFC 4733): reported once, at its start."""
        if prm.flags & _DTMF_IS_UPDATE:
            return
        digit = str(prm.digit)
        self.side.guard(lambda: self.side.send({"type": "dtmf", "leg": self.leg_id,
                                                "digits": digit}))

    def onCallTransferStatus(self, prm: Any) -> None:
        """A NOTIFY (or the REFER's failure) for the transfer we asked for."""
        status, final = int(prm.statusCode), bool(prm.finalNotify)
        self.side.guard(lambda: self.side.send({"type": "transfer", "leg": self.leg_id,
                                                "status": status, "final": final}))

    def onCallTransferRequest(self, prm: Any) -> None:
        """A caller's REFER: refused (OpenAI's side never dials for the caller)."""
        prm.statusCode = 403

    def destroy_port(self) -> None:
        """Destroy the C++ port while the Python object is whole (pjsua2-notes §4.1)."""
        port, self.port = self.port, None
        if port is not None:
            pj.AudioMediaPort.__swig_destroy__(port)


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, side: SipSide) -> None:
        super().__init__()
        self.side = side

    def onIncomingCall(self, prm: Any) -> None:
        """An INVITE pjsua gave a call slot."""
        self.side.guard(lambda: self.side.incoming(self, prm))


class SipSide:
    """The endpoint process: pjsua2 and the simulator's channel on one thread.

    Args:
        sock: The connected stream to the simulator.
        args: The parsed command line (transports, ports, TLS files, log level).
    """

    def __init__(self, sock: socket.socket, args: argparse.Namespace) -> None:
        self._sock = sock
        self._args = args
        self._decoder = FrameDecoder()
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._legs: dict[int, _Leg] = {}
        self._next_leg = 1
        self._after: deque[Callable[[], None]] = deque()
        self._stopping = False
        self.errors = 0

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Create the endpoint, report ``ready`` (or ``failed``), serve until ``stop`` or EOF."""
        self._sock.setblocking(False)
        ep = create_endpoint()
        account: _Account | None = None
        try:
            try:
                self._init(ep)
                transports = self._listen(ep)
                ep.libStart()
                account = self._account(transports[0])
            except Exception as exc:  # pjsua2.Error (empty str) or a bad argument
                self.send({"type": "failed", "reason": error_text(exc)})
                self._flush_blocking()
                return 1
            self.send({"type": "ready", "transports": transports})
            while not self._stopping:
                ep.libHandleEvents(_BUSY_POLL_MS if self._legs else _IDLE_POLL_MS)
                self._run_after()
                self._read()
                self._send_caller_audio()
                self._flush()
            self._shutdown(ep)
            self._flush_blocking()
            return 0
        finally:
            if account is not None:
                account.shutdown()
                del account
            self._legs.clear()
            ep.libDestroy()

    def _init(self, ep: Any) -> None:
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0  # polled on this thread
        cfg.uaConfig.mainThreadOnly = False
        cfg.uaConfig.maxCalls = 64  # clamped to PJSUA_MAX_CALLS (4 on the PyPI wheel)
        cfg.uaConfig.userAgent = "gateway-sim (OpenAI SIP simulator)"
        cfg.logConfig.level = self._args.log_level
        cfg.logConfig.consoleLevel = self._args.log_level
        # 8 kHz clock: G.711 and our PCM16 port need no resampling (pjsua2-notes §5.5).
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 0
        cfg.medConfig.channelCount = 1
        cfg.medConfig.audioFramePtime = 20
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.noVad = True
        cfg.medConfig.threadCnt = 1
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, 0)
        ep.codecSetPriority("PCMU/8000/1", 254)
        ep.codecSetPriority("PCMA/8000/1", 253)

    def _listen(self, ep: Any) -> list[dict[str, Any]]:
        args = self._args
        bound: list[dict[str, Any]] = []
        port = args.port
        for kind in args.transports:
            want = args.tls_port if kind == "tls" else port
            tc = pj.TransportConfig()
            tc.boundAddress = args.host
            tc.port = want
            if kind == "tls":
                tc.tlsConfig.certFile = args.tls_cert or ""
                tc.tlsConfig.privKeyFile = args.tls_key or ""
                tc.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
            tid = ep.transportCreate(getattr(pj, _TRANSPORTS[kind]), tc)
            local = str(ep.transportGetInfo(tid).localName)
            got = int(local.rpartition(":")[2] or want)
            if kind != "tls" and port == 0:
                port = got  # UDP and TCP share the number when it was left to us
            bound.append({"type": kind, "host": args.host, "port": got})
        return bound

    def _account(self, first: dict[str, Any]) -> _Account:
        ac = pj.AccountConfig()
        ac.idUri = f"sip:openai@{first['host']}:{first['port']}"
        media = ac.mediaConfig.transportConfig
        media.boundAddress = self._args.host
        media.port = self._args.rtp_port
        # SDES-SRTP (RFC 4568) when offered, plain RTP otherwise; keys in SDP over any
        # signalling transport (tests run UDP).
        ac.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_OPTIONAL
        ac.mediaConfig.srtpSecureSignaling = 0
        account = _Account(self)
        account.create(ac, True)
        return account

    def _shutdown(self, ep: Any) -> None:
        ep.hangupAllCalls()
        deadline = time.monotonic() + 3.0
        while self._legs and time.monotonic() < deadline:
            ep.libHandleEvents(10)
            self._flush()
        for leg in list(self._legs.values()):  # peers that never answered our BYE
            leg.destroy_port()
        self._legs.clear()

    def guard(self, fn: Callable[[], None]) -> None:
        """Run a callback body; nothing may propagate into pjsua2."""
        try:
            fn()
        except Exception:
            self.errors += 1
            _log.exception("error in SIP callback")

    def _run_after(self) -> None:
        while self._after:
            self.guard(self._after.popleft())

    # --- SIP ------------------------------------------------------------------------------

    def incoming(self, account: _Account, prm: Any) -> None:
        """A new INVITE: 180 once the callback has returned, and ``invite`` to the simulator."""
        leg_id = self._next_leg
        self._next_leg += 1
        leg = _Leg(self, account, prm.callId, leg_id)
        self._legs[leg_id] = leg
        whole = str(prm.rdata.wholeMsg)
        _, headers = sipmsg.parse_headers(whole)
        # Responses wait until pjsua's incoming-call callback returned (gateway/sip/ua.py).
        self._after.append(lambda: self._answer(leg_id, 180))
        self.send({"type": "invite", "leg": leg_id,
                   "headers": [list(h) for h in sipwire.webhook_headers(headers)],
                   "media_security": sipwire.media_security(sipmsg.body(whole))})

    def leg_gone(self, leg: _Leg, status: int, reason: str) -> None:
        """DISCONNECTED: free the port, drop the call, tell the simulator."""
        leg.destroy_port()
        self._legs.pop(leg.leg_id, None)
        if leg.rx_dropped or leg.tx_dropped or leg.callback_errors:
            _log.info("leg %d: %d caller and %d agent frames dropped, %d callback errors",
                      leg.leg_id, leg.rx_dropped, leg.tx_dropped, leg.callback_errors)
        self.send({"type": "ended", "leg": leg.leg_id, "status": status, "reason": reason})

    def _answer(self, leg_id: int, status: int) -> None:
        leg = self._legs.get(leg_id)
        if leg is None or leg.final_sent:
            return
        if status >= 200:
            leg.final_sent = True
        prm = pj.CallOpParam(True)
        prm.statusCode = status
        leg.answer(prm)

    def _hangup(self, leg_id: int) -> None:
        leg = self._legs.get(leg_id)
        if leg is None:
            return
        prm = pj.CallOpParam(True)
        if not leg.final_sent:  # still ringing: a final response, not a BYE
            prm.statusCode = 480
        leg.final_sent = True
        leg.hangup(prm)

    def _refer(self, leg_id: int, target: str) -> None:
        leg = self._legs.get(leg_id)
        if leg is None:
            return
        try:
            leg.xfer(target, pj.CallOpParam(True))
        except Exception as exc:  # pjsua2.Error: a target pjsip cannot parse, no dialog
            _log.warning("leg %d: REFER not sent: %s", leg_id, error_text(exc))
            self.send({"type": "transfer", "leg": leg_id, "status": 500, "final": True})

    def _play(self, leg_id: int, pcm: bytes) -> None:
        leg = self._legs.get(leg_id)
        if leg is None:
            return
        for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
            if len(leg.tx) == TX_FRAMES:
                leg.tx_dropped += 1
            leg.tx.append(pcm[start:start + FRAME_BYTES])

    # --- the channel ----------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message for the simulator (written after the next poll)."""
        data = sipwire.encode(message)
        self._out.append(data)
        self._out_bytes += len(data)

    def _send_caller_audio(self) -> None:
        if self._out_bytes > OUTBOX_LIMIT:
            return  # the simulator is behind: the rings keep (and drop) the audio
        for leg in self._legs.values():
            rx = leg.rx
            if not rx:
                continue
            frames = []
            while rx:
                try:
                    frames.append(rx.popleft())
                except IndexError:
                    break
            self.send({"type": "audio", "leg": leg.leg_id,
                       "pcm": sipwire.encode_pcm(b"".join(frames))})

    def _flush(self) -> None:
        while self._out:
            data = self._out[0]
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                return
            except OSError:  # the simulator is gone
                self._out.clear()
                self._out_bytes = 0
                self._stopping = True
                return
            self._out_bytes -= sent
            if sent < len(data):
                self._out[0] = data[sent:]
                return
            self._out.popleft()

    def _flush_blocking(self, timeout_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._out and time.monotonic() < deadline:
            self._flush()
            if self._out:
                select.select([], [self._sock], [], 0.05)

    def _read(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                _log.info("simulator closed the channel: stopping")
                self._stopping = True
                return
            try:
                self._decoder.feed(data)
                for message in self._decoder:
                    self._safe_command(message)
            except FrameError as exc:
                _log.error("bad frame from the simulator (%s): stopping", exc.reason)
                self._stopping = True
                return

    def _safe_command(self, message: dict[str, Any]) -> None:
        try:
            self._command(message)
        except Exception:
            self.errors += 1
            _log.exception("bad command from the simulator")

    def _command(self, message: dict[str, Any]) -> None:
        kind = sipwire.check(message, sipwire.FROM_SIMULATOR)
        if kind == "stop":
            self._stopping = True
        elif kind == "answer":
            self._answer(message["leg"], message["status"])
        elif kind == "hangup":
            self._hangup(message["leg"])
        elif kind == "refer":
            self._refer(message["leg"], message["target"])
        elif kind == "play":
            self._play(message["leg"], sipwire.decode_pcm(message["pcm"]))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gateway.sim.sipside",
                                     description="The simulator's SIP endpoint (started by it).")
    parser.add_argument("--fd", type=int, required=True,
                        help="inherited connected Unix stream socket to the simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="UDP/TCP port (0: any free one)")
    parser.add_argument("--transports", default="udp,tcp",
                        type=lambda s: [t for t in s.split(",") if t])
    parser.add_argument("--tls-port", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--rtp-port", type=int, default=0, help="first RTP port (0: any)")
    parser.add_argument("--log-level", type=int, default=1, help="pjsip log level 0-5")
    args = parser.parse_args(argv)
    unknown = set(args.transports) - set(_TRANSPORTS)
    if unknown or not args.transports:
        parser.error(f"--transports takes udp,tcp,tls (got {','.join(args.transports)})")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m gateway.sim.sipside --fd N [...]``."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s sim-sip %(levelname)s %(message)s")
    sock = socket.socket(fileno=args.fd)
    try:
        return SipSide(sock, args).run()
    finally:
        with contextlib.suppress(OSError):
            sock.close()


if __name__ == "__main__":
    sys.exit(main())
