"""Errors of the Kamailio front, part of gateway's one hierarchy (:class:`GatewayError`).

Each says what went wrong in words an operator can act on: which binary is missing and how
to install it, which config line Kamailio rejected, which address is already taken (and by
which process when that can be seen), or what the RPC socket answered. None of them ever
carries a password: registration secrets live only in the db_text table the front writes.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class FrontError(GatewayError):
    """Base class of every failure to render, start, control or stop the front."""


class KamailioNotFound(FrontError):
    """The ``kamailio`` binary (or a module the config needs) is not installed."""


class FrontConfigInvalid(FrontError):
    """``kamailio -c`` rejected the generated config; the message quotes the lines."""


class FrontPortBusy(FrontError):
    """Another process already has one of the front's listen addresses (trap 3)."""


class FrontStartError(FrontError):
    """Kamailio exited during start-up or did not become ready in time."""


class FrontRpcError(FrontError):
    """A JSON-RPC call failed: no answer in time, or an error reply.

    Attributes:
        code: The JSON-RPC error code Kamailio sent, or ``None`` for a timeout.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)
