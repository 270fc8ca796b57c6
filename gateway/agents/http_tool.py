"""HTTP tools: the model's arguments sent to a URL, the response body returned as the output.

An :class:`~gateway.agents.spec.HttpTool` is pure async I/O, so unlike Python tools it runs in
the gateway's own event loop, through one shared aiohttp ``ClientSession``. ``POST``, ``PUT``
and ``PATCH`` send the arguments as a JSON body; ``GET`` sends them as query parameters
(scalars as text, lists as repeated keys, objects as JSON). The response body is returned as
text, cut at ``max_body_bytes`` with a note. Redirects are not followed, so header secrets are
never sent to a host the dialplan did not name; a 3xx is reported like any other non-2xx
status, with the status and the start of the body.

Header values are :class:`~gateway.config.Secret`: they are sent and never logged; they are
also scrubbed from anything that goes back to the model or into an error (a server that echoes
the ``Authorization`` header does not leak it into the conversation). Logs carry the tool name,
status and duration, never arguments, bodies or URLs with their queries.
"""

from __future__ import annotations

import codecs
import json
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from gateway import __version__
from gateway.agents.runner import ToolOutcome
from gateway.agents.spec import HttpTool

if TYPE_CHECKING:  # imported on the first HTTP tool call: ~13 MB a process without one
    import aiohttp

__all__ = ["DEFAULT_MAX_BODY_BYTES", "HttpToolClient"]

log = logging.getLogger(__name__)

#: Longest response body passed to the model.
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
#: Characters of a non-2xx body quoted in the error.
ERROR_SNIPPET_CHARS: Final = 300
#: Header values shorter than this are not scrubbed (they would mangle ordinary text).
_MIN_SCRUB_CHARS: Final = 4
_SCRUBBED: Final = "***"
_READ_CHUNK: Final = 16 * 1024


def _query(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query parameters for a GET: scalars as text, lists repeated, objects as JSON."""
    pairs: list[tuple[str, str]] = []

    def text(value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    for key, value in arguments.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            rendered = text(item)
            if rendered is not None:
                pairs.append((key, rendered))
    return pairs


class _Scrubber:
    """Replaces header secret values (and the credential part of ``Scheme credential``)."""

    def __init__(self, tool: HttpTool) -> None:
        needles: set[str] = set()
        for secret in tool.headers.values():
            value = secret.value.strip()
            if len(value) >= _MIN_SCRUB_CHARS:
                needles.add(value)
            _, _, credential = value.partition(" ")
            if len(credential.strip()) >= _MIN_SCRUB_CHARS:
                needles.add(credential.strip())
        self._needles = sorted(needles, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            text = text.replace(needle, _SCRUBBED)
        return text


class HttpToolClient:
    """Runs HTTP tools over one aiohttp ``ClientSession``; an async context manager.

    Args:
        max_body_bytes: Longest response body returned (longer ones are cut, with a note).
        user_agent: ``User-Agent`` header (a tool's own headers override it).
    """

    def __init__(
        self,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        user_agent: str = f"gateway/{__version__}",
    ) -> None:
        self._max_body_bytes = max_body_bytes
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True  # the session itself is made on the first call
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections."""
        self._open = False
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def call(self, tool: HttpTool, arguments: Mapping[str, Any]) -> ToolOutcome:
        """Send one tool call and turn the response into an outcome.

        Args:
            tool: The HTTP tool.
            arguments: Validated arguments from the model.

        Returns:
            ``ok=True`` with the body for a 2xx; otherwise ``ok=False`` with the status and
            the start of the body, or the kind of network failure. Never raises, except
            ``CancelledError``; never contains a header value.
        """
        if not self._open:
            raise RuntimeError("HttpToolClient is not open")
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": self._user_agent})
        scrub = _Scrubber(tool)
        started = time.monotonic()
        headers = {name: secret.value for name, secret in tool.headers.items()}
        kwargs: dict[str, Any] = {}
        if tool.method == "GET":
            kwargs["params"] = _query(arguments)
        else:
            kwargs["json"] = dict(arguments)
        label = f"tool {tool.name}"
        try:
            async with self._session.request(
                tool.method,
                tool.url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=tool.timeout_s),
                allow_redirects=False,
                **kwargs,
            ) as response:
                body, truncated = await self._read_body(response)
                status, reason = response.status, response.reason or ""
        except TimeoutError:
            return self._failed(tool, started, f"{label} timed out after {tool.timeout_s:g} s")
        except aiohttp.InvalidURL:
            return self._failed(tool, started, f"{label} has an invalid URL")
        except aiohttp.ClientConnectorError as exc:
            return self._failed(
                tool, started,
                scrub(f"{label} could not connect to {exc.host}:{exc.port} "
                      f"({type(exc.os_error).__name__})"),
            )
        except (aiohttp.ClientError, OSError) as exc:
            return self._failed(
                tool, started, f"{label} failed: {type(exc).__name__}"
            )
        elapsed = time.monotonic() - started
        text = scrub(body)
        if 200 <= status < 300:
            if truncated:
                text += (f"\n[truncated: the response was longer than "
                         f"{self._max_body_bytes} bytes]")
            log.info("%s: HTTP %d in %.3f s", label, status, elapsed)
            return ToolOutcome.success(text, elapsed)
        snippet = text[:ERROR_SNIPPET_CHARS]
        if len(text) > ERROR_SNIPPET_CHARS or truncated:
            snippet += "..."
        error = scrub(f"{label}: HTTP {status} {reason}".rstrip())
        if snippet:
            error += f": {snippet}"
        log.warning("%s: HTTP %d in %.3f s", label, status, elapsed)
        return ToolOutcome.failure(error, elapsed, status=status)

    def _failed(self, tool: HttpTool, started: float, error: str) -> ToolOutcome:
        elapsed = time.monotonic() - started
        log.warning("tool %s failed after %.3f s: %s", tool.name, elapsed, error)
        return ToolOutcome.failure(error, elapsed)

    async def _read_body(self, response: aiohttp.ClientResponse) -> tuple[str, bool]:
        """The body as text, at most ``max_body_bytes`` of it, and whether it was cut."""
        limit = self._max_body_bytes
        chunks: list[bytes] = []
        size = 0
        truncated = False
        while size < limit:
            chunk = await response.content.read(min(_READ_CHUNK, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size >= limit and not response.content.at_eof():
            # One more byte decides whether the body really was longer than the limit.
            truncated = bool(await response.content.read(1))
        charset = response.charset or "utf-8"
        try:
            decoder = codecs.getincrementaldecoder(charset)(errors="replace")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # final=False when cut: a multi-byte character split at the limit is dropped, not mangled.
        text = decoder.decode(b"".join(chunks), final=not truncated)
        return text, truncated
