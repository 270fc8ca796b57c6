"""Relayed calls as the control process sees them: tokens from workers, claimed by webhooks.

A SIP worker sends ``relay_offered`` (the call, its route, the caller's INVITE and a one-time
random token) before its relay leg dials OpenAI with the token in ``X-Gateway-Relay``. OpenAI's
``realtime.call.incoming`` for that leg brings the header back; :meth:`RelayDesk.claim` trades
the token for the pending call exactly once (a replayed or forged token finds nothing), waiting
a moment for a ``relay_offered`` still on its way. Tokens leave the desk when claimed, when
their call ends or its worker goes down, and after :data:`TOKEN_TTL_S` unclaimed. Bounded:
at most ``max_pending`` tokens (the oldest goes first) and ``max_waiting`` claims waiting.

:class:`WorkerLeg` is a claimed call's SIP side for its sideband agent: a transfer REFERs the
caller's leg on the worker (the ``transfer`` command), not OpenAI's leg.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from gateway.calls.conversation import TransferResult
from gateway.control.commands import CommandDesk
from gateway.dialplan.router import CallInfo
from gateway.ipc.messages import RelayOffered, Transfer

__all__ = ["PendingRelay", "RelayDesk", "TOKEN_TTL_S", "WorkerLeg"]

log = logging.getLogger("gateway.control")

#: An unclaimed token is forgotten after this long (OpenAI answers or times out well before).
TOKEN_TTL_S: Final = 120.0
#: How long a webhook's claim waits for a ``relay_offered`` still on its way.
CLAIM_WAIT_S: Final = 2.0


@dataclass(frozen=True)
class PendingRelay:
    """A relayed call waiting for (or matched to) OpenAI's webhook.

    Attributes:
        worker_id: The SIP worker carrying the call.
        call_id: Its id in the control process (``worker:leg``).
        route: The dialplan route that relayed it.
        info: The caller's INVITE as the dialplan saw it (for the agent's templates).
    """

    worker_id: str
    call_id: str
    route: str
    info: CallInfo
    offered_at: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, worker_id: str, msg: RelayOffered) -> PendingRelay:
        """The pending call a worker's ``relay_offered`` describes."""
        info = CallInfo(to_user=msg.to_user, from_user=msg.from_user,
                        request_uri=msg.request_uri, headers=dict(msg.headers),
                        account=msg.account, source_ip=msg.source_ip,
                        caller_name=msg.caller_name)
        return cls(worker_id, msg.call_id, msg.route, info)


class RelayDesk:
    """Relay tokens by value, claimed once by webhooks (module docstring)."""

    def __init__(self, *, max_pending: int = 10_000, max_waiting: int = 1_000,
                 ttl_s: float = TOKEN_TTL_S) -> None:
        self._max_pending = max_pending
        self._max_waiting = max_waiting
        self._ttl_s = ttl_s
        self._tokens: OrderedDict[str, PendingRelay] = OrderedDict()
        self._waiting: dict[str, asyncio.Future[PendingRelay]] = {}

    @property
    def pending(self) -> int:
        """Tokens not claimed yet."""
        return len(self._tokens)

    def offered(self, worker_id: str, msg: RelayOffered) -> None:
        """A worker's ``relay_offered``."""
        relay = PendingRelay.of(worker_id, msg)
        waiter = self._waiting.pop(msg.token, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(relay)
            return
        self._expire()
        if len(self._tokens) >= self._max_pending:
            _, oldest = self._tokens.popitem(last=False)
            log.warning("relay tokens full (%d): forgot call %s's", self._max_pending,
                        oldest.call_id)
        self._tokens[msg.token] = relay

    def ended(self, call_id: str) -> None:
        """Call ``call_id`` ended: its token, if unclaimed, is void."""
        for token, relay in list(self._tokens.items()):
            if relay.call_id == call_id:
                del self._tokens[token]

    def worker_down(self, worker_id: str) -> None:
        """Every unclaimed token of ``worker_id`` is void."""
        for token, relay in list(self._tokens.items()):
            if relay.worker_id == worker_id:
                del self._tokens[token]

    async def claim(self, token: str, wait_s: float = CLAIM_WAIT_S) -> PendingRelay | None:
        """The call ``token`` was given for, once; ``None`` for an unknown or used token."""
        self._expire()
        relay = self._tokens.pop(token, None)
        if relay is not None:
            return relay
        if token in self._waiting or len(self._waiting) >= self._max_waiting:
            return None  # a second claim of one token never wins
        future: asyncio.Future[PendingRelay] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            return await asyncio.wait_for(future, wait_s)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(token, None)

    def _expire(self) -> None:
        limit = time.monotonic() - self._ttl_s
        while self._tokens:
            token, oldest = next(iter(self._tokens.items()))
            if oldest.offered_at >= limit:
                return
            del self._tokens[token]


class WorkerLeg:
    """A relayed call's caller leg, commanded on its worker (``transfer``)."""

    def __init__(self, commands: CommandDesk, worker_id: str, call_id: str) -> None:
        self._commands = commands
        self.worker_id = worker_id
        self.call_id = call_id

    async def transfer(self, uri: str, timeout_s: float) -> TransferResult:
        """REFER the caller to ``uri`` on the worker; it ends the call once the REFER took."""
        result = await self._commands.run(
            self.worker_id, lambda request_id: Transfer(request_id, self.call_id, uri),
            timeout_s + 5.0)
        if result.ok:
            return TransferResult(True, 200, "transferred by the SIP worker")
        return TransferResult(False, 500, result.error or "transfer failed")
