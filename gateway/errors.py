"""The one error hierarchy of gateway.

Errors that reject a call carry the SIP status to answer with; the SIP adapter turns any
:class:`CallRejected` into the INVITE's final response in one place. Realtime errors carry
``retryable`` so the reconnect policy can decide without string matching. Configuration errors
name the file, line and field. No error message ever contains a secret.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration or dialplan file, or an environment variable, is invalid.

    Attributes:
        source: File path (or ``env``) the bad value came from.
        line: 1-based line in ``source``, or ``None`` when unknown.
        field: Dotted path of the offending field, e.g. ``sip.transports[0].port``.
        reason: What is wrong, without the offending value when it may be a secret.
    """

    def __init__(self, source: str, line: int | None, field: str, reason: str) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.reason = reason
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field}: {reason}" if field else f"{where}: {reason}")


class ConfigErrors(GatewayError):
    """Several configuration errors found in one pass, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class CallRejected(GatewayError):
    """A call is refused; the SIP adapter answers the INVITE with ``sip_status``."""

    sip_status: int = 500
    default_reason: str = "Server Internal Error"

    def __init__(self, reason: str | None = None, *, sip_status: int | None = None) -> None:
        if sip_status is not None:
            self.sip_status = sip_status
        self.reason = reason or self.default_reason
        super().__init__(f"{self.sip_status} {self.reason}")


class NoRouteError(CallRejected):
    """No dialplan route matches the call (404)."""

    sip_status = 404
    default_reason = "Not Found"


class AgentUnavailable(CallRejected):
    """The route's agent cannot be reached, e.g. the Realtime API is down (503)."""

    sip_status = 503
    default_reason = "Service Unavailable"


class MediaNegotiationError(CallRejected):
    """The offer has no codec in common with ours (488)."""

    sip_status = 488
    default_reason = "Not Acceptable Here"


class CapacityExceeded(CallRejected):
    """The process is at its call limit (503 with Retry-After)."""

    sip_status = 503
    default_reason = "Service Unavailable"

    def __init__(self, reason: str | None = None, *, retry_after_s: int = 5) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class RealtimeError(GatewayError):
    """A failure talking to the Realtime API (or the local simulator).

    Attributes:
        code: The API's error code when there is one (e.g. ``beta_api_shape_disabled``).
        retryable: Whether reconnecting may help.
    """

    def __init__(self, message: str, *, code: str | None = None, retryable: bool = False) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(message)
