"""Checks on an incoming INVITE that pjsua would otherwise get wrong, as pure functions.

pjsua answers some offers it cannot serve only when the application answers 200 (an IPv6-only
``c=`` line fails in SDP negotiation after the call has rung and been routed), and it takes a
UDP datagram whose ``Content-Length`` promises more body than arrived as if nothing were
missing. These functions look at the INVITE's text first so the gateway refuses such calls at
once, with the status RFC 3261 names and a ``Warning`` header (RFC 3261 §20.43 codes 301-305)
that tells the caller's administrator why, and before any route, agent or Realtime session is
involved. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: Static RTP payload types of the codecs the gateway carries (RFC 3551 table 4).
_STATIC_PT = {"PCMU": "0", "PCMA": "8"}


@dataclass(frozen=True)
class Refusal:
    """Why an INVITE is refused: final status, reason phrase and extra headers."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    #: What the call record and the log say (no call content).
    detail: str = ""


def _warning(code: int, text: str) -> tuple[str, str]:
    return ("Warning", f'{code} gateway "{text}"')


def content_length_refusal(message: bytes | str, transport: str) -> Refusal | None:
    """A 400 for a datagram shorter than its ``Content-Length`` says (RFC 3261 §18.3).

    Over a stream transport pjsip waits for the whole body, so only UDP can be short.
    """
    if transport != "udp":
        return None
    data = message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    declared: int | None = None
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            try:
                declared = int(value.strip())
            except ValueError:
                return Refusal(400, "Bad Content-Length", detail="unreadable Content-Length")
            break
    if declared is not None and declared > len(body):
        return Refusal(400, "Content-Length Exceeds Datagram",
                       detail=f"Content-Length {declared} but {len(body)} body bytes")
    return None


def offer_refusal(body: str, content_type: str | None, *, codecs: Sequence[str],
                  srtp: Literal["off", "optional", "mandatory"] = "off") -> Refusal | None:
    """Why an SDP offer (RFC 4566 / RFC 3264) cannot be answered, or ``None`` when it can.

    An INVITE without a body is a late offer and is fine. Only the first audio stream the
    gateway would use matters; video or other streams are declined by pjsua as usual.

    Args:
        body: The INVITE's body (text).
        content_type: Its ``Content-Type`` header value, if any.
        codecs: The codecs the gateway is configured for (``PCMU``, ``PCMA``).
        srtp: The SDES-SRTP policy: with ``mandatory`` a plain RTP offer is refused.
    """
    if not body.strip():
        return None
    mime = (content_type or "application/sdp").split(";", 1)[0].strip().lower()
    if mime != "application/sdp":
        return Refusal(415, "Unsupported Media Type", (("Accept", "application/sdp"),),
                       detail=f"body of type {mime}")
    session_c: str | None = None
    streams: list[tuple[list[str], list[str]]] = []  # (m= fields, attribute/c= lines)
    for raw in body.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:].strip()
        if kind == "m":
            streams.append((value.split(), []))
        elif streams:
            streams[-1][1].append(line)
        elif kind == "c":
            session_c = value
    audio = [(m, lines) for m, lines in streams if m and m[0] == "audio"]
    if not audio:
        return Refusal(488, "Not Acceptable Here", (_warning(304, "No audio stream offered"),),
                       detail="no audio stream in the offer")
    usable = [(m, lines) for m, lines in audio if len(m) >= 4 and m[1] != "0"]
    if not usable:
        return Refusal(488, "Not Acceptable Here", (_warning(304, "Audio stream refused"),),
                       detail="every audio stream has port 0 or no formats")
    refusals = [_stream_refusal(m, lines, session_c, codecs, srtp) for m, lines in usable]
    if any(r is None for r in refusals):
        return None  # pjsua answers the first stream it can use
    return refusals[0]


def _stream_refusal(m: Sequence[str], lines: Sequence[str], session_c: str | None,
                    codecs: Sequence[str], srtp: str) -> Refusal | None:
    media_c = next((line[2:].strip() for line in lines if line.startswith("c=")), None)
    connection = media_c or session_c
    if connection is None:
        return Refusal(488, "Not Acceptable Here", (_warning(399, "No connection address"),),
                       detail="no c= line for the audio stream")
    parts = connection.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        return Refusal(488, "Not Acceptable Here",
                       (_warning(300, "Incompatible network protocol"),),
                       detail="unreadable c= line")
    if parts[1] != "IP4":
        return Refusal(488, "Not Acceptable Here",
                       (_warning(301, "Incompatible network address formats"),),
                       detail="IPv6-only media address; the gateway's media is IPv4")
    proto = m[2].upper()
    secure = proto in ("RTP/SAVP", "RTP/SAVPF")
    if proto not in ("RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF"):
        return Refusal(488, "Not Acceptable Here",
                       (_warning(302, "Incompatible transport protocol"),),
                       detail=f"media transport {m[2]}")
    has_crypto = any(line.startswith("a=crypto:") for line in lines)
    if srtp == "mandatory" and not (secure and has_crypto):
        return Refusal(488, "Not Acceptable Here",
                       (_warning(302, "SRTP (SDES) required"),),
                       detail="plain RTP offered but srtp is mandatory")
    if secure and srtp == "off":
        return Refusal(488, "Not Acceptable Here",
                       (_warning(302, "SRTP not enabled"),),
                       detail="SRTP offered but srtp is off")
    if not _has_codec(m[3:], lines, codecs):
        return Refusal(488, "Not Acceptable Here",
                       (_warning(305, "Incompatible media format"),),
                       detail="no offered codec in common")
    return None


def _has_codec(formats: Sequence[str], lines: Sequence[str], codecs: Sequence[str]) -> bool:
    wanted = {c.upper() for c in codecs}
    static = {pt for name, pt in _STATIC_PT.items() if name in wanted}
    if any(f in static for f in formats):
        return True
    for line in lines:
        if not line.startswith("a=rtpmap:"):
            continue
        pt, _, encoding = line[len("a=rtpmap:"):].partition(" ")
        name, _, rate = encoding.strip().partition("/")
        if pt in formats and name.upper() in wanted and rate.split("/")[0] == "8000":
            return True
    return False
