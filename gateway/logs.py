"""Logging set-up: text or JSON lines, per-call context, and a last line of defence for secrets.

Every record may carry ``call_id``, ``sip_call_id`` and ``rt_session`` through
:class:`CallLogger`. The :class:`RedactFilter` replaces any registered secret (API key, webhook
secret, SIP password, and the ``${ENV}`` values a dialplan put into HTTP tool headers, added
with :func:`add_secrets` whenever a dialplan loads) that reaches a message, an exception's
traceback or a stack dump, so even a library logging a header by mistake, or an exception
quoting one, cannot leak it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

_CONTEXT_FIELDS = ("call_id", "sip_call_id", "rt_session")


#: Shorter values would redact ordinary words; real secrets are long.
_MIN_SECRET_CHARS = 6
#: Renders exceptions for redaction the way both formatters below do (the stdlib default).
_TRACEBACKS = logging.Formatter()


class RedactFilter(logging.Filter):
    """Replaces known secret values with ``***`` in messages, tracebacks and stack dumps.

    An exception is rendered here, redacted, and left in ``record.exc_text``, which formatters
    use instead of rendering ``exc_info`` again.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Redact ``secrets`` too, from now on."""
        known = set(self._secrets) | {s for s in secrets if len(s) >= _MIN_SECRET_CHARS}
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(known, key=len, reverse=True)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message, traceback and stack text if they contain a secret."""
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message and call context."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                out[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the call context in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its call context."""
        line = super().format(record)
        ctx = " ".join(f"{n}={getattr(record, n)}" for n in _CONTEXT_FIELDS
                       if getattr(record, n, None))
        return f"{line} [{ctx}]" if ctx else line


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that stamps every record with one call's identifiers."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        """Merge the call context into ``extra``."""
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter that says nothing an operator needs at INFO.
    for name in ("websockets", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def add_secrets(secrets: Iterable[str]) -> None:
    """Redact ``secrets`` too in every handler :func:`setup_logging` installed.

    For secrets known only later than start-up: a dialplan's ``${ENV}`` header values, on
    every load and reload. Without :func:`setup_logging` (a library user's own logging) there
    is nothing to update.
    """
    values = tuple(secrets)
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, RedactFilter):
                f.add(values)
