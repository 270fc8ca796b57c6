"""The OpenAI webhook endpoint of the control process: verify, deduplicate, hand over, answer.

``POST {openai_calls.webhook_path}``. The body is read raw (at most :data:`MAX_BODY_BYTES`,
else 413) and verified with the Standard Webhooks reference implementation (the
``standardwebhooks`` package, the algorithm OpenAI signs with: HMAC-SHA256 over
``{webhook-id}.{webhook-timestamp}.{body}``, ``v1,`` signatures, 300 s tolerance) before
anything is read from it. Refusals touch no call and say why:

* ``400`` a ``webhook-id``, ``webhook-timestamp`` or ``webhook-signature`` header is missing,
  or the timestamp is not a number, too old or too far ahead (replays, clock skew);
* ``401`` no signature matches (wrong secret, tampered body, malformed signature);
* ``400`` a verified body that is not a JSON event, or a ``realtime.call.incoming`` of the
  wrong shape (the field is named).

Deliveries are at least once: a ``webhook-id`` seen before, or a ``call_id`` already handed
over under another webhook id, is answered ``200`` and ignored (counted), so no call is ever
accepted twice. Other event types are answered ``200`` and ignored (counted by type). The
answer goes out at once; the call itself is run by the ``on_call`` callback, which must only
start work it owns (a task), never wait for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from gateway.control.webhook_event import (
    INCOMING,
    BadEvent,
    IncomingCallEvent,
    event_type,
    parse_event,
)

__all__ = ["MAX_BODY_BYTES", "WebhookInbox", "WebhookRefused", "verify"]

log = logging.getLogger("gateway.control")

#: Largest webhook body read; OpenAI's are a few kB.
MAX_BODY_BYTES: Final = 256 * 1024
#: Webhook ids and call ids remembered for deduplication (oldest forgotten first), and for how
#: long: past the 300 s tolerance a replayed delivery is refused by its timestamp anyway.
_REMEMBER: Final = 20_000
_REMEMBER_S: Final = 3600.0


class WebhookRefused(Exception):
    """A delivery that failed verification: the HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


def verify(webhook: Webhook, body: bytes, headers: Mapping[str, str]) -> None:
    """Verify a delivery's signature and timestamp with the Standard Webhooks library.

    Raises:
        WebhookRefused: 400 for missing headers or a bad timestamp, 401 for no matching
            signature; the reason never holds a header value.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRefused(400, "the body is not UTF-8") from None
    try:
        webhook.verify(text, dict(headers), json_parse=False)
    except WebhookVerificationError as exc:
        message = str(exc)
        if message == "No matching signature found":
            raise WebhookRefused(401, "the signature does not match") from None
        if message == "Missing required headers":
            raise WebhookRefused(400, "webhook-id, webhook-timestamp and webhook-signature "
                                      "headers are required") from None
        if "too old" in message or "too new" in message:
            when = "in the past" if "too old" in message else "in the future"
            raise WebhookRefused(400, f"webhook-timestamp is more than 300 s {when}"
                                 ) from None
        raise WebhookRefused(400, "webhook-timestamp is not a Unix time") from None
    except (ValueError, TypeError):  # a signature entry without "v1," or not base64
        raise WebhookRefused(401, "the signature is malformed") from None


class _Seen:
    """A bounded, time-limited set of ids."""

    def __init__(self) -> None:
        self._at: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str, now: float) -> bool:
        """Remember ``key``; False if it was already there."""
        while self._at and (len(self._at) >= _REMEMBER
                            or now - next(iter(self._at.values())) > _REMEMBER_S):
            self._at.popitem(last=False)
        if key in self._at:
            return False
        self._at[key] = now
        return True


class WebhookInbox:
    """The aiohttp handler of the webhook endpoint (see the module docstring).

    Args:
        secret: The project webhook's signing secret (``whsec_...``).
        on_call: Called with each new incoming call; must not block.
        ready: Whether calls can be taken now; while not, verified deliveries get ``503``
            and are not remembered, so OpenAI's retry is handled once the gateway is up.

    Raises:
        ValueError: ``secret`` is not a Standard Webhooks secret (base64 after ``whsec_``).
    """

    def __init__(self, secret: str, on_call: Callable[[IncomingCallEvent], None], *,
                 ready: Callable[[], bool] = lambda: True) -> None:
        try:
            self._webhook = Webhook(secret)
        except Exception as exc:  # binascii.Error, EmptyWebhookSecretError
            raise ValueError("the webhook secret is not a whsec_... signing secret") from exc
        self._on_call = on_call
        self._ready = ready
        self._ids = _Seen()
        self._calls = _Seen()
        #: Deliveries by outcome: ``call``, ``duplicate``, ``refused``, ``ignored:<type>``.
        self.counts: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        """``POST`` the webhook: 200 when handled or ignored, 4xx with a reason otherwise."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return self._refuse(413, "the body is too large")
        try:
            body = await request.content.read(MAX_BODY_BYTES + 1)
        except (OSError, RuntimeError):
            return self._refuse(400, "the body could not be read")
        if len(body) > MAX_BODY_BYTES:
            return self._refuse(413, "the body is too large")
        try:
            verify(self._webhook, body, request.headers)
        except WebhookRefused as exc:
            return self._refuse(exc.status, exc.reason)
        try:
            event = json.loads(body)
        except ValueError:
            return self._refuse(400, "the body is not JSON")
        if not self._ready():
            self.counts["not ready"] += 1
            return web.json_response({"error": "starting or draining; retry"}, status=503)
        now = time.monotonic()
        if not self._ids.add(request.headers["webhook-id"][:256], now):
            self.counts["duplicate"] += 1
            return _ok("duplicate delivery")
        kind = event_type(event)
        if kind != INCOMING:
            self.counts[f"ignored:{kind or '?'}"] += 1
            log.info("webhook %s ignored", kind or "without a type")
            return _ok("ignored")
        try:
            call = parse_event(event)
        except BadEvent as exc:
            return self._refuse(400, str(exc))
        if not self._calls.add(call.call_id, now):
            self.counts["duplicate"] += 1
            log.info("webhook for call %s delivered again under another id: ignored",
                     call.call_id)
            return _ok("duplicate call")
        self.counts["call"] += 1
        self._on_call(call)
        return _ok("accepted for handling")

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.counts["refused"] += 1
        log.warning("webhook refused (%d): %s", status, reason)
        return web.json_response({"error": reason}, status=status)


def _ok(note: str) -> web.Response:
    return web.json_response({"ok": True, "note": note})
