"""Calls the gateway places (``POST /v1/calls``): a worker to place it, and its status webhook.

:class:`Outbound` picks the SIP worker with the fewest calls (up, not draining), sends it
``originate`` and returns the new call's id. With a ``status_webhook``, every status change of
the call is POSTed there as JSON ``{"type": "call.status", "call_id", "status", "sip_status",
"reason", "time"}``, signed per Standard Webhooks with the gateway's own secret
(``$GATEWAY_STATUS_WEBHOOK_SECRET``, ``whsec_...``; the ``standardwebhooks`` package signs),
retried with backoff (three attempts) by one task per call, in order. Status moves ``queued``
→ ``ringing`` → ``answered`` → ``completed``, or ends ``busy``, ``no-answer`` or ``failed``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from standardwebhooks.webhooks import Webhook

from gateway.control.commands import CommandDesk
from gateway.control.directory import CallDirectory
from gateway.ipc.messages import Originate

__all__ = ["OriginateRequest", "Outbound", "StatusHooks", "status_of_end"]

log = logging.getLogger("gateway.control")

_ATTEMPTS: Final = 3
_QUEUE: Final = 32


@dataclass(frozen=True)
class OriginateRequest:
    """A validated ``POST /v1/calls`` body."""

    to: str
    agent: str
    context: Mapping[str, str]
    max_duration_s: float = 0.0
    ring_timeout_s: float = 30.0
    status_webhook: str | None = None


def status_of_end(reason: str, answered: bool) -> str:
    """An outbound call's final status from its end reason."""
    if answered:
        return "completed"
    if reason == "busy":
        return "busy"
    if reason == "no answer" or reason.startswith("no answer within"):
        return "no-answer"
    return "failed"


class StatusHooks:
    """Posts each outbound call's status changes to its webhook (module docstring)."""

    def __init__(self, secret: str, *, timeout_s: float = 5.0) -> None:
        self._signer = Webhook(secret) if secret else None
        self._timeout_s = timeout_s
        self._hooks: dict[str, tuple[str, asyncio.Queue[dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        """Whether a signing secret is configured (no secret: no status webhooks)."""
        return self._signer is not None

    def watch(self, call_id: str, url: str) -> None:
        """Post ``call_id``'s status changes to ``url`` from now on."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE)
        self._hooks[call_id] = (url, queue)
        task = asyncio.create_task(self._deliver(call_id, url, queue),
                                   name=f"control:status-hook:{call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.status(call_id, "queued")

    def status(self, call_id: str, status: str, *, sip_status: int | None = None,
               reason: str = "") -> None:
        """A status change of a watched call (others are ignored)."""
        hook = self._hooks.get(call_id)
        if hook is None:
            return
        event = {"type": "call.status", "call_id": call_id, "status": status,
                 "sip_status": sip_status, "reason": reason, "time": time.time()}
        try:
            hook[1].put_nowait(event)
        except asyncio.QueueFull:
            log.warning("status webhook of call %s: backlog full, %s not posted", call_id,
                        status)
        if status in ("completed", "busy", "no-answer", "failed"):
            del self._hooks[call_id]

    async def _deliver(self, call_id: str, url: str,
                       queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await queue.get()
            await self._post(call_id, url, event)
            if event["status"] in ("completed", "busy", "no-answer", "failed"):
                return

    async def _post(self, call_id: str, url: str, event: dict[str, Any]) -> None:
        assert self._signer is not None
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        body = json.dumps(event)
        msg_id = f"msg_{secrets.token_hex(12)}"
        now = datetime.datetime.now(tz=datetime.UTC)
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": self._signer.sign(msg_id, now, body)}
        problem = ""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._http.post(url, data=body, headers=headers) as resp:
                    if 200 <= resp.status < 300:
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            if attempt < _ATTEMPTS:
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))
        log.warning("status webhook of call %s (%s) not delivered after %d attempts: %s",
                    call_id, event["status"], _ATTEMPTS, problem)

    async def close(self) -> None:
        """Stop delivering (what is queued is dropped) and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._http is not None:
            await self._http.close()


class Outbound:
    """Places calls on the least loaded worker (module docstring)."""

    def __init__(self, directory: CallDirectory, commands: CommandDesk,
                 hooks: StatusHooks) -> None:
        self._directory = directory
        self._commands = commands
        self.hooks = hooks

    async def originate(self, request: OriginateRequest) -> tuple[str | None, str]:
        """Place the call: ``(call_id, "")``, or ``(None, why not)``."""
        workers = [w for w in self._directory.workers() if w["state"] == "up"
                   and w["active"] < w["capacity"]]
        if not workers:
            return None, "no SIP worker has a free call slot"
        worker = min(workers, key=lambda w: (w["active"], w["worker_id"]))
        result = await self._commands.run(
            str(worker["worker_id"]),
            lambda rid: Originate(rid, request.to, request.agent, dict(request.context),
                                  request.max_duration_s, request.ring_timeout_s), 10.0)
        if not result.ok or result.call_id is None:
            return None, result.error or "the worker did not place the call"
        if request.status_webhook is not None:
            self.hooks.watch(result.call_id, request.status_webhook)
        return result.call_id, ""
