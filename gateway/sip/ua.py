"""The SIP user agent: one pjsua2 endpoint on its own thread, driven by commands, emitting events.

Threading (pjsua2-notes §5.2): the endpoint is created, run and destroyed on one Python thread,
``sip``, which polls ``libHandleEvents`` and executes commands queued by the asyncio loop; pjsua
callbacks (incoming call, call state, media state, registration, DTMF, transfer) run there too,
do O(1) work and hand a plain event to the loop with ``call_soon_threadsafe``. The conference
clock thread runs each call's :class:`_Port` frame callbacks, which only touch that call's
:class:`~gateway.media.channel.MediaChannel`. No other thread ever calls pjsua2, and no pjsua2
object leaves this module. Nothing in a callback may raise into pjsua2: every callback body is
wrapped, logged and counted.

Capacity: the PyPI wheel has 4 call slots (``PJSUA_MAX_CALLS``); pjsua itself answers 486 when
all are taken. We give pjsua ``max_calls + 1`` slots and refuse the call beyond ``max_calls``
ourselves with 503 and ``Retry-After``, so a full gateway says "try later", not "busy".
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.config import AccountSettings, SipSettings, TransportSettings
from gateway.errors import CallRejected, CapacityExceeded, GatewayError
from gateway.media.channel import MediaChannel
from gateway.media.playout import PlayoutBuffer
from gateway.sip import message
from gateway.sip._pj import create_endpoint, fast_bytes, pj
from gateway.sip.events import (
    CallState,
    DtmfReceived,
    IncomingCall,
    LegEnded,
    MediaActive,
    RegistrationState,
    SipEvent,
    TransferProgress,
)
from gateway.sip.reject import rejection_response

log = logging.getLogger("gateway.sip")

#: Call slots compiled into the pjsua2-python wheel (pjsua2-notes §1).
WHEEL_CALL_SLOTS = 4
#: An INVITE the loop has not answered after this long gets 500, so no caller hangs forever.
ANSWER_DEADLINE_S = 30.0
_FRAME_BYTES = 320  # 20 ms of PCM16 at 8 kHz
_DTMF_IS_UPDATE = 1  # PJMEDIA_STREAM_DTMF_IS_UPDATE (pjmedia/stream.h; not exported by SWIG)
_COMMAND_QUEUE_SIZE = 1024

_TRANSPORTS = {"udp": "PJSIP_TRANSPORT_UDP", "tcp": "PJSIP_TRANSPORT_TCP",
               "tls": "PJSIP_TRANSPORT_TLS"}


@dataclass(frozen=True)
class BoundTransport:
    """A listening transport with its actual port (``port: 0`` resolves at start)."""

    type: str
    host: str
    port: int


class _Port(pj.AudioMediaPort):  # type: ignore[misc]
    """Media port between the conference bridge and a :class:`MediaChannel` (clock thread)."""

    def __init__(self, channel: MediaChannel, stats: _Stats) -> None:
        super().__init__()
        self._channel = channel
        self._stats = stats
        self._silence = pj.ByteVector(bytes(_FRAME_BYTES))
        self._silence_bytes = bytes(_FRAME_BYTES)

    def onFrameReceived(self, frame: Any) -> None:
        try:
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
                data = fast_bytes(frame.buf)
                if len(data) == _FRAME_BYTES:
                    self._channel.put_caller_frame(data)
        except BaseException:
            self._stats.callback_errors += 1

    def onFrameRequested(self, frame: Any) -> None:
        try:
            data = self._channel.next_agent_frame()
            if data == self._silence_bytes:
                frame.buf = self._silence  # prebuilt: 0.6 µs instead of 7 µs
            else:
                frame.buf = pj.ByteVector(data)
            frame.size = _FRAME_BYTES
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        except BaseException:
            self._stats.callback_errors += 1
            frame.buf = self._silence
            frame.size = _FRAME_BYTES
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO


class _Stats:
    def __init__(self) -> None:
        self.callback_errors = 0
        self.calls_offered = 0
        self.calls_refused_capacity = 0
        self.answer_deadline_expired = 0


class _Leg(pj.Call):  # type: ignore[misc]
    """One SIP dialog; lives on the ``sip`` thread only."""

    def __init__(self, ua: SipUserAgent, account: Any, call_id: int, leg_id: int,
                 channel: MediaChannel) -> None:
        super().__init__(account, call_id)
        self.ua = ua
        self.leg_id = leg_id
        self.channel = channel
        self.port: _Port | None = None
        self.answered = False
        self.confirmed = False
        self.local_hangup = False
        self.offered_at = time.monotonic()

    def onCallState(self, prm: Any) -> None:
        self.ua._guard(self._on_state)

    def _on_state(self) -> None:
        info = self.getInfo()
        state = _state_name(info.state)
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed = True
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ua._leg_gone(self, info.lastStatusCode, info.lastReason)
            return
        self.ua._emit(CallState(self.leg_id, state, info.lastStatusCode, info.lastReason))

    def onCallMediaState(self, prm: Any) -> None:
        self.ua._guard(self._on_media)

    def _on_media(self) -> None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            audio = self.getAudioMedia(index)
            if self.port is None:
                fmt = pj.MediaFormatAudio()
                fmt.init(pj.PJMEDIA_FORMAT_PCM, 8000, 1, 20000, 16)
                self.port = _Port(self.channel, self.ua._stats)
                self.port.createPort(f"leg{self.leg_id}", fmt)
            audio.startTransmit(self.port)
            self.port.startTransmit(audio)
            codec = self.getStreamInfo(index).codecName.upper()
            self.ua._emit(MediaActive(self.leg_id, "PCMA" if codec == "PCMA" else "PCMU"))
            return

    def onDtmfEvent(self, prm: Any) -> None:
        # pjsua 2.15 calls on_dtmf_event (not on_dtmf_digit) when the app handles it: once at
        # the start of an RFC 4733 event, again for updates and at its end (flags bit 0 =
        # PJMEDIA_STREAM_DTMF_IS_UPDATE); a SIP INFO digit comes once. Report each key once.
        if prm.flags & _DTMF_IS_UPDATE:
            return
        digit = str(prm.digit)
        method: Literal["rfc4733", "info"] = (
            "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733")
        self.ua._guard(lambda: self.ua._emit(DtmfReceived(self.leg_id, digit, method)))

    def onCallTransferStatus(self, prm: Any) -> None:
        code, reason, final = int(prm.statusCode), str(prm.reason), bool(prm.finalNotify)
        self.ua._guard(lambda: self.ua._emit(TransferProgress(self.leg_id, code, reason, final)))

    def destroy_port(self) -> None:
        """Destroy the C++ port while the Python object is whole (pjsua2-notes §4.1)."""
        port, self.port = self.port, None
        if port is not None:
            pj.AudioMediaPort.__swig_destroy__(port)


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, ua: SipUserAgent, name: str) -> None:
        super().__init__()
        self.ua = ua
        self.name = name

    def onIncomingCall(self, prm: Any) -> None:
        self.ua._guard(lambda: self.ua._incoming(self, prm))

    def onRegState(self, prm: Any) -> None:
        code, reason, expires = int(prm.code), str(prm.reason), int(prm.expiration)
        self.ua._guard(lambda: self.ua._emit(RegistrationState(
            self.name, code, reason, expires, 200 <= code < 300 and expires > 0)))


class _LogWriter(pj.LogWriter):  # type: ignore[misc]
    def write(self, entry: Any) -> None:
        try:
            # pjsip's level 1 carries routine protocol refusals too ("Request verification
            # failed: Not Acceptable Here" for a 488), so it maps to WARNING, not ERROR.
            level = {0: logging.CRITICAL, 1: logging.WARNING, 2: logging.INFO,
                     3: logging.DEBUG}.get(entry.level, logging.DEBUG)
            log.log(level, "pjsip: %s", entry.msg.rstrip())
        except BaseException:
            pass


class SipUserAgent:
    """Owns the pjsua2 endpoint and its thread; the asyncio side talks to it by commands.

    Args:
        settings: The SIP section of the configuration.
        playout_capacity_ms: Agent audio each call may buffer ahead of the caller.
        pjsip_log_level: PJSIP's own log level (0-5).
    """

    def __init__(self, settings: SipSettings, *, playout_capacity_ms: int = 120_000,
                 pjsip_log_level: int = 1) -> None:
        self.settings = settings
        self._playout_capacity_ms = playout_capacity_ms
        self._log_level = pjsip_log_level
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue(_COMMAND_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_event: Callable[[SipEvent], None] | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stopping = threading.Event()
        self._legs: dict[int, _Leg] = {}
        self._next_leg = 1
        self._accounts: list[_Account] = []
        self._stats = _Stats()
        self.transports: list[BoundTransport] = []

    # Lifecycle (loop thread) -------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, on_event: Callable[[SipEvent], None],
              timeout_s: float = 10.0) -> None:
        """Start the endpoint thread; returns once transports listen and accounts exist.

        Raises:
            GatewayError: The endpoint could not start (e.g. the port is taken).
        """
        self._loop, self._on_event = loop, on_event
        self._thread = threading.Thread(target=self._run, name="sip", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise GatewayError("SIP endpoint did not start in time")
        if self._start_error is not None:
            self._thread.join(timeout_s)
            raise GatewayError(f"SIP endpoint failed to start: {self._start_error}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Hang up every call, unregister, destroy the endpoint and join the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("SIP thread did not stop within %.0f s", timeout_s)

    @property
    def active_calls(self) -> int:
        """Calls holding a slot right now."""
        return len(self._legs)

    # Commands (any thread; run on the sip thread) ----------------------------------------

    def answer(self, leg_id: int, status: int, reason: str = "",
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send a provisional (1xx) or final response to the leg's INVITE."""
        self._submit(lambda: self._answer(leg_id, status, reason, headers))

    def reject(self, leg_id: int, err: CallRejected) -> None:
        """Refuse the leg's INVITE with the status ``err`` carries."""
        status, reason, headers = rejection_response(err)
        self.answer(leg_id, status, reason, headers)

    def hangup(self, leg_id: int, status: int = 603, reason: str = "") -> None:
        """End the call: CANCEL/final response before answer, BYE after."""
        self._submit(lambda: self._hangup(leg_id, status, reason))

    def transfer(self, leg_id: int, target_uri: str) -> None:
        """Blind transfer: send REFER to ``target_uri`` (progress as TransferProgress events)."""
        self._submit(lambda: self._with_leg(leg_id, lambda leg: leg.xfer(target_uri,
                                                                           pj.CallOpParam(True))))

    def send_dtmf(self, leg_id: int, digits: str) -> None:
        """Send ``digits`` as RFC 4733 telephone-events."""
        def go(leg: _Leg) -> None:
            prm = pj.CallSendDtmfParam()
            prm.digits = digits
            prm.method = pj.PJSUA_DTMF_METHOD_RFC2833
            leg.sendDtmf(prm)
        self._submit(lambda: self._with_leg(leg_id, go))

    def _submit(self, command: Callable[[], None]) -> None:
        try:
            self._commands.put_nowait(command)
        except queue.Full:
            # 1024 pending commands means the sip thread is stuck; refusing loudly beats
            # blocking the event loop.
            raise GatewayError("SIP command queue is full; the SIP thread is not keeping up")\
                from None

    # The sip thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            ep = create_endpoint()
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            self._started.set()
            return
        try:
            self._create(ep)
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            self._destroy(ep)
            return
        self._started.set()
        try:
            while not self._stopping.is_set():
                ep.libHandleEvents(10)
                self._run_commands()
                self._expire_unanswered()
        finally:
            self._shutdown(ep)

    def _create(self, ep: Any) -> None:
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0  # we poll libHandleEvents on this thread
        cfg.uaConfig.mainThreadOnly = False
        cfg.uaConfig.maxCalls = min(self.settings.max_calls + 1, WHEEL_CALL_SLOTS)
        cfg.uaConfig.userAgent = self.settings.user_agent
        cfg.logConfig.level = self._log_level
        cfg.logConfig.consoleLevel = self._log_level
        self._writer = _LogWriter()
        cfg.logConfig.writer = self._writer
        cfg.logConfig.decor = 0
        # 8 kHz clock: G.711 ports need no resampling inside the bridge (16 kHz costs 2.9x CPU).
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 0
        cfg.medConfig.channelCount = 1
        cfg.medConfig.audioFramePtime = 20
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.noVad = True
        cfg.medConfig.threadCnt = 1
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()
        self._set_codecs(ep)
        first: BoundTransport | None = None
        for t in self.settings.transports:
            bound = self._create_transport(ep, t)
            self.transports.append(bound)
            first = first or bound
        ep.libStart()
        assert first is not None
        trunk = _Account(self, "trunk")
        trunk.create(self._account_config(f"sip:gateway@{first.host}:{first.port}"), True)
        self._accounts.append(trunk)
        for acct in self.settings.accounts:
            self._accounts.append(self._create_registration(acct))
        # The clock thread takes the GIL 100 times per call per second; a short switch
        # interval bounds how long the loop thread can hold it (pjsua2-notes §3.3).
        sys.setswitchinterval(0.001)
        log.info("SIP listening on %s", ", ".join(f"{t.type}:{t.host}:{t.port}"
                                                 for t in self.transports))

    def _set_codecs(self, ep: Any) -> None:
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, 0)
        priority = 254
        for name in self.settings.codecs:
            ep.codecSetPriority(f"{name}/8000/1", priority)
            priority -= 1

    def _create_transport(self, ep: Any, t: TransportSettings) -> BoundTransport:
        tc = pj.TransportConfig()
        tc.port = t.port
        tc.boundAddress = t.host
        if self.settings.public_address:
            tc.publicAddress = self.settings.public_address
        if t.type == "tls":
            tc.tlsConfig.certFile = t.cert_file or ""
            tc.tlsConfig.privKeyFile = t.key_file or ""
            tc.tlsConfig.CaListFile = t.ca_file or ""
            tc.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
        tid = ep.transportCreate(getattr(pj, _TRANSPORTS[t.type]), tc)
        local = str(ep.transportGetInfo(tid).localName)
        host, _, port = local.rpartition(":")
        return BoundTransport(t.type, host or t.host, int(port or t.port))

    def _account_config(self, id_uri: str) -> Any:
        ac = pj.AccountConfig()
        ac.idUri = id_uri
        media = ac.mediaConfig.transportConfig
        media.port = self.settings.rtp_port_start
        media.portRange = self.settings.rtp_port_range
        media.boundAddress = self.settings.transports[0].host
        if self.settings.public_address:
            media.publicAddress = self.settings.public_address
        return ac

    def _create_registration(self, acct: AccountSettings) -> _Account:
        ac = self._account_config(f"sip:{acct.user}@{acct.domain}")
        ac.regConfig.registrarUri = acct.registrar
        ac.regConfig.timeoutSec = acct.expires_s
        ac.regConfig.retryIntervalSec = 30
        if acct.password:
            ac.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", acct.realm, acct.auth_user, 0, acct.password.value))
        if acct.proxy:
            ac.sipConfig.proxies.append(acct.proxy)
        account = _Account(self, acct.name)
        account.create(ac)
        return account

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            self._guard(command)

    def _guard(self, fn: Callable[[], None]) -> None:
        """Run a callback body; nothing may propagate into pjsua2."""
        try:
            fn()
        except Exception:
            self._stats.callback_errors += 1
            log.exception("error in SIP callback")

    def _emit(self, event: SipEvent) -> None:
        loop, on_event = self._loop, self._on_event
        if loop is None or on_event is None:
            return
        try:
            loop.call_soon_threadsafe(on_event, event)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _incoming(self, account: _Account, prm: Any) -> None:
        leg_id = self._next_leg
        self._next_leg += 1
        channel = MediaChannel(PlayoutBuffer(capacity_ms=self._playout_capacity_ms))
        leg = _Leg(self, account, prm.callId, leg_id, channel)
        self._legs[leg_id] = leg
        self._stats.calls_offered += 1
        if len(self._legs) > self.settings.max_calls:
            self._stats.calls_refused_capacity += 1
            log.warning("at capacity (%d calls): refusing call with 503",
                        self.settings.max_calls)
            status, reason, extra = rejection_response(CapacityExceeded())
            self._answer_leg(leg, status, reason, extra)
            return
        rdata = prm.rdata
        start, header_list = message.parse_headers(str(rdata.wholeMsg))
        headers = tuple(header_list)
        from_value = message.header(headers, "From") or ""
        to_value = message.header(headers, "To") or ""
        via = message.header(headers, "Via") or ""
        source = str(rdata.srcAddress)
        src_ip, _, src_port = source.rpartition(":")
        from_uri, to_uri = message.name_addr_uri(from_value), message.name_addr_uri(to_value)
        self._emit(IncomingCall(
            leg_id=leg_id,
            sip_call_id=message.header(headers, "Call-ID") or "",
            from_uri=from_uri, from_user=message.uri_user(from_uri),
            from_name=message.display_name(from_value),
            to_uri=to_uri, to_user=message.uri_user(to_uri),
            request_uri=message.request_uri(start),
            headers=headers,
            source_ip=src_ip.strip("[]"), source_port=int(src_port or 0),
            transport=via.split()[0].rsplit("/", 1)[-1].lower() if via else "udp",
            account=account.name, media=channel,
        ))

    def _answer(self, leg_id: int, status: int, reason: str,
                headers: tuple[tuple[str, str], ...]) -> None:
        self._with_leg(leg_id, lambda leg: self._answer_leg(leg, status, reason, headers))

    def _answer_leg(self, leg: _Leg, status: int, reason: str,
                    headers: tuple[tuple[str, str], ...]) -> None:
        prm = pj.CallOpParam()
        prm.statusCode = status
        if reason:
            prm.reason = reason
        for name, value in headers:
            h = pj.SipHeader()
            h.hName, h.hValue = name, value
            prm.txOption.headers.append(h)
        if status >= 200:
            leg.answered = True
        leg.answer(prm)

    def _hangup(self, leg_id: int, status: int, reason: str) -> None:
        def go(leg: _Leg) -> None:
            prm = pj.CallOpParam()
            prm.statusCode = status
            if reason:
                prm.reason = reason
            leg.answered = True
            leg.local_hangup = True
            leg.hangup(prm)
        self._with_leg(leg_id, go)

    def _with_leg(self, leg_id: int, fn: Callable[[_Leg], Any]) -> None:
        leg = self._legs.get(leg_id)
        if leg is None:
            log.debug("command for leg %d ignored: call already ended", leg_id)
            return
        fn(leg)

    def _expire_unanswered(self) -> None:
        now = time.monotonic()
        for leg in list(self._legs.values()):
            if not leg.answered and now - leg.offered_at > ANSWER_DEADLINE_S:
                self._stats.answer_deadline_expired += 1
                log.error("leg %d not answered within %.0f s: 500", leg.leg_id, ANSWER_DEADLINE_S)
                self._answer_leg(leg, 500, "No Answer From Gateway", ())

    def _leg_gone(self, leg: _Leg, status: int, reason: str) -> None:
        if leg.confirmed and leg.local_hangup:
            # pjsua reports the status we passed to hangup(); an established call we ended
            # was cleared normally by our BYE.
            status, reason = 200, "Normal call clearing (BYE sent)"
        leg.destroy_port()
        leg.channel.closed = True
        # Drop the Call inside its DISCONNECTED callback so a reused slot never sees it
        # (pjsua2-notes §4.2).
        self._legs.pop(leg.leg_id, None)
        self._emit(LegEnded(leg.leg_id, status, reason))

    def _shutdown(self, ep: Any) -> None:
        try:
            ep.hangupAllCalls()
            deadline = time.monotonic() + 3.0
            while self._legs and time.monotonic() < deadline:
                ep.libHandleEvents(10)
            for leg in list(self._legs.values()):  # peers that never answered our BYE
                leg.destroy_port()
            self._legs.clear()
            registered = [a for a in self._accounts
                          if a.name != "trunk" and a.isValid() and a.getInfo().regIsActive]
            for account in registered:
                account.setRegistration(False)  # un-REGISTER (expires=0)
            deadline = time.monotonic() + 2.0
            while registered and time.monotonic() < deadline:
                ep.libHandleEvents(10)
                registered = [a for a in registered if a.getInfo().regIsActive]
            for account in self._accounts:
                account.shutdown()
            self._accounts.clear()
        except Exception:
            log.exception("error while shutting down SIP")
        finally:
            self._destroy(ep)

    def _destroy(self, ep: Any) -> None:
        self._legs.clear()
        self._accounts.clear()
        try:
            ep.libDestroy()
        except Exception:
            log.exception("libDestroy failed")


def _state_name(state: int) -> str:
    names = {pj.PJSIP_INV_STATE_NULL: "NULL", pj.PJSIP_INV_STATE_CALLING: "CALLING",
             pj.PJSIP_INV_STATE_INCOMING: "INCOMING", pj.PJSIP_INV_STATE_EARLY: "EARLY",
             pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
             pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
             pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED"}
    return names.get(state, str(state))
