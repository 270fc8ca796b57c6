"""The control process's relay tokens and worker commands (pure asyncio, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.control.commands import CommandDesk
from gateway.control.relays import RelayDesk, WorkerLeg
from gateway.errors import GatewayError
from gateway.ipc.messages import CommandResult, ControlMessage, RelayOffered, Transfer
from gateway.sip.relay import caller_status

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

TOKEN = "kq3T0b8xV2m_Qe9rYp4LzA-fHn6WcJ1s"


def _offer(token: str = TOKEN, call_id: str = "w1:1") -> RelayOffered:
    return RelayOffered(call_id, token, "relayed", "+15550100", "200", "sip:200@gw",
                        "192.0.2.1", caller_name="Ada", headers={"X-Customer": "A-1"})


async def test_a_token_is_claimed_once() -> None:
    desk = RelayDesk()
    desk.offered("w1", _offer())
    relay = await desk.claim(TOKEN)
    assert relay is not None
    assert (relay.worker_id, relay.call_id, relay.route) == ("w1", "w1:1", "relayed")
    assert relay.info.from_user == "+15550100" and relay.info.header("x-customer") == "A-1"
    assert relay.info.caller_name == "Ada"
    assert await desk.claim(TOKEN, wait_s=0.05) is None  # a replayed webhook finds nothing


async def test_a_claim_waits_for_a_relay_offered_still_on_its_way() -> None:
    desk = RelayDesk()
    claim = asyncio.create_task(desk.claim(TOKEN, wait_s=2.0))
    await asyncio.sleep(0.01)
    assert await desk.claim(TOKEN, wait_s=0.01) is None  # a second claim meanwhile loses
    desk.offered("w1", _offer())
    relay = await claim
    assert relay is not None and relay.call_id == "w1:1"
    assert desk.pending == 0


async def test_unknown_ended_and_orphaned_tokens_find_nothing() -> None:
    desk = RelayDesk()
    assert await desk.claim("x" * 32, wait_s=0.01) is None
    desk.offered("w1", _offer("a" * 32, "w1:1"))
    desk.offered("w1", _offer("b" * 32, "w1:2"))
    desk.offered("w2", _offer("c" * 32, "w2:1"))
    desk.ended("w1:1")
    desk.worker_down("w2")
    assert await desk.claim("a" * 32, wait_s=0.01) is None
    assert await desk.claim("c" * 32, wait_s=0.01) is None
    assert await desk.claim("b" * 32, wait_s=0.01) is not None


async def test_tokens_are_bounded_and_expire() -> None:
    desk = RelayDesk(max_pending=2)
    for n in range(3):
        desk.offered("w1", _offer(str(n) * 32, f"w1:{n}"))
    assert desk.pending == 2
    assert await desk.claim("0" * 32, wait_s=0.01) is None  # the oldest went first
    expiring = RelayDesk(ttl_s=0.0)
    expiring.offered("w1", _offer())
    await asyncio.sleep(0.01)
    assert await expiring.claim(TOKEN, wait_s=0.01) is None


async def test_commands_resolve_by_request_id_and_worker() -> None:
    sent: list[tuple[str, ControlMessage]] = []
    desk = CommandDesk(_record(sent))
    leg = WorkerLeg(desk, "w1", "w1:7")
    task = asyncio.create_task(leg.transfer("sip:ops@pbx", timeout_s=5.0))
    await asyncio.sleep(0.01)
    (worker, msg), = sent
    assert worker == "w1" and isinstance(msg, Transfer)
    assert (msg.call_id, msg.target) == ("w1:7", "sip:ops@pbx")
    desk.resolve("w2", CommandResult(msg.request_id, True))  # another worker's: ignored
    assert not task.done()
    desk.resolve("w1", CommandResult(msg.request_id, True))
    result = await task
    assert result.ok and desk.pending == 0


async def test_commands_fail_on_timeout_worker_down_and_send_errors() -> None:
    sent: list[tuple[str, ControlMessage]] = []
    desk = CommandDesk(_record(sent))
    late = await desk.run("w1", lambda rid: Transfer(rid, "w1:1", "sip:a@b"), 0.05)
    assert not late.ok and late.error == "no answer within 0.05 s"
    task = asyncio.create_task(desk.run("w1", lambda rid: Transfer(rid, "w1:1", "sip:a@b"), 5))
    await asyncio.sleep(0.01)
    desk.worker_down("w1", "exited with 1")
    down = await task
    assert not down.ok and down.error == "worker down: exited with 1"

    async def unreachable(worker_id: str, msg: ControlMessage) -> None:
        raise GatewayError(f"worker {worker_id} is not connected")

    failed = await CommandDesk(unreachable).run(
        "w3", lambda rid: Transfer(rid, "w3:1", "sip:a@b"), 5)
    assert not failed.ok and failed.error == "transfer not sent: worker w3 is not connected"
    full = await CommandDesk(unreachable, max_pending=0).run(
        "w3", lambda rid: Transfer(rid, "w3:1", "sip:a@b"), 5)
    assert not full.ok and full.error is not None and full.error.startswith("busy")


@pytest.mark.parametrize(("status", "expected"), [
    (486, (486, "")), (404, (404, "")), (603, (603, "")), (403, (403, "")),
    (500, (503, "Relay Failed")), (503, (503, "Relay Failed")), (408, (503, "Relay Failed")),
    (401, (503, "Relay Failed")),
])
def test_what_the_caller_hears_when_openais_leg_fails(status: int,
                                                      expected: tuple[int, str]) -> None:
    assert caller_status(status) == expected


def _record(sent: list[tuple[str, ControlMessage]]
            ) -> Callable[[str, ControlMessage], Awaitable[None]]:
    async def send(worker_id: str, msg: ControlMessage) -> None:
        sent.append((worker_id, msg))
    return send
