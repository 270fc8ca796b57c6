"""Pure helpers for reading the parts of a SIP request the dialplan matches on.

pjsua2 hands us the INVITE as text (``SipRxData.wholeMsg``); we only need header values and the
user part of a few URIs, so a small RFC 3261 §7.3 header reader is enough: header folding,
compact forms (``f``, ``t``, ``i``, ``m``) and display names are handled; bodies are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass

_COMPACT = {"f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "v": "Via",
            "l": "Content-Length", "c": "Content-Type", "k": "Supported", "s": "Subject"}

_URI_IN_ANGLES = re.compile(r"<([^>]*)>")
_DISPLAY = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<')


def parse_headers(message: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a SIP message into its start line and ``(name, value)`` headers, in order.

    Names are given in their canonical long form when a compact form was used.
    """
    head = message.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    lines = head.replace("\r\n", "\n").split("\n")
    start = lines[0].strip() if lines else ""
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation (RFC 3261 §7.3.1)
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        headers.append((_COMPACT.get(name.lower(), name) if len(name) == 1 else name,
                        value.strip()))
    return start, headers


def body(message: str) -> str:
    """The body of a SIP message: what follows the first blank line (CRLF or bare LF)."""
    for blank in ("\r\n\r\n", "\n\n"):
        if blank in message:
            return message.split(blank, 1)[1]
    return ""


def header(headers: list[tuple[str, str]] | tuple[tuple[str, str], ...], name: str) -> str | None:
    """First value of ``name`` (case-insensitive), or ``None``."""
    low = name.lower()
    for n, v in headers:
        if n.lower() == low:
            return v
    return None


def name_addr_uri(value: str) -> str:
    """The URI of a name-addr or addr-spec value (``"Bob" <sip:b@h>;tag=1`` -> ``sip:b@h``)."""
    m = _URI_IN_ANGLES.search(value)
    if m:
        return m.group(1).strip()
    return value.split(";", 1)[0].strip()


def display_name(value: str) -> str | None:
    """The display name of a name-addr, unquoted, or ``None``."""
    m = _DISPLAY.match(value)
    if not m:
        return None
    name = m.group(1) if m.group(1) is not None else m.group(2)
    name = name.replace('\\"', '"').strip() if name else ""
    return name or None


def uri_user(uri: str) -> str:
    """The user part of a SIP or tel URI (``sip:+1555@host;x`` -> ``+1555``); '' when none."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    if uri.lower().startswith("tel:"):
        return rest.split(";", 1)[0]
    if "@" not in rest:
        return ""
    return rest.split("@", 1)[0].split(";", 1)[0]


def request_uri(start_line: str) -> str:
    """The Request-URI of a request start line (``INVITE sip:x@h SIP/2.0``)."""
    parts = start_line.split()
    return parts[1] if len(parts) >= 3 else ""


def uri_host(uri: str) -> str:
    """The host of a SIP URI (``sip:u@[::1]:5060;transport=tcp`` -> ``::1``); '' when none."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.rsplit("@", 1)[-1].split(";", 1)[0].split("?", 1)[0].strip()
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class FrontSource:
    """Who really sent a request the SIP front relayed (its ``X-Gateway-Source`` header)."""

    ip: str
    port: int
    transport: str
    #: The registration the request came in on, or ``trunk``; ``None`` in-dialog.
    account: str | None


def front_source(value: str) -> FrontSource | None:
    """Parse ``<ip>;port=<p>;proto=<udp|tcp|tls>[;account=<name>]``; ``None`` if malformed.

    The front writes this header on every request it relays to a worker, after removing any
    copy that came from outside, so a worker trusts it only on requests from the front.
    """
    ip, *params = [part.strip() for part in value.split(";")]
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None
    fields: dict[str, str] = {}
    for param in params:
        key, sep, val = param.partition("=")
        if sep:
            fields[key.strip().lower()] = val.strip()
    try:
        port = int(fields.get("port", "0"))
    except ValueError:
        return None
    transport = fields.get("proto", "udp").lower()
    if transport not in ("udp", "tcp", "tls") or not 0 <= port <= 65535:
        return None
    account = fields.get("account") or None
    return FrontSource(ip, port, transport, account)


#: The header an upstream dispatcher (``gateway front upstream``) passes the caller's real
#: source in, to the gateway instances behind it: same form as the front's, ``account`` unused.
UPSTREAM_SOURCE_HEADER = "X-Gateway-Upstream-Source"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def upstream_source(headers: list[tuple[str, str]] | tuple[tuple[str, str], ...],
                    sender_ip: str, upstreams: Collection[IpAddress]) -> FrontSource | None:
    """The caller an upstream dispatcher relayed this request for, or ``None``.

    ``sender_ip`` is who sent the request as far as this process knows: the front's
    ``X-Gateway-Source`` behind a front, else the packet's source. Only when that is one of
    ``upstreams`` (``sip.front_upstream``) is :data:`UPSTREAM_SOURCE_HEADER` believed: the
    upstream removes any copy a caller sent, but a caller reaching an instance directly could
    write one, and the instance's front passes it on untouched.
    """
    if not upstreams:
        return None
    try:
        sender = ipaddress.ip_address(sender_ip)
    except ValueError:
        return None
    if sender not in upstreams:
        return None
    return front_source(header(headers, UPSTREAM_SOURCE_HEADER) or "")
