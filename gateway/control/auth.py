"""Bearer tokens for the control API: an aiohttp middleware.

Every request needs ``Authorization: Bearer <token>`` with one of ``control.api_tokens``
(from ``$GATEWAY_API_TOKENS``), except the open paths: the probes (``/healthz``,
``/readyz``), ``/metrics`` when ``control.metrics_open``, the OpenAI webhook (it carries its
own signature) and the monitor page's static files (they hold no data; the page asks for a
token and sends it with every API request). The presented token is compared with every
configured one in constant time (:func:`hmac.compare_digest`, no early exit), so the answer
time says nothing about how much of a token was right. No token configured: every protected
endpoint answers 401, saying so. A refusal is ``401`` with ``WWW-Authenticate: Bearer`` and a
JSON reason; the token itself is never logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway.config import Secret

__all__ = ["bearer_auth"]

log = logging.getLogger("gateway.control")

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gateway"'}


def bearer_auth(tokens: Iterable[Secret], *, open_paths: Iterable[str] = (),
                open_prefixes: Iterable[str] = ()) -> Middleware:
    """The middleware that refuses requests without a valid token (module docstring).

    Args:
        tokens: The accepted tokens.
        open_paths: Paths served without a token (exact).
        open_prefixes: Path prefixes served without a token (e.g. the monitor's files).
    """
    accepted = tuple(t.value.encode() for t in tokens if t.value)
    exact = frozenset(open_paths)
    prefixes = tuple(open_prefixes)
    if not accepted:
        log.warning("control API: no bearer token configured ($GATEWAY_API_TOKENS): every "
                    "/v1 endpoint answers 401")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in exact or path.startswith(prefixes):
            return await handler(request)
        if not accepted:
            raise web.HTTPUnauthorized(
                headers=_CHALLENGE,
                text="no API token is configured: set $GATEWAY_API_TOKENS (control.api_tokens_env)")
        presented = _bearer(request.headers.get(hdrs.AUTHORIZATION, ""))
        if presented is None:
            raise web.HTTPUnauthorized(headers=_CHALLENGE,
                                       text="missing 'Authorization: Bearer <token>'")
        if not _matches(presented.encode(), accepted):
            log.warning("control API: wrong bearer token from %s for %s %s", request.remote,
                        request.method, path)
            raise web.HTTPUnauthorized(headers=_CHALLENGE, text="wrong bearer token")
        return await handler(request)

    return middleware


def _bearer(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _matches(presented: bytes, accepted: tuple[bytes, ...]) -> bool:
    ok = False
    for token in accepted:  # every token is compared: no early exit
        ok |= hmac.compare_digest(presented, token)
    return ok
