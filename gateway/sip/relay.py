"""Relayed calls: the caller's leg joined to a second call to OpenAI's SIP endpoint.

A ``relay:`` route answers the caller only once OpenAI has answered a second call, the *relay
leg*, placed from a dedicated account (its own TLS client transport, SRTP per
``openai_calls.sip_srtp``). Both legs' audio streams are then connected both ways in pjsua's
conference bridge: pjmedia moves (and, PCMU to PCMA, transcodes) every frame in C, so no Python
runs per frame of a relayed call. What each side does reaches the other:

* OpenAI rings (180/183): the caller hears ringing (180, once);
* OpenAI answers: the caller gets 200;
* OpenAI refuses: the caller gets the same 4xx/6xx (the far dialplan decided), or 503 for a
  5xx, a timeout or a transport failure (let a PBX try elsewhere);
* either side hangs up: the other gets BYE (or CANCEL while ringing);
* DTMF (RFC 4733) on either leg is sent on the other;
* a REFER from OpenAI is declined (pjsua would otherwise dial its target from the gateway)
  and reported as :class:`~gateway.sip.events.RelayReferred`: the call's owner transfers the
  caller's leg to that target instead.

Everything here runs on the ``sip`` thread, called by :class:`~gateway.sip.ua.SipUserAgent`,
and never raises into pjsua2 (each callback body goes through ``ua.guard``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from gateway.config import OpenAICallsSettings, SrtpMode
from gateway.sip._pj import error_text, pj
from gateway.sip.events import RelayReferred
from gateway.sip.legs import send_dtmf, state_name

if TYPE_CHECKING:
    from gateway.sip.legs import Leg
    from gateway.sip.ua import SipUserAgent

log = logging.getLogger("gateway.sip")

_DTMF_IS_UPDATE: Final = 1  # PJMEDIA_STREAM_DTMF_IS_UPDATE
_SRTP: Final = {"off": "PJMEDIA_SRTP_DISABLED", "optional": "PJMEDIA_SRTP_OPTIONAL",
                "mandatory": "PJMEDIA_SRTP_MANDATORY"}
#: OpenAI's final statuses passed on to the caller as they are; others become 503.
_PASSED_ON: Final = frozenset({403, 404, 480, 486, 488, 600, 603, 604, 606})


@dataclass(frozen=True)
class RelayConfig:
    """How relay legs are placed.

    Attributes:
        srtp: SRTP on the relay leg (SDES keys need TLS signalling: ``srtpSecureSignaling``).
        ca_file: CA bundle the TLS server certificate is checked against.
        verify_server: Whether the certificate chain and name are checked.
    """

    srtp: SrtpMode = "mandatory"
    ca_file: str = ""
    verify_server: bool = True

    @classmethod
    def of(cls, settings: OpenAICallsSettings) -> RelayConfig | None:
        """The relay settings, or ``None`` when webhook calls are off (no relay possible)."""
        if not settings.enabled:
            return None
        return cls(settings.sip_srtp, settings.sip_ca_file, settings.sip_verify_server)


def caller_status(status: int) -> tuple[int, str]:
    """The final response the caller gets when OpenAI's leg failed with ``status``."""
    if status in _PASSED_ON:
        return status, ""
    return 503, "Relay Failed"


class RelayLeg(pj.Call):  # type: ignore[misc]
    """The gateway's call to OpenAI's SIP endpoint for one caller leg (``sip`` thread)."""

    def __init__(self, relays: Relays, account: Any, caller: Leg) -> None:
        super().__init__(account)
        self.relays = relays
        self.caller = caller
        self.audio: Any = None
        self.confirmed = False
        self.gone = False
        self.rang = False

    def onCallState(self, prm: Any) -> None:
        """The relay leg's INVITE session changed."""
        self.relays.ua.guard(self._on_state)

    def _on_state(self) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_EARLY and not self.rang:
            self.rang = True
            self.relays.ringing(self)
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
            self.confirmed = True
            self.relays.answered(self)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.relays.gone(self, int(info.lastStatusCode), str(info.lastReason))
        log.debug("relay leg of leg %d: %s", self.caller.leg_id, state_name(info.state))

    def onCallMediaState(self, prm: Any) -> None:
        """Media changed: (re)join the two legs in the bridge."""
        self.relays.ua.guard(self._on_media)

    def _on_media(self) -> None:
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO \
                    and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.audio = self.getAudioMedia(index)
                self.relays.join(self.caller)
                return

    def onDtmfEvent(self, prm: Any) -> None:
        """A digit from OpenAI's side: sent on to the caller."""
        if prm.flags & _DTMF_IS_UPDATE:
            return
        digit = str(prm.digit)
        self.relays.ua.guard(lambda: send_dtmf(self.caller, digit))

    def onCallTransferRequest(self, prm: Any) -> None:
        """OpenAI sent REFER: declined here, carried out on the caller's leg by the owner."""
        prm.statusCode = 603  # pjsua must never dial the target from the gateway
        target = str(prm.dstUri)
        ua = self.relays.ua
        ua.guard(lambda: ua.emit(RelayReferred(self.caller.session_leg, target)))


