"""Logging set-up: text or JSON lines, per-call context, and a last line of defence for secrets.

Every record may carry ``call_id``, ``sip_call_id`` and ``rt_session`` through
:class:`CallLogger`. The :class:`RedactFilter` replaces any registered secret (API key, webhook
secret, SIP password) that reaches a message, so even a library logging a header by mistake
cannot leak one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

_CONTEXT_FIELDS = ("call_id", "sip_call_id", "rt_session")


class RedactFilter(logging.Filter):
    """Replaces known secret values in log messages with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Short values would redact ordinary words; real secrets are long.
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message if it contains a secret."""
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
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
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
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
