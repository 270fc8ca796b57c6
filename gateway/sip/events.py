"""Events the SIP user agent hands from its pjsua2 thread to the asyncio loop.

Plain frozen values: they carry no pjsua2 object, so nothing on the asyncio side can keep a
SWIG proxy alive past its call (see pjsua2-notes §4.2) or touch pjsua2 from an unregistered
thread. Call states use RFC 3261 / pjsip INVITE session names (``EARLY``, ``CONFIRMED``,
``DISCONNECTED``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.media.channel import MediaChannel

Codec = Literal["PCMU", "PCMA"]


def _now() -> float:
    return time.monotonic()


@dataclass(frozen=True)
class IncomingCall:
    """An INVITE arrived and holds a call slot; the loop must answer or reject it."""

    leg_id: int
    sip_call_id: str
    from_uri: str
    from_user: str
    from_name: str | None
    to_uri: str
    to_user: str
    request_uri: str
    headers: tuple[tuple[str, str], ...]
    source_ip: str
    source_port: int
    transport: str
    account: str
    media: MediaChannel
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class MediaActive:
    """The call's audio is flowing through our media port with ``codec`` on the wire."""

    leg_id: int
    codec: Codec
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class CallState:
    """The INVITE session changed state (``EARLY``, ``CONNECTING``, ``CONFIRMED``...)."""

    leg_id: int
    state: str
    status: int
    reason: str
    at: float = field(default_factory=_now)
    #: The dialog's SIP Call-ID (a call the gateway places learns its own here).
    sip_call_id: str = ""


@dataclass(frozen=True)
class LegEnded:
    """The call is over (``DISCONNECTED``); the slot is free and the media port destroyed.

    ``cause`` is set when the gateway itself ended the call for a SIP-side reason (no RTP
    from the caller, an expired session timer): the call record says that, not "caller hung
    up".
    """

    leg_id: int
    status: int
    reason: str
    at: float = field(default_factory=_now)
    cause: str | None = None
    #: The audio stream's packets, loss and jitter (``gateway.sip.legs.rtp_quality``).
    rtp: Mapping[str, float] | None = None


@dataclass(frozen=True)
class CallRefused:
    """The user agent refused an INVITE itself, before the loop saw it.

    Capacity, an offer it cannot serve or a malformed message: the call never reaches the
    dialplan.
    """

    leg_id: int
    sip_call_id: str
    status: int
    reason: str
    detail: str
    source_ip: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class CallerRefer:
    """The caller sent an in-dialog REFER (RFC 3515).

    ``status`` is what the gateway answered: 403 unless ``sip.caller_refer_allow`` allows
    the target.
    """

    leg_id: int
    status: int
    allowed: bool
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class RegistrationState:
    """A registration account's state after a REGISTER transaction."""

    account: str
    status: int
    reason: str
    expires_s: int
    active: bool
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class DtmfReceived:
    """A keypad digit from the caller (RFC 4733 telephone-event or SIP INFO)."""

    leg_id: int
    digit: str
    method: Literal["rfc4733", "info"]
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class TransferProgress:
    """NOTIFY progress of a REFER we sent (sipfrag status)."""

    leg_id: int
    status: int
    reason: str
    final: bool
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class RelayReferred:
    """OpenAI's leg of a relayed call sent REFER: the caller should go to ``target``.

    The REFER itself was declined (pjsua would otherwise dial ``target`` from the gateway);
    the call's owner transfers the caller's leg instead.
    """

    leg_id: int
    target: str
    at: float = field(default_factory=_now)


SipEvent = (IncomingCall | MediaActive | CallState | LegEnded | RegistrationState
            | DtmfReceived | TransferProgress | CallRefused | CallerRefer
            | RelayReferred)
