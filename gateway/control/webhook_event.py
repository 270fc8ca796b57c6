"""The ``realtime.call.incoming`` webhook event, read into a call the dialplan can route.

OpenAI posts it when its SIP endpoint answers an INVITE (docs: Realtime SIP)::

    {"object": "event", "id": "evt_...", "type": "realtime.call.incoming",
     "created_at": 1750287018,
     "data": {"call_id": "rtc_...",
              "sip_headers": [{"name": "From", "value": "sip:+1425...@sip.example.com"}, ...],
              "sip_media_security": "srtp"}}

:func:`parse_event` checks the shape (a bad one is a :class:`BadEvent` naming the field);
:func:`call_info` turns the INVITE's headers into the :class:`~gateway.dialplan.router.CallInfo`
the router matches (``ingress: openai``, no account, no source address: the headers are what
the caller sent OpenAI, untrusted). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gateway.dialplan.router import CallInfo, first_values
from gateway.errors import GatewayError
from gateway.realtime.calls import CALL_ID_RE
from gateway.sip.message import display_name, name_addr_uri, uri_user

__all__ = ["INCOMING", "BadEvent", "IncomingCallEvent", "call_info", "parse_event"]

#: The event type this module reads.
INCOMING: Final = "realtime.call.incoming"
#: Headers kept from one webhook (more are ignored) and the longest name and value kept.
_MAX_HEADERS: Final = 200
_MAX_NAME: Final = 128
_MAX_VALUE: Final = 2048


class BadEvent(GatewayError):
    """A webhook body that is not a well-formed event (the reason names the field)."""


@dataclass(frozen=True, slots=True)
class IncomingCallEvent:
    """One ``realtime.call.incoming`` delivery.

    Attributes:
        event_id: The event's ``id`` (``evt_...``).
        call_id: The call to accept, reject or refer, and to attach a sideband to.
        sip_headers: The INVITE's headers as OpenAI passed them, in order, repeats kept.
        media_security: ``srtp``, ``rtp`` or ``None`` when absent.
    """

    event_id: str
    call_id: str
    sip_headers: tuple[tuple[str, str], ...]
    media_security: str | None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        lower = name.lower()
        return next((v for n, v in self.sip_headers if n.lower() == lower), None)


def event_type(body: Any) -> str:
    """The ``type`` of a webhook body (``""`` when it has none)."""
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        return str(body["type"])[:128]
    return ""


def parse_event(body: Any) -> IncomingCallEvent:
    """Read a ``realtime.call.incoming`` body (already JSON-decoded).

    Raises:
        BadEvent: Not an object of that type, or a field of the wrong shape.
    """
    if not isinstance(body, dict) or body.get("type") != INCOMING:
        raise BadEvent(f"not a {INCOMING} event")
    event_id = body.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise BadEvent("id: must be a non-empty string")
    data = body.get("data")
    if not isinstance(data, dict):
        raise BadEvent("data: must be an object")
    call_id = data.get("call_id")
    if not isinstance(call_id, str) or not CALL_ID_RE.fullmatch(call_id):
        raise BadEvent("data.call_id: must be a call id (letters, digits, _ and -)")
    raw_headers = data.get("sip_headers", [])
    if not isinstance(raw_headers, list):
        raise BadEvent("data.sip_headers: must be a list")
    headers: list[tuple[str, str]] = []
    for i, item in enumerate(raw_headers[:_MAX_HEADERS]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("value"), str):
            raise BadEvent(f"data.sip_headers[{i}]: must be {{name: string, value: string}}")
        headers.append((item["name"][:_MAX_NAME], item["value"][:_MAX_VALUE]))
    security = data.get("sip_media_security")
    if security is not None and not isinstance(security, str):
        raise BadEvent("data.sip_media_security: must be a string")
    return IncomingCallEvent(event_id[:128], call_id, tuple(headers),
                             security[:32] if security else None)


def call_info(event: IncomingCallEvent) -> CallInfo:
    """What the router knows about a webhook call: its INVITE's headers, ``ingress: openai``."""
    from_value = event.header("From") or ""
    to_uri = name_addr_uri(event.header("To") or "")
    return CallInfo(
        to_user=uri_user(to_uri), from_user=uri_user(name_addr_uri(from_value)),
        request_uri=to_uri, headers=first_values(event.sip_headers), account=None,
        source_ip="", caller_name=display_name(from_value), ingress="openai")
