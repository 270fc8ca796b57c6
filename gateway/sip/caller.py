"""``gateway call``: a pjsua2 softphone for one call, for trying and testing a gateway.

It dials a SIP URI, plays a WAV file into the call, records what it hears to a WAV file, and
hangs up after a set time (or when the far end does). It prints one JSON summary on stdout:
final status, who hung up, and the monotonic clock times (``time.monotonic()``, system-wide on
Linux) at which the call was answered and recording started, so a test can line the recording
up with events seen elsewhere. Runs its own pjsua2 endpoint on the calling thread (one endpoint
per process); nothing here is shared with the gateway's user agent.
"""

from __future__ import annotations

import os
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.sip._pj import create_endpoint, pj


@dataclass
class CallReport:
    """What happened on the call (printed as JSON)."""

    uri: str
    status: int | None = None
    reason: str = ""
    codec: str | None = None
    answered_at: float | None = None
    record_started_at: float | None = None
    play_started_at: float | None = None
    dtmf_sent_at: float | None = None
    ended_at: float | None = None
    ended_by: str = ""
    states: list[str] = field(default_factory=list)


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, account: Any, report: CallReport, play: str | None,
                 record: str | None) -> None:
        super().__init__(account)
        self.report = report
        self.play_path = play
        self.record_path = record
        self.player: Any = None
        self.recorder: Any = None
        self.source_path: str | None = None
        self.disconnected = False

    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        self.report.states.append(f"{info.stateText} {info.lastStatusCode}")
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and self.report.answered_at is None:
            self.report.answered_at = time.monotonic()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.report.status = self.report.status or info.lastStatusCode
            self.report.reason = self.report.reason or info.lastReason
            self.report.ended_at = time.monotonic()
            self.report.ended_by = self.report.ended_by or "remote"
            self.disconnected = True

    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            audio = self.getAudioMedia(index)
            self.report.codec = str(self.getStreamInfo(index).codecName)
            if self.record_path and self.recorder is None:
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(self.record_path)
                audio.startTransmit(self.recorder)
                self.report.record_started_at = time.monotonic()
            if self.source_path is not None and self.player is None:
                # One player for the whole call: the --play audio, then silence, because a
                # phone streams RTP all call long (with no source on the call port pjmedia
                # stops sending after about a second, and queued DTMF would never leave).
                self.player = pj.AudioMediaPlayer()
                self.player.createPlayer(self.source_path, pj.PJMEDIA_FILE_NO_LOOP)
                self.player.startTransmit(audio)
                if self.play_path:
                    self.report.play_started_at = time.monotonic()
            return


def place_call(uri: str, *, play: str | None = None, record: str | None = None,
               duration_s: float = 10.0, bind: str = "127.0.0.1", port: int = 0,
               codec: str | None = None, transport: str = "udp", answer_timeout_s: float = 15.0,
               dtmf: str = "", dtmf_after_s: float = 1.0, log_level: int = 0,
               srtp: str = "off",
               on_report: Callable[[CallReport], None] | None = None) -> CallReport:
    """Place one call and return what happened. Blocks for at most ``duration_s`` + setup.

    ``on_report`` gets the report as soon as the call is over, before the endpoint is torn
    down.
    """
    report = CallReport(uri)
    if transport != "udp" and ";transport=" not in uri:
        uri = f"{uri};transport={transport}"
        report.uri = uri
    ep = create_endpoint()
    try:
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.logConfig.level = log_level
        cfg.logConfig.consoleLevel = log_level
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 0
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.noVad = True
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()
        if codec:
            for c in ep.codecEnum2():
                ep.codecSetPriority(c.codecId, 254 if c.codecId.startswith(codec) else 0)
        tc = pj.TransportConfig()
        tc.boundAddress = bind
        tc.port = port
        kind = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP,
                "tls": pj.PJSIP_TRANSPORT_TLS}[transport]
        if transport == "tls":
            tc.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
        ep.transportCreate(kind, tc)
        ep.libStart()
        ac = pj.AccountConfig()
        ac.idUri = f"sip:caller@{bind}"
        ac.mediaConfig.transportConfig.boundAddress = bind
        ac.mediaConfig.transportConfig.port = 0
        # SDES-SRTP (RFC 4568): offer RTP/SAVP with a=crypto; keys travel in the SDP, so a
        # test over UDP allows them on plain signalling.
        ac.mediaConfig.srtpUse = {"off": pj.PJMEDIA_SRTP_DISABLED,
                                  "optional": pj.PJMEDIA_SRTP_OPTIONAL,
                                  "mandatory": pj.PJMEDIA_SRTP_MANDATORY}[srtp]
        ac.mediaConfig.srtpSecureSignaling = 0
        account = pj.Account()
        account.create(ac)
        _run_call(ep, account, report, play, record, duration_s, answer_timeout_s,
                  dtmf, dtmf_after_s)
        if on_report is not None:
            # The call is over: report it before teardown, which the wheel's pjsua2 has
            # been seen to crash in now and then (a lost report would hide a good call).
            on_report(report)
        account.shutdown()
        del account
    finally:
        ep.libDestroy()
    return report


