"""Standard Webhooks signatures for the simulator's ``realtime.call.incoming`` deliveries.

OpenAI signs each webhook with three headers: ``webhook-id`` (the idempotency key, kept by
retries), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (``v1,`` + base64
HMAC-SHA256 over ``{id}.{timestamp}.{body}``, keyed with the base64 part of a ``whsec_``
secret). :func:`sign_webhook` builds such a request with the ``standardwebhooks`` package, and
can spoil it on purpose (:data:`WebhookFault`: a wrong key, or a timestamp outside the
receivers' 300 s tolerance) so the gateway's verification is tested. :func:`check_secret`
refuses secrets the OpenAI SDK and ``standardwebhooks`` would read differently. Pure: no I/O,
no clock (the timestamp is an argument).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from standardwebhooks.webhooks import Webhook

#: Ways to spoil a delivery for tests of the receiver's verification.
WebhookFault = Literal["bad_signature", "stale_timestamp", "future_timestamp"]
FAULTS: Final[tuple[WebhookFault, ...]] = ("bad_signature", "stale_timestamp", "future_timestamp")
#: ``User-Agent`` of OpenAI's webhook deliveries.
USER_AGENT: Final = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"
#: How far a stale or future timestamp is off: twice the receivers' 300 s tolerance.
FAULT_SKEW_S: Final = 600
_SECRET_PREFIX: Final = "whsec_"
_WRONG_KEY: Final = _SECRET_PREFIX + base64.b64encode(b"not the project's webhook secret").decode()


def check_secret(secret: str) -> None:
    """Refuse a secret the OpenAI SDK and ``standardwebhooks`` would read differently.

    Both base64-decode what follows ``whsec_``; without the prefix the SDK uses the raw bytes
    and ``standardwebhooks`` still decodes, so only prefixed secrets verify the same in both.

    Raises:
        ValueError: Not ``whsec_`` followed by non-empty base64.
    """
    if not secret.startswith(_SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("the webhook secret is empty")


@dataclass(frozen=True)
class SignedWebhook:
    """One webhook request, ready to POST.

    Attributes:
        webhook_id: ``wh_...``, the receiver's idempotency key.
        timestamp: The ``webhook-timestamp`` (Unix s).
        body: The raw JSON body (what the signature covers).
        headers: ``content-type``, ``user-agent`` and the three ``webhook-*`` headers.
    """

    webhook_id: str
    timestamp: int
    body: bytes
    headers: dict[str, str]


def sign_webhook(
    event: Mapping[str, Any],
    *,
    secret: str,
    webhook_id: str,
    timestamp: int,
    fault: WebhookFault | None = None,
) -> SignedWebhook:
    """Serialise and sign a webhook event.

    Args:
        event: The event object (e.g. from :func:`gateway.sim.calls.incoming_event`).
        secret: The project's ``whsec_...`` signing secret.
        webhook_id: ``wh_...``; a retry of the same delivery keeps it.
        timestamp: Unix time (s) of this attempt.
        fault: ``bad_signature`` signs with another key; ``stale_timestamp`` /
            ``future_timestamp`` sign correctly over a timestamp :data:`FAULT_SKEW_S` in the
            past / future.
    """
    body = json.dumps(event, separators=(",", ":")).encode()
    if fault == "stale_timestamp":
        timestamp -= FAULT_SKEW_S
    elif fault == "future_timestamp":
        timestamp += FAULT_SKEW_S
    key = _WRONG_KEY if fault == "bad_signature" else secret
    signature = Webhook(key).sign(
        webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode()
    )
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
    return SignedWebhook(webhook_id, timestamp, body, headers)
