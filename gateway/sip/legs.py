"""The pjsua2 objects of the SIP user agent: its call legs, media ports, accounts and endpoint.

Each is a SWIG director subclass whose callbacks pjsua runs on the ``sip`` thread (media
ports: on the conference clock thread). They do O(1) work and hand everything to their
:class:`~gateway.sip.ua.SipUserAgent` (the *owner*), never raise into pjsua2 (every body is
wrapped by ``owner.guard``), and never leave this package. Lifetimes follow pjsua2-notes §4:
a port's C++ side is destroyed explicitly before its Python object goes, and a leg is dropped
inside its DISCONNECTED callback.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from gateway.media.channel import MediaChannel
from gateway.sip._pj import fast_bytes, pj
from gateway.sip.events import (
    CallState,
    DtmfReceived,
    MediaActive,
    RegistrationState,
    TransferProgress,
)
from gateway.sip.liveness import RtpWatch
from gateway.sip.native import NativeChannel, NativePort
from gateway.sip.recorder import LegRecording

if TYPE_CHECKING:
    from gateway.sip.relay import RelayLeg
    from gateway.sip.ua import SipUserAgent

log = logging.getLogger("gateway.sip")

_FRAME_BYTES = 320  # 20 ms of PCM16 at 8 kHz
_DTMF_IS_UPDATE = 1  # PJMEDIA_STREAM_DTMF_IS_UPDATE (pjmedia/stream.h; not exported by SWIG)


class MediaPort(pj.AudioMediaPort):  # type: ignore[misc]
    """Media port between the conference bridge and a :class:`MediaChannel` (clock thread)."""

    def __init__(self, channel: MediaChannel, stats: UaStats) -> None:
        super().__init__()
        self._channel = channel
        self.stats = stats
        self._silence = pj.ByteVector(bytes(_FRAME_BYTES))
        self._silence_bytes = bytes(_FRAME_BYTES)

    def onFrameReceived(self, frame: Any) -> None:
        """A caller frame from the bridge: copied into the channel (clock thread)."""
        try:
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
                data = fast_bytes(frame.buf)
                if len(data) == _FRAME_BYTES:
                    self._channel.put_caller_frame(data)
        except BaseException:
            self.stats.callback_errors += 1

    def onFrameRequested(self, frame: Any) -> None:
        """The next agent frame for the bridge, silence when there is none (clock thread)."""
        try:
            data = self._channel.next_agent_frame()
            if data == self._silence_bytes:
                frame.buf = self._silence  # prebuilt: 0.6 µs instead of 7 µs
            else:
                frame.buf = pj.ByteVector(data)
            frame.size = _FRAME_BYTES
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        except BaseException:
            self.stats.callback_errors += 1
            frame.buf = self._silence
            frame.size = _FRAME_BYTES
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO


class UaStats:
    """Counters of the user agent since start."""

    def __init__(self) -> None:
        self.callback_errors = 0
        self.calls_offered = 0
        self.calls_refused_capacity = 0
        self.calls_refused_offer = 0
        self.answer_deadline_expired = 0
        self.caller_refers_refused = 0
        self.rtp_timeouts = 0


class Leg(pj.Call):  # type: ignore[misc]
    """One SIP dialog; lives on the ``sip`` thread only."""

    def __init__(self, ua: SipUserAgent, account: Any, call_id: int, leg_id: int,
                 channel: MediaChannel, *, session_leg: int | None = None) -> None:
        super().__init__(account, call_id)
        self.ua = ua
        self.account = account
        self.leg_id = leg_id
        #: The id the loop knows this call by; a leg that replaced the caller's after an
        #: allowed caller REFER carries the original leg's id.
        self.session_leg = session_leg if session_leg is not None else leg_id
        self.channel = channel
        self.port: MediaPort | None = None
        #: This leg's native media port (when the channel is a NativeChannel).
        self.native_port: NativePort | None = None
        self.answered = False
        self.confirmed = False
        self.local_hangup = False
        self.cause: str | None = None
        self.offered_at = time.monotonic()
        self.media_index: int | None = None
        #: Whether RTP from the peer is expected now (active sendrecv audio, not on hold).
        self.expect_rtp = False
        self.rtp_watch: RtpWatch | None = None
        #: The audio stream's RTP/RTCP counters at their last reading (:func:`rtp_quality`).
        self.rtp_quality: dict[str, float] | None = None
        #: The relay leg to OpenAI's SIP endpoint, for a relayed call (:mod:`.relay`).
        self.relay: RelayLeg | None = None
        #: This leg's audio in the bridge while it is relayed.
        self.relay_audio: Any = None
        #: DISCONNECTED was reported.
        self.gone = False
        #: The call's recording (a ``recording:`` route), started once media is up.
        self.recording: LegRecording | None = None

    def onCallState(self, prm: Any) -> None:
        """INVITE session state changed."""
        self.ua.guard(self._on_state)

    def _on_state(self) -> None:
        info = self.getInfo()
        state = state_name(info.state)
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed = True
            self.ua.leg_confirmed(self)
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ua.leg_gone(self, info.lastStatusCode, info.lastReason)
            return
        if self.ua.is_current(self):
            self.ua.emit(CallState(self.session_leg, state, info.lastStatusCode,
                                    info.lastReason, sip_call_id=info.callIdString))

    def onCallMediaState(self, prm: Any) -> None:
        """Media changed (answer, re-INVITE, hold, resume): (re)connect the port."""
        self.ua.guard(self._on_media)

    def _on_media(self) -> None:
        info = self.getInfo()
        # Hold (RFC 3264 §8.4: sendonly / inactive / c=0.0.0.0) shows as REMOTE_HOLD: no RTP
        # is expected then, so the inactivity timeout pauses until the caller resumes.
        self.expect_rtp = False
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            self.media_index = index
            self.expect_rtp = bool(media.dir & pj.PJMEDIA_DIR_DECODING)
            audio = self.getAudioMedia(index)
            channel = self.channel
            if self.relay is not None:  # the bridge joins it to OpenAI's leg: no port
                self.relay_audio = audio
                self.relay.relays.join(self)
            elif isinstance(channel, NativeChannel):
                if self.native_port is None:
                    self.native_port = channel.new_port(f"leg{self.leg_id}")
                self.native_port.connect(audio.getPortId())
            else:
                if self.port is None:
                    fmt = pj.MediaFormatAudio()
                    fmt.init(pj.PJMEDIA_FORMAT_PCM, 8000, 1, 20000, 16)
                    self.port = MediaPort(channel, self.ua.stats)
                    self.port.createPort(f"leg{self.leg_id}", fmt)
                audio.startTransmit(self.port)
                self.port.startTransmit(audio)
            self.start_recording()
            codec = self.getStreamInfo(index).codecName.upper()
            if self.ua.is_current(self):
                self.ua.emit(MediaActive(self.session_leg, "PCMA" if codec == "PCMA" else "PCMU"))
            return

    def start_recording(self) -> None:
        """Attach the call's recording if it has one and its media is up (sip thread).

        A relayed leg is never recorded here: its audio is OpenAI's leg's, not an agent port's.
        """
        if self.recording is None or self.relay is not None or self.media_index is None:
            return
        audio = self.getAudioMedia(self.media_index)
        self.recording.attach(audio.getPortId(), self.agent_slot())

    def agent_slot(self) -> int:
        """The bridge slot of the port that plays the agent to the caller (media up)."""
        if self.native_port is not None:
            return self.native_port.slot
        assert self.port is not None
        return int(self.port.getPortId())

    def rx_packets(self) -> int | None:
        """RTP packets received on the audio stream so far (``None`` without one).

        Also keeps the stream's quality (:attr:`rtp_quality`) from the same reading.
        """
        if self.media_index is None:
            return None
        rtcp = self.getStreamStat(self.media_index).rtcp
        self.rtp_quality = rtp_quality(rtcp)
        return int(rtcp.rxStat.pkt)

    def onStreamDestroyed(self, prm: Any) -> None:
        """The audio stream is about to go (hangup, the caller's BYE, a re-INVITE).

        The last moment its counters can be read: pjsua destroys the stream before it
        reports DISCONNECTED, where ``getStreamStat`` fails with ``PJ_EINVAL`` (and pjsip
        logged a warning for every call that ended).
        """
        if prm.streamIdx == self.media_index:
            self.ua.guard(self.rx_packets)  # keeps rtp_quality

    def onCallTransferRequest(self, prm: Any) -> None:
        """The caller sent REFER: refused unless the policy allows the target."""
        # Refuse first: whatever happens below, pjsua must never dial on a caller's behalf
        # unless the policy said yes and we own the new call (pjsua2 would otherwise reuse
        # this Call object for it, which crashed the process).
        prm.statusCode = 403
        self.ua.guard(lambda: self.ua.caller_refer(self, prm))

    def onDtmfEvent(self, prm: Any) -> None:
        """A caller DTMF event (RFC 4733 or SIP INFO)."""
        # pjsua 2.15 calls on_dtmf_event (not on_dtmf_digit) when the app handles it: once at
        # the start of an RFC 4733 event, again for updates and at its end (flags bit 0 =
        # PJMEDIA_STREAM_DTMF_IS_UPDATE); a SIP INFO digit comes once. Report each key once.
        if prm.flags & _DTMF_IS_UPDATE:
            return
        digit = str(prm.digit)
        method: Literal["rfc4733", "info"] = (
            "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733")
        relay = self.relay
        if relay is not None and not relay.gone:  # the agent hears it on OpenAI's leg
            self.ua.guard(lambda: send_dtmf(relay, digit))
        self.ua.guard(lambda: self.ua.emit(DtmfReceived(self.session_leg, digit, method)))

    def onCallTransferStatus(self, prm: Any) -> None:
        """NOTIFY progress of a REFER we sent."""
        code, reason, final = int(prm.statusCode), str(prm.reason), bool(prm.finalNotify)
        self.ua.guard(lambda: self.ua.emit(
            TransferProgress(self.session_leg, code, reason, final)))

    def destroy_port(self) -> None:
        """Destroy the C++ port while the Python object is whole (pjsua2-notes §4.1)."""
        if self.recording is not None:  # first: its files close before the leg is reported
            self.recording.stop()
        port, self.port = self.port, None
        if port is not None:
            pj.AudioMediaPort.__swig_destroy__(port)
        native, self.native_port = self.native_port, None
        if native is not None:
            native.detach()


class UaAccount(pj.Account):  # type: ignore[misc]
    """The trunk account or one registration account."""

    def __init__(self, ua: SipUserAgent, name: str) -> None:
        super().__init__()
        self.ua = ua
        self.name = name

    def onIncomingCall(self, prm: Any) -> None:
        """An INVITE for this account that pjsua accepted a slot for."""
        self.ua.guard(lambda: self.ua.incoming(self, prm))

    def onRegState(self, prm: Any) -> None:
        """A REGISTER transaction of this account ended."""
        code, reason, expires = int(prm.code), str(prm.reason), int(prm.expiration)
        self.ua.guard(lambda: self.ua.emit(RegistrationState(
            self.name, code, reason, expires, 200 <= code < 300 and expires > 0)))


class UaEndpoint(pj.Endpoint):  # type: ignore[misc]
    """The endpoint, for the one callback that tells us about INVITEs pjsua refused itself."""

    def __init__(self, ua: SipUserAgent) -> None:
        super().__init__()
        self.ua = ua

    def onRejectedIncomingCall(self, prm: Any) -> None:
        """An INVITE pjsua refused before any account callback."""
        # pjsua answered before any account callback (no codec in common, a body it cannot
        # read, 486 when out of slots): no call object exists, but the call gets a record.
        self.ua.guard(lambda: self.ua.rejected_by_pjsua(prm))


class LogWriter(pj.LogWriter):  # type: ignore[misc]
    """Routes pjsip's log into Python logging."""

    def write(self, entry: Any) -> None:
        """One pjsip log line, into the ``gateway.sip`` logger."""
        try:
            # pjsip's level 1 carries routine protocol refusals too ("Request verification
            # failed: Not Acceptable Here" for a 488), so it maps to WARNING, not ERROR.
            level = {0: logging.CRITICAL, 1: logging.WARNING, 2: logging.INFO,
                     3: logging.DEBUG}.get(entry.level, logging.DEBUG)
            log.log(level, "pjsip: %s", entry.msg.rstrip())
        except BaseException:
            pass


def state_name(state: int) -> str:
    """The pjsip INVITE session state name (``CONFIRMED``...)."""
    names = {pj.PJSIP_INV_STATE_NULL: "NULL", pj.PJSIP_INV_STATE_CALLING: "CALLING",
             pj.PJSIP_INV_STATE_INCOMING: "INCOMING", pj.PJSIP_INV_STATE_EARLY: "EARLY",
             pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
             pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
             pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED"}
    return names.get(state, str(state))


def send_dtmf(leg: Any, digit: str) -> None:
    """Send one digit as an RFC 4733 telephone-event on ``leg`` (a ``pj.Call``)."""
    prm = pj.CallSendDtmfParam()
    prm.digits = digit
    prm.method = pj.PJSUA_DTMF_METHOD_RFC2833
    leg.sendDtmf(prm)


def rtp_quality(rtcp: Any) -> dict[str, float]:
    """A call record's ``rtp``: packets, loss and jitter of a pjsua2 ``RtcpStat``.

    ``rx_*``: what the gateway received from the far end. ``tx_packets``: what it sent;
    ``tx_lost``, ``tx_jitter_ms_mean`` and ``rtt_ms_mean``: what the far end's RTCP reports
    said of them (zeros from a peer that sends no RTCP). Jitter and round trip in ms.
    """
    rx, tx = rtcp.rxStat, rtcp.txStat
    return {"rx_packets": int(rx.pkt), "rx_lost": int(rx.loss), "rx_discarded": int(rx.discard),
            "rx_jitter_ms_mean": round(rx.jitterUsec.mean / 1000, 2),
            "rx_jitter_ms_max": round(rx.jitterUsec.max / 1000, 2),
            "tx_packets": int(tx.pkt), "tx_lost": int(tx.loss),
            "tx_jitter_ms_mean": round(tx.jitterUsec.mean / 1000, 2),
            "rtt_ms_mean": round(rtcp.rttUsec.mean / 1000, 2)}

