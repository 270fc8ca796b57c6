"""Commands from the control process to one call on a SIP worker, and their answers.

A command (``hangup``, ``transfer``, ``say``) carries a ``request_id``; the worker answers each
with one ``command_result``. :class:`CommandDesk` numbers the commands, sends them, and
resolves each waiting caller when its answer arrives, when the worker goes down, or at the
caller's timeout. Bounded: at most ``max_pending`` commands wait at once; beyond that one is
refused at once (``ok`` false, "busy").
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from gateway.errors import GatewayError
from gateway.ipc.messages import CommandResult, ControlMessage, Hangup, Originate, Say, Transfer

__all__ = ["CommandDesk", "MAX_PENDING"]

log = logging.getLogger("gateway.control")

#: Commands waiting for their answer at once, by default.
MAX_PENDING: Final = 1024

Command = Hangup | Transfer | Say | Originate
Send = Callable[[str, ControlMessage], Awaitable[None]]


class CommandDesk:
    """Sends commands to workers and waits for their ``command_result`` (module docstring).

    Args:
        send: Sends a message to one worker (``Supervisor.send``).
        max_pending: Commands waiting at once.
    """

    def __init__(self, send: Send, *, max_pending: int = MAX_PENDING) -> None:
        self._send = send
        self._max_pending = max_pending
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[CommandResult]]] = {}

    @property
    def pending(self) -> int:
        """Commands waiting for an answer."""
        return len(self._pending)

    async def run(self, worker_id: str, make: Callable[[int], Command],
                  timeout_s: float) -> CommandResult:
        """Send the command ``make(request_id)`` to ``worker_id`` and wait for its answer.

        Never raises for the worker's sake: an unreachable worker, a timeout or a full desk
        come back as a failed :class:`CommandResult`.
        """
        request_id = next(self._ids)
        if len(self._pending) >= self._max_pending:
            return CommandResult(request_id, False, f"busy: {self._max_pending} commands wait")
        msg = make(request_id)
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (worker_id, future)
        try:
            await self._send(worker_id, msg)
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return CommandResult(request_id, False, f"no answer within {timeout_s:g} s")
        except GatewayError as exc:
            return CommandResult(request_id, False, f"{msg.type} not sent: {exc}"[:512])
        finally:
            self._pending.pop(request_id, None)

    def resolve(self, worker_id: str, result: CommandResult) -> None:
        """A worker's ``command_result`` (one for another worker's command is ignored)."""
        entry = self._pending.get(result.request_id)
        if entry is None or entry[0] != worker_id:
            log.debug("command_result %d from %s matches no command", result.request_id,
                      worker_id)
            return
        if not entry[1].done():
            entry[1].set_result(result)

    def worker_down(self, worker_id: str, reason: str) -> None:
        """Fail every command waiting on ``worker_id``."""
        for request_id, (owner, future) in list(self._pending.items()):
            if owner == worker_id and not future.done():
                future.set_result(CommandResult(request_id, False,
                                                f"worker down: {reason}"[:512]))
