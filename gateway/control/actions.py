"""What the control API does to one live call: hang up, transfer, say.

A call is found where it runs. A bridged or relayed call is a SIP worker's (the directory
knows which): the command goes to that worker (``hangup``, ``transfer``, ``say``;
:class:`~gateway.control.commands.CommandDesk`), except ``say`` on a relayed call, whose agent
runs here on the sideband. A direct call (OpenAI's SIP endpoint) is a sideband session of this
process (:class:`~gateway.control.openai_calls.OpenAICalls`). Each action answers an
:class:`ActionResult` with the HTTP status the API returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.calls.conversation import say_exactly
from gateway.calls.sideband import SidebandSession
from gateway.control.commands import CommandDesk
from gateway.control.directory import CallDirectory
from gateway.control.openai_calls import OpenAICalls
from gateway.ipc.messages import CommandResult, Hangup, Say, Transfer

__all__ = ["ActionResult", "CallActions"]

#: A worker's transfer waits up to 30 s for the REFER's final NOTIFY; a little more here.
TRANSFER_TIMEOUT_S: Final = 35.0
COMMAND_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class ActionResult:
    """How an action went: ``status`` is the API's HTTP status, ``reason`` says why."""

    ok: bool
    status: int
    reason: str


_NOT_FOUND = ActionResult(False, 404, "no live call has this id")
_ENDED = ActionResult(False, 409, "the call has ended")


class CallActions:
    """Finds a live call and acts on it (module docstring).

    Args:
        directory: The SIP workers' calls.
        commands: Commands to the workers.
        openai: The webhook calls, when webhook calls are on.
    """

    def __init__(self, directory: CallDirectory, commands: CommandDesk,
                 openai: Callable[[], OpenAICalls | None]) -> None:
        self._directory = directory
        self._commands = commands
        self._openai = openai

    async def hangup(self, call_id: str, reason: str) -> ActionResult:
        """End the call (BYE after the agent's current sentence on a sideband call)."""
        session = self._session(call_id)
        if session is not None:
            session.end_call(reason)
            return ActionResult(True, 200, "hanging up")
        return await self._on_worker(
            call_id, lambda rid: Hangup(rid, call_id, reason), COMMAND_TIMEOUT_S, "hanging up")

    async def transfer(self, call_id: str, target: str) -> ActionResult:
        """Blind-transfer the caller to ``target``; answers once the transfer took or failed."""
        session = self._session(call_id)
        if session is not None:
            result = await session.transfer(target, TRANSFER_TIMEOUT_S - 5.0)
            if result.ok:
                session.end_call("transferred by the operator")
                return ActionResult(True, 200, "transferred")
            return ActionResult(False, 502, f"transfer failed: {result.status} {result.reason}")
        return await self._on_worker(call_id, lambda rid: Transfer(rid, call_id, target),
                                     TRANSFER_TIMEOUT_S, "transferred")

    async def say(self, call_id: str, text: str) -> ActionResult:
        """Have the call's agent say ``text`` word for word next."""
        session = self._session(call_id) or self._relay_agent(call_id)
        if session is not None:
            await session.actor.request_response(say_exactly(text))
            return ActionResult(True, 200, "the agent says it next")
        return await self._on_worker(call_id, lambda rid: Say(rid, call_id, text),
                                     COMMAND_TIMEOUT_S, "the agent says it next")

    # Finding the call ------------------------------------------------------------------

    def _session(self, call_id: str) -> SidebandSession | None:
        calls = self._openai()
        return calls.session(call_id) if calls is not None else None

    def _relay_agent(self, call_id: str) -> SidebandSession | None:
        call = self._directory.call(call_id)
        calls = self._openai()
        if call is None or call.get("kind") != "relayed" or calls is None:
            return None
        return calls.session_for_leg(call_id)

    async def _on_worker(self, call_id: str, make: Callable[[int], Hangup | Transfer | Say],
                         timeout_s: float, done: str) -> ActionResult:
        call = self._directory.call(call_id)
        if call is None:
            return _NOT_FOUND
        if not call.get("live"):
            return _ENDED
        result: CommandResult = await self._commands.run(str(call["worker_id"]), make,
                                                         timeout_s)
        if result.ok:
            return ActionResult(True, 200, done)
        error = result.error or "failed"
        status = 409 if error.startswith("no such live call") else 502
        return ActionResult(False, status, error)
