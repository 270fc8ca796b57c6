"""Webhook delivery for the simulator's Realtime Calls: signed ``realtime.call.incoming`` POSTs.

OpenAI announces a SIP call by POSTing a ``realtime.call.incoming`` event to the project's
webhook URL, signed the Standard Webhooks way (:mod:`gateway.sim.signing`, which can also
spoil a delivery on purpose). :class:`WebhookSender` POSTs it at least once: a non-2xx
answer, a timeout or a connection error is retried after a doubling backoff
(:class:`DeliveryPolicy`) with the same ``webhook-id`` and body, re-signed with the attempt's
own timestamp as Standard Webhooks senders do. Every attempt is recorded in its
:class:`Delivery`. Redirects are not followed (a 3xx is a failed attempt). Logs carry ids and
statuses, never bodies or secrets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.sim.signing import SignedWebhook, WebhookFault, check_secret, sign_webhook

_log = logging.getLogger(__name__)

__all__ = ["Attempt", "Delivery", "DeliveryPolicy", "SignedWebhook", "WebhookFault",
           "WebhookSender"]


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard a webhook is pushed.

    Attributes:
        attempts: POSTs at most, the first included.
        backoff_s: Wait before the second attempt; doubles for each further one.
        timeout_s: Time an attempt may take (connect, send, answer) before it counts as failed.
    """

    attempts: int = 4
    backoff_s: float = 0.5
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("webhook attempts must be at least 1")
        if self.backoff_s < 0:
            raise ValueError("webhook backoff must not be negative")
        if not self.timeout_s > 0:
            raise ValueError("webhook timeout must be positive")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based; 0 for the first)."""
        return 0.0 if attempt <= 1 else self.backoff_s * 2 ** (attempt - 2)


@dataclass(frozen=True)
class Attempt:
    """One POST of a delivery.

    Attributes:
        at: Unix time it was sent.
        status: The HTTP status answered, or ``None`` (timeout, connection error).
        error: What went wrong without a status, else ``None``.
        answered_at: Unix time the whole answer (status and body) had been read, or ``None``
            when none came; ``answered_at - at`` is how long the receiver took, HTTP both
            ways included (benchmarks time the gateway's webhook endpoint with it).
    """

    at: float
    status: int | None
    error: str | None = None
    answered_at: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the receiver acknowledged it (2xx)."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Delivery:
    """One webhook message and its attempts.

    Attributes:
        webhook_id: ``wh_...``, the same on every attempt.
        event: The event delivered.
        fault: How it is spoilt on purpose, or ``None``.
        attempts: Every POST, in order.
        delivered: A 2xx was answered.
        finished: No more attempts will be made (delivered or given up).
    """

    webhook_id: str
    event: dict[str, Any]
    fault: WebhookFault | None = None
    attempts: list[Attempt] = field(default_factory=list)
    delivered: bool = False
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON summary (ids, fault, attempts), for the test-control API."""
        return {
            "webhook_id": self.webhook_id,
            "event_id": self.event.get("id"),
            "fault": self.fault,
            "delivered": self.delivered,
            "finished": self.finished,
            "attempts": [
                {"at": a.at, "status": a.status, "error": a.error, "answered_at": a.answered_at}
                for a in self.attempts
            ],
        }


class WebhookSender:
    """POSTs signed webhooks to one URL, retrying per :class:`DeliveryPolicy`.

    Args:
        url: The receiver (the gateway's webhook endpoint).
        secret: The ``whsec_...`` signing secret.
        policy: Attempts, backoff and per-attempt timeout.

    Raises:
        ValueError: A secret :func:`check_secret` refuses.
    """

    def __init__(self, url: str, secret: str, policy: DeliveryPolicy) -> None:
        check_secret(secret)
        self.url = url
        self.policy = policy
        self._secret = secret
        self._http: aiohttp.ClientSession | None = None

    def sign(self, delivery: Delivery, timestamp: int) -> SignedWebhook:
        """The request of one attempt of ``delivery``."""
        return sign_webhook(
            delivery.event,
            secret=self._secret,
            webhook_id=delivery.webhook_id,
            timestamp=timestamp,
            fault=delivery.fault,
        )

    async def deliver(
        self, delivery: Delivery, on_attempt: Callable[[], None] | None = None
    ) -> Delivery:
        """POST ``delivery`` until a 2xx answer or the attempts run out.

        Args:
            delivery: What to send; its ``attempts``, ``delivered`` and ``finished`` are
                updated as it goes.
            on_attempt: Called after every attempt (for waiters).

        Returns:
            ``delivery``.
        """
        try:
            for number in range(1, self.policy.attempts + 1):
                await asyncio.sleep(self.policy.delay_before(number))
                attempt = await self._attempt(delivery)
                delivery.attempts.append(attempt)
                if attempt.ok:
                    delivery.delivered = True
                _log.info(
                    "webhook %s attempt %d: %s",
                    delivery.webhook_id,
                    number,
                    attempt.status if attempt.status is not None else attempt.error,
                )
                if on_attempt is not None:
                    on_attempt()
                if delivery.delivered:
                    break
        finally:
            delivery.finished = True
            if on_attempt is not None:
                on_attempt()
        if not delivery.delivered:
            _log.warning("webhook %s not delivered after %d attempts", delivery.webhook_id,
                         len(delivery.attempts))
        return delivery

    async def _attempt(self, delivery: Delivery) -> Attempt:
        now = time.time()
        request = self.sign(delivery, int(now))
        http = self._session()
        try:
            async with http.post(
                self.url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s),
            ) as resp:
                await resp.read()
                return Attempt(now, resp.status, answered_at=time.time())
        except TimeoutError:
            return Attempt(now, None, "timeout")
        except aiohttp.ClientError as exc:
            return Attempt(now, None, type(exc).__name__)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        """Close the HTTP client (in-flight deliveries must be cancelled first)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()
