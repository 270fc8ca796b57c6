"""The Realtime Calls REST API: accept, reject, refer and hang up a call OpenAI's SIP answered.

``POST {base}/realtime/calls/{call_id}/accept`` (the flat session object: ``type:
"realtime"``, model, instructions, audio, tools...; never ``audio.*.format`` on a SIP call, the
format comes from SDP), ``.../reject`` (``{"status_code": N}``), ``.../refer``
(``{"target_uri": ...}``) and ``.../hangup`` (no body), with ``Authorization: Bearer``. The
base is OpenAI's (``https://api.openai.com/v1``), Azure's, or the simulator's.

:class:`CallsClient` retries a request on 429, 5xx, timeouts and network errors with capped
exponential backoff and jitter (:class:`~gateway.realtime.retry.RetryPolicy`), up to its
attempts; other answers are final. An error answer becomes :class:`CallsApiError` with the
API's envelope (``{"error": {"message", "type", "param", "code"}}``) read into its fields;
``404`` is :class:`CallGone` (the caller hung up, or the webhook was delivered again after the
call ended): record it, do not retry. Errors and logs carry the operation, the call id and the
status, never the API key or the request body (instructions and tools are call content).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import aiohttp

from gateway import __version__
from gateway.errors import RealtimeError
from gateway.realtime.retry import RetryPolicy, is_retryable_status

__all__ = ["CALL_ID_RE", "CallGone", "CallsApiError", "CallsClient"]

log = logging.getLogger(__name__)

#: What a ``call_id`` may look like before it goes into a URL path (OpenAI's are ``rtc_...``).
CALL_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Longest error body read.
_MAX_ERROR_BYTES: Final = 16 * 1024

Operation = Literal["accept", "reject", "refer", "hangup"]


class CallsApiError(RealtimeError):
    """A Calls REST request failed.

    Attributes:
        operation: ``accept``, ``reject``, ``refer`` or ``hangup``.
        status: HTTP status, or ``None`` when no answer came (timeout, network).
        error_type: The envelope's ``type`` (e.g. ``invalid_request_error``), if any.
        param: The envelope's ``param``, if any.
    """

    def __init__(self, operation: Operation, message: str, *, status: int | None = None,
                 error_type: str | None = None, code: str | None = None,
                 param: str | None = None, retryable: bool = False) -> None:
        self.operation = operation
        self.status = status
        self.error_type = error_type
        self.param = param
        super().__init__(message, code=code, retryable=retryable)


class CallGone(CallsApiError):
    """``404``: the call no longer exists (the caller hung up, or it ended already)."""


class CallsClient:
    """Sends Calls REST requests over one aiohttp session; an async context manager.

    Args:
        base_url: The API base ending in ``/v1`` (no trailing slash needed).
        api_key: Bearer token (empty: no ``Authorization`` header, e.g. Azure with headers).
        headers: Extra headers (e.g. Azure's ``api-key``); values are secrets.
        timeout_s: Limit on each attempt.
        retry: Attempts and backoff for retryable failures.
    """

    def __init__(self, base_url: str, api_key: str = "", *,
                 headers: Mapping[str, str] | None = None, timeout_s: float = 10.0,
                 retry: RetryPolicy | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"User-Agent": f"gateway/{__version__}", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry = retry or RetryPolicy(max_attempts=3, initial_delay_s=0.25,
                                           max_delay_s=2.0)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CallsClient:
        self._session = aiohttp.ClientSession(headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def accept(self, call_id: str, session: Mapping[str, Any]) -> None:
        """Accept the call with this session configuration (``type: realtime`` is added)."""
        await self._post("accept", call_id, {"type": "realtime", **session})

    async def reject(self, call_id: str, status_code: int | None = None) -> None:
        """Refuse the call with a SIP status (the API's default is 603 Decline)."""
        await self._post("reject", call_id,
                         {} if status_code is None else {"status_code": status_code})

    async def refer(self, call_id: str, target_uri: str) -> None:
        """Transfer the caller by SIP REFER to ``target_uri`` (``sip:``, ``sips:``, ``tel:``)."""
        await self._post("refer", call_id, {"target_uri": target_uri})

    async def hangup(self, call_id: str) -> None:
        """End the call."""
        await self._post("hangup", call_id, None)

    async def _post(self, operation: Operation, call_id: str,
                    body: Mapping[str, Any] | None) -> None:
        if self._session is None:
            raise RuntimeError("CallsClient is not open")
        if not CALL_ID_RE.fullmatch(call_id):
            raise CallsApiError(operation, f"{operation}: not a call id")
        url = f"{self._base}/realtime/calls/{call_id}/{operation}"
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._attempt(operation, call_id, url, body)
                return
            except CallsApiError as exc:
                delay = self._retry.delay(attempt, random.random()) if exc.retryable else None
                if delay is None:
                    raise
                log.warning("calls %s %s: %s; retrying in %.2f s (attempt %d)", operation,
                            call_id, exc, delay, attempt)
                await asyncio.sleep(delay)

    async def _attempt(self, operation: Operation, call_id: str, url: str,
                       body: Mapping[str, Any] | None) -> None:
        assert self._session is not None
        try:
            async with self._session.post(url, json=body, timeout=self._timeout,
                                          allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    await response.read()
                    return
                raw = await response.content.read(_MAX_ERROR_BYTES)
                raise _error(operation, call_id, response.status, raw)
        except TimeoutError:
            raise CallsApiError(operation, f"{operation} {call_id}: no answer in time",
                                retryable=True) from None
        except aiohttp.ClientError as exc:
            raise CallsApiError(operation, f"{operation} {call_id}: {type(exc).__name__}",
                                retryable=True) from None


def _error(operation: Operation, call_id: str, status: int, raw: bytes) -> CallsApiError:
    """The error for an answer with ``status`` and body ``raw`` (the API's envelope, if any)."""
    fields: dict[str, Any] = {}
    try:
        envelope = json.loads(raw)
        if isinstance(envelope, dict) and isinstance(envelope.get("error"), dict):
            fields = envelope["error"]
    except ValueError:
        pass

    def text(name: str) -> str | None:
        value = fields.get(name)
        return value[:500] if isinstance(value, str) and value else None

    message = text("message") or f"HTTP {status}"
    kind = CallGone if status == 404 else CallsApiError
    return kind(operation, f"{operation} {call_id}: HTTP {status}: {message}", status=status,
                error_type=text("type"), code=text("code"), param=text("param"),
                retryable=is_retryable_status(status))