def _run_call(ep: Any, account: Any, report: CallReport, play: str | None, record: str | None,
              duration_s: float, answer_timeout_s: float, dtmf: str,
              dtmf_after_s: float) -> None:
    call = _Call(account, report, play, record)
    with tempfile.TemporaryDirectory(prefix="gateway-call-") as tmp:
        # Outlasts the call: media can start with early media, before the answer wait.
        call.source_path = write_call_audio(os.path.join(tmp, "source.wav"), play,
                                            answer_timeout_s + duration_s + _TEARDOWN_S + 2.0)
        _drive(ep, call, report, duration_s, answer_timeout_s, dtmf, dtmf_after_s)


_TEARDOWN_S = 3.0  # how long _drive waits for the far end's answer to our BYE
_WAV_HEADER = 44
_WAV_MAX_DATA = 0xFFFF_FFFF - 36  # the RIFF size fields are 32-bit


def write_call_audio(path: str, play: str | None, seconds: float) -> str:
    """Write the caller's one source: ``play``'s audio (if any), then silence to ``seconds``.

    A player must never reach its end while the call is being torn down: pjsua2 delivers a
    player's end-of-file callback on the media event thread with a pointer to the
    ``AudioMediaPlayer``, which may already be freed by then (the conference bridge keeps
    reading the port until its asynchronous removal runs). A looped one-second silence hit
    that about twice in a hundred calls and the caller died of SIGSEGV. So the file is long
    enough never to end during the call; the silence is a hole in a sparse file, so it costs
    no disk. A ``play`` file Python's ``wave`` cannot read (not PCM) is played as it is.
    """
    channels, width, rate, frames = 1, 2, 8000, b""
    if play:
        try:
            with wave.open(play, "rb") as src:
                channels, width, rate = src.getnchannels(), src.getsampwidth(), src.getframerate()
                frames = src.readframes(src.getnframes())
        except (wave.Error, EOFError):
            return play
    frame_bytes = channels * width
    total = max(len(frames), int(seconds * rate) * frame_bytes)
    total = min(total, _WAV_MAX_DATA - _WAV_MAX_DATA % frame_bytes)
    header = b"".join((
        b"RIFF", (36 + total).to_bytes(4, "little"), b"WAVEfmt ",
        (16).to_bytes(4, "little"), (1).to_bytes(2, "little"), channels.to_bytes(2, "little"),
        rate.to_bytes(4, "little"), (rate * frame_bytes).to_bytes(4, "little"),
        frame_bytes.to_bytes(2, "little"), (width * 8).to_bytes(2, "little"),
        b"data", total.to_bytes(4, "little")))
    with open(path, "wb") as out:
        out.write(header)
        out.write(frames[:total])
        out.truncate(_WAV_HEADER + total)
    return path


def _drive(ep: Any, call: _Call, report: CallReport, duration_s: float,
           answer_timeout_s: float, dtmf: str, dtmf_after_s: float) -> None:
    call.makeCall(report.uri, pj.CallOpParam(True))
    start = time.monotonic()
    while not call.disconnected:
        ep.libHandleEvents(10)
        now = time.monotonic()
        if report.answered_at is None and now - start > answer_timeout_s:
            report.ended_by = "local: no answer"
            call.hangup(pj.CallOpParam(True))
            break
        if dtmf and report.answered_at is not None and now - report.answered_at > dtmf_after_s:
            call.dialDtmf(dtmf)  # RFC 4733 telephone-events
            report.dtmf_sent_at = now
            dtmf = ""
        if report.answered_at is not None and now - report.answered_at > duration_s:
            report.ended_by = "local"
            call.hangup(pj.CallOpParam(True))
            break
    deadline = time.monotonic() + _TEARDOWN_S
    while not call.disconnected and time.monotonic() < deadline:
        ep.libHandleEvents(10)
    # Stop media objects before the call object goes (pjsua2-notes §4.2, §5.6).
    call.player = None
    call.recorder = None
