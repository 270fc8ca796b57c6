"""The channel between the simulator and its SIP endpoint process, and the INVITE facts it needs.

The SIP endpoint (:mod:`gateway.sim.sipside`, a pjsua2 process of its own: one ``Endpoint``
per process) and the simulator (:mod:`gateway.sim.siplink`, on the simulator's event loop)
exchange length-prefixed JSON objects (:mod:`gateway.ipc.framing`) over one connected Unix
stream. Every message has a ``type`` and, for a call, ``leg`` (the endpoint's number for the
SIP dialog). Audio travels as base64 PCM16 LE 8 kHz in ``audio`` (caller, batched per poll of
the endpoint) and ``play`` (agent, one 20 ms frame each): about 60 bytes of JSON around 428
bytes of base64, a few microseconds to encode, so 50 frames per second per call each way stay
far from a slow path, with no HTTP request per frame. Here only the message shapes (checked on
receipt: a peer's bad message is an error, not a crash) and the pure reading of an INVITE: its
headers as the webhook shows them and whether its SDP offers SRTP. No I/O.

Endpoint -> simulator: ``ready {transports: [{type, host, port}]}``, ``failed {reason}``,
``invite {leg, headers: [[name, value]], media_security}``, ``audio {leg, pcm}``,
``dtmf {leg, digits}``, ``transfer {leg, status, final}`` (a NOTIFY of our REFER),
``ended {leg, status, reason}``. Simulator -> endpoint: ``answer {leg, status}``,
``hangup {leg}``, ``refer {leg, target}``, ``play {leg, pcm}``, ``stop {}``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway.ipc.framing import encode_frame

__all__ = [
    "FROM_ENDPOINT",
    "FROM_SIMULATOR",
    "WireError",
    "check",
    "decode_pcm",
    "encode",
    "encode_pcm",
    "media_security",
    "webhook_headers",
]

#: Message types and their required fields (name -> Python type), endpoint to simulator.
FROM_ENDPOINT: Final[Mapping[str, Mapping[str, type]]] = {
    "ready": {"transports": list},
    "failed": {"reason": str},
    "invite": {"leg": int, "headers": list, "media_security": str},
    "audio": {"leg": int, "pcm": str},
    "dtmf": {"leg": int, "digits": str},
    "transfer": {"leg": int, "status": int, "final": bool},
    "ended": {"leg": int, "status": int, "reason": str},
}
#: ... and simulator to endpoint.
FROM_SIMULATOR: Final[Mapping[str, Mapping[str, type]]] = {
    "answer": {"leg": int, "status": int},
    "hangup": {"leg": int},
    "refer": {"leg": int, "target": str},
    "play": {"leg": int, "pcm": str},
    "stop": {},
}
#: Headers the real webhook leaves out (credentials).
_DROPPED_HEADERS: Final = frozenset({"authorization", "proxy-authorization"})
_SAVP = re.compile(r"^m=audio\s+\d+(?:/\d+)?\s+(?:RTP/SAVP|RTP/SAVPF)\b", re.MULTILINE)
_CRYPTO = re.compile(r"^a=crypto:", re.MULTILINE)


class WireError(ValueError):
    """A message of the wrong shape (unknown type, missing or mistyped field)."""


def encode(message: Mapping[str, Any]) -> bytes:
    """One frame carrying ``message``."""
    return encode_frame(message)


def check(message: Mapping[str, Any], allowed: Mapping[str, Mapping[str, type]]) -> str:
    """The type of a received message, after checking its fields.

    Raises:
        WireError: Unknown type, or a field missing or of the wrong type (bool is not int).
    """
    kind = message.get("type")
    fields = allowed.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise WireError(f"unknown message type {kind!r}")
    for name, want in fields.items():
        value = message.get(name)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise WireError(f"{kind}: field {name!r} must be {want.__name__}")
    return str(kind)


def encode_pcm(pcm16: bytes) -> str:
    """PCM16 bytes as the ``pcm`` field."""
    return base64.b64encode(pcm16).decode("ascii")


def decode_pcm(field: str) -> bytes:
    """The ``pcm`` field's bytes.

    Raises:
        WireError: Not base64, or an odd number of bytes (not PCM16).
    """
    try:
        pcm = base64.b64decode(field, validate=True)
    except (binascii.Error, ValueError):
        raise WireError("pcm is not base64") from None
    if len(pcm) % 2:
        raise WireError("pcm has an odd number of bytes")
    return pcm


def webhook_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """An INVITE's headers as ``realtime.call.incoming`` lists them: in order, no credentials."""
    return [(n, v) for n, v in headers if n.lower() not in _DROPPED_HEADERS]


def media_security(sdp: str) -> str:
    """``srtp`` when the offer's audio is RTP/SAVP(F) with SDES keys (``a=crypto``), else ``rtp``.

    A DTLS-SRTP offer (UDP/TLS/RTP/SAVP) is not SDES and pjsua here does not answer it, so
    it counts as ``rtp`` (the endpoint refuses what it cannot answer anyway).
    """
    return "srtp" if _SAVP.search(sdp) and _CRYPTO.search(sdp) else "rtp"