class Relays:
    """The relay legs of one user agent, by caller leg id (``sip`` thread only)."""

    def __init__(self, ua: SipUserAgent, config: RelayConfig) -> None:
        self.ua = ua
        self.config = config
        self.legs: dict[int, RelayLeg] = {}
        self._account: Any = None
        self.transport: str | None = None

    def create(self, ep: Any, host: str) -> None:
        """Create the relay account and its TLS client transport (after ``libStart``)."""
        tc = pj.TransportConfig()
        tc.port = 0
        tc.boundAddress = host
        tls = tc.tlsConfig
        tls.CaListFile = self.config.ca_file
        tls.method = pj.PJSIP_TLSV1_2_METHOD
        tls.verifyServer = self.config.verify_server
        tid = ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tc)
        self.transport = str(ep.transportGetInfo(tid).localName)
        ac = self.ua.account_config(f"sip:gateway@{self.transport}")
        # pjsua counts RTP ports per account: the relay account takes the upper half of the
        # range, so it never tries the ports the callers' legs hold (bind errors otherwise).
        media = ac.mediaConfig.transportConfig
        half = (media.portRange // 2) & ~1
        if half:
            media.port += half
            media.portRange -= half
        ac.mediaConfig.srtpUse = getattr(pj, _SRTP[self.config.srtp])
        # SDES keys travel in the SDP: only over TLS (pjsua refuses SRTP on plain SIP then).
        ac.mediaConfig.srtpSecureSignaling = 1 if self.config.srtp != "off" else 0
        account = pj.Account()
        account.create(ac)
        self._account = account
        log.info("relayed calls: TLS client on %s, SRTP %s, server certificate %s",
                 self.transport, self.config.srtp,
                 "checked" if self.config.verify_server else "NOT checked")

    @property
    def count(self) -> int:
        """Relay legs holding a call slot."""
        return len(self.legs)

    def dial(self, caller: Leg, uri: str, headers: tuple[tuple[str, str], ...]) -> None:
        """Place the relay leg of ``caller``; on failure the caller gets 503."""
        if caller.relay is not None or caller.answered or self._account is None:
            log.warning("leg %d: relay not placed (%s)", caller.leg_id,
                        "already relayed" if caller.relay is not None else
                        "already answered" if caller.answered else "relay not configured")
            if not caller.answered:
                self._refuse(caller, 503, "relay not configured")
            return
        leg = RelayLeg(self, self._account, caller)
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        for name, value in headers:
            h = pj.SipHeader()
            h.hName, h.hValue = name, value
            prm.txOption.headers.append(h)
        try:
            leg.makeCall(uri, prm)
        except Exception as exc:  # pjsua2.Error: no slot, bad URI, no transport
            log.error("leg %d: relay call could not be placed: %s", caller.leg_id,
                      error_text(exc))
            self._refuse(caller, 503, f"relay call not placed: {error_text(exc)}")
            return
        caller.relay = leg
        self.legs[caller.leg_id] = leg
        log.info("leg %d: relaying to OpenAI's SIP endpoint", caller.leg_id)

    def _refuse(self, caller: Leg, status: int, cause: str) -> None:
        caller.cause = cause
        self.ua.answer_leg(caller, status, "Relay Failed" if status == 503 else "")

    # Relay leg events -------------------------------------------------------------------

    def ringing(self, leg: RelayLeg) -> None:
        """OpenAI rings: so does the caller (once)."""
        caller = leg.caller
        if not caller.answered and not leg.gone:
            self.ua.answer_leg(caller, 180, "Ringing")

    def answered(self, leg: RelayLeg) -> None:
        """OpenAI answered: answer the caller (media joins when both streams are up)."""
        caller = leg.caller
        if not caller.answered:
            self.ua.answer_leg(caller, 200, "OK")

    def join(self, caller: Leg) -> None:
        """Connect the two legs' audio both ways once both are active."""
        leg = caller.relay
        if leg is None or leg.audio is None or caller.relay_audio is None:
            return
        caller.relay_audio.startTransmit(leg.audio)
        leg.audio.startTransmit(caller.relay_audio)

    def gone(self, leg: RelayLeg, status: int, reason: str) -> None:
        """The relay leg ended: so does the caller's (final response, or BYE)."""
        leg.gone = True
        leg.audio = None
        caller = leg.caller
        self.legs.pop(caller.leg_id, None)
        if caller.local_hangup or caller.gone:
            return  # the caller's end caused this one
        if leg.confirmed:
            caller.cause = caller.cause or "OpenAI's leg hung up"
            self.ua.end_leg(caller, 200)
            return
        code, phrase = caller_status(status)
        caller.cause = f"OpenAI's leg failed: {status} {reason}"
        log.info("leg %d: relay leg failed (%d %s): caller gets %d", caller.leg_id, status,
                 reason, code)
        self.ua.answer_leg(caller, code, phrase)

    def caller_gone(self, caller: Leg) -> None:
        """The caller's leg ended: end the relay leg (BYE, or CANCEL while it rings)."""
        caller.relay_audio = None
        leg = caller.relay
        if leg is None or leg.gone:
            return
        leg.gone = True
        leg.audio = None
        try:
            leg.hangup(pj.CallOpParam(True))
        except Exception as exc:  # already disconnecting
            log.debug("relay leg of leg %d: hangup: %s", caller.leg_id, error_text(exc))

    def shutdown(self) -> None:
        """Forget the account and the legs (the endpoint is about to be destroyed)."""
        self.legs.clear()
        if self._account is not None:
            self._account.shutdown()
            self._account = None

