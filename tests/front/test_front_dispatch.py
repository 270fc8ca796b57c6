"""The real Kamailio front dispatching to scripted workers: load, capacity, failover, dialogs,
drain, and calls the workers place."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from gateway.front.spec import WORKER_SET
from gateway.front.state import WorkerState
from tests.conftest import scaled
from tests.front.conftest import front_address, front_spec, running_front
from tests.support.frontsip import Dialog, FakeWorker, SipEndpoint
from tests.support.procs import port_is_bound

pytestmark = [pytest.mark.sip, pytest.mark.timeout(60)]


def loads(states: tuple[WorkerState, ...]) -> dict[str, int]:
    return {s.worker_id: s.load for s in states}


async def test_calls_spread_over_workers_up_to_maxload_then_the_front_answers_503(
        run_dir: Path) -> None:
    with FakeWorker("w1", capacity=2) as w1, FakeWorker("w2", capacity=2) as w2, \
            FakeWorker("w3", capacity=2) as w3:
        spec = front_spec([w1, w2, w3], run_dir)
        async with running_front(spec) as front:
            host, port = front_address(spec)
            with SipEndpoint("caller", target=(host, port)) as caller:
                dialogs = [Dialog(caller, f"sip:{100 + i}@{host}:{port}") for i in range(7)]
                finals = [await asyncio.to_thread(d.invite) for d in dialogs]
                assert [f.status for f in finals] == [200] * 6 + [503]
                # The 7th is the front's own answer: no worker saw it.
                assert finals[6].header("Retry-After") == "5"
                assert [len(w.invites()) for w in (w1, w2, w3)] == [2, 2, 2]
                assert loads(await front.workers()) == {"w1": 2, "w2": 2, "w3": 2}
                invite = w1.invites()[0]
                assert invite.header("Record-Route") == f"<sip:{host}:{port};lr>"
                for d in dialogs[:6]:
                    bye = await asyncio.to_thread(d.bye)
                    assert bye.status == 200
                assert loads(await front.workers()) == {"w1": 0, "w2": 0, "w3": 0}
                assert [w.active_calls for w in (w1, w2, w3)] == [0, 0, 0]
        # Stopped by pid: nothing left behind.
        pid = front.pid
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert not await asyncio.to_thread(run_dir.exists)
        assert not port_is_bound(port)


async def test_in_dialog_requests_reach_the_calls_worker_both_ways(run_dir: Path) -> None:
    with FakeWorker("w1") as w1, FakeWorker("w2") as w2:
        spec = front_spec([w1, w2], run_dir)
        async with running_front(spec) as front:
            host, port = front_address(spec)
            with SipEndpoint("caller", target=(host, port)) as caller:
                first, second = (Dialog(caller, f"sip:agent@{host}:{port}") for _ in range(2))
                assert (await asyncio.to_thread(first.invite)).status == 200
                assert (await asyncio.to_thread(second.invite)).status == 200
                owner = {d.call_id: w for d in (first, second) for w in (w1, w2)
                         if w.name in (d.remote_target or "")}
                assert set(owner.values()) == {w1, w2}, "one call on each worker"
                for d in (first, second):
                    info = await asyncio.to_thread(d.request, "INFO")
                    assert info.status == 200
                    got = owner[d.call_id].requests("INFO")
                    assert [m.header("Call-ID") for m in got] == [d.call_id]
                assert (await asyncio.to_thread(first.bye)).status == 200
                assert owner[first.call_id].requests("BYE")[0].header("Call-ID") == \
                    first.call_id
                # The worker hangs up the other call: its BYE reaches the caller via the front.
                worker = owner[second.call_id]
                since = await asyncio.to_thread(worker.bye, second.call_id)
                bye = await asyncio.to_thread(
                    caller.wait_for, lambda m: m.method == "BYE" and m.status is None)
                assert bye.source == (host, port)
                ok = await asyncio.to_thread(worker.final, second.call_id, "BYE", 5.0, since)
                assert ok.status == 200
                assert loads(await front.workers()) == {"w1": 0, "w2": 0}


async def test_failover_on_503_and_on_silence_but_not_on_486(run_dir: Path) -> None:
    # Spec order is dispatcher priority: with equal loads w1 is tried first, then w2, w3.
    with FakeWorker("w1", mode="busy") as w1, FakeWorker("w2", mode="silent") as w2, \
            FakeWorker("w3") as w3:
        spec = front_spec([w1, w2, w3], run_dir)
        async with running_front(spec) as front:
            host, port = front_address(spec)
            with SipEndpoint("caller", target=(host, port)) as caller:
                call = Dialog(caller, f"sip:agent@{host}:{port}")
                started = time.monotonic()
                final = await asyncio.to_thread(call.invite)
                elapsed = time.monotonic() - started
                assert final.status == 200
                assert "w3" in (call.remote_target or "")
                assert len(w1.invites()) == 1 and len(w2.invites()) == 1
                assert elapsed >= 0.9, "w2's silence lasted fr_timer (1 s)"
                assert loads(await front.workers()) == {"w1": 0, "w2": 0, "w3": 1}
                # The silent worker is out until a probe succeeds again.
                await front.wait_for_workers(
                    lambda ss: all(s.state == "active" for s in ss), timeout_s=scaled(5))
                # A worker's 486 is its dialplan's answer, not "full": it reaches the caller.
                w1.mode = "486"
                again = Dialog(caller, f"sip:agent@{host}:{port}")
                assert (await asyncio.to_thread(again.invite)).status == 486
                assert len(w1.invites()) == 2 and len(w2.invites()) == 1
                assert loads(await front.workers()) == {"w1": 0, "w2": 0, "w3": 1}
                assert (await asyncio.to_thread(call.bye)).status == 200
                assert loads(await front.workers()) == {"w1": 0, "w2": 0, "w3": 0}


async def test_every_worker_refusing_gives_the_front_503_and_frees_every_slot(
        run_dir: Path) -> None:
    # Trap 1: ds_next_dst() with nothing left would leak the slot of the last worker tried.
    with FakeWorker("w1", mode="busy") as w1, FakeWorker("w2", mode="busy") as w2:
        spec = front_spec([w1, w2], run_dir)
        async with running_front(spec) as front:
            host, port = front_address(spec)
            with SipEndpoint("caller", target=(host, port)) as caller:
                for _ in range(3):
                    final = await asyncio.to_thread(
                        Dialog(caller, f"sip:agent@{host}:{port}").invite)
                    # Our own 503 with Retry-After, not tm's 500 for a relayed 503.
                    assert final.status == 503
                    assert final.header("Retry-After") == "5"
                assert len(w1.invites()) == 3 and len(w2.invites()) == 3
                assert loads(await front.workers()) == {"w1": 0, "w2": 0}


async def test_a_cancelled_call_frees_its_slot(run_dir: Path) -> None:
    with FakeWorker("w1", capacity=1, mode="ring") as w1:
        spec = front_spec([w1], run_dir)
        async with running_front(spec) as front:
            host, port = front_address(spec)
            with SipEndpoint("caller", target=(host, port)) as caller:
                call = Dialog(caller, f"sip:agent@{host}:{port}")
                since = call.send_invite()
                await asyncio.to_thread(
                    caller.wait_for, lambda m: m.status == 180, 5.0, since)
                assert loads(await front.workers()) == {"w1": 1}
                assert (await asyncio.to_thread(call.cancel)).status == 200
                final = await asyncio.to_thread(call.complete, since)
                assert final.status == 487
                assert [m.header("Call-ID") for m in w1.requests("CANCEL")] == [call.call_id]
                assert loads(await front.workers()) == {"w1": 0}
                w1.mode = "answer"
                again = Dialog(caller, f"sip:agent@{host}:{port}")
                assert (await asyncio.to_thread(again.invite)).status == 200
                assert (await asyncio.to_thread(again.bye)).status == 200


async def test_drain_stops_new_calls_to_a_worker_and_keeps_its_live_call(
        run_dir: Path) -> None:
    with FakeWorker("w1") as w1, FakeWorker("w2") as w2:
        spec = front_spec([w1, w2], run_dir)
        async with running_front(spec) as front:
            host, port = front_address(spec)
            with SipEndpoint("caller", target=(host, port)) as caller:
                live = Dialog(caller, f"sip:agent@{host}:{port}")
                assert (await asyncio.to_thread(live.invite)).status == 200
                assert "w1" in (live.remote_target or "")
                await front.drain("w1")
                state = await front.worker("w1")
                assert state.state == "disabled" and not state.accepting
                new = [Dialog(caller, f"sip:agent@{host}:{port}") for _ in range(3)]
                for d in new:
                    assert (await asyncio.to_thread(d.invite)).status == 200
                assert len(w1.invites()) == 1 and len(w2.invites()) == 3
                # Pings do not revive a drained worker.
                await asyncio.sleep(1.5)
                assert (await front.worker("w1")).state == "disabled"
                # The call it still has goes on: in-dialog requests follow Record-Route.
                assert (await asyncio.to_thread(live.bye)).status == 200
                assert [m.header("Call-ID") for m in w1.requests("BYE")] == [live.call_id]
                for d in new:
                    assert (await asyncio.to_thread(d.bye)).status == 200
                # A worker answering OPTIONS 503 (its own drain) is taken out by the probes.
                await front.set_worker_state("w1", "active")
                w2.draining = True
                states = await front.wait_for_workers(
                    lambda ss: [s.state for s in ss] == ["active", "inactive"],
                    timeout_s=scaled(5))
                assert states[1].probing
                again = Dialog(caller, f"sip:agent@{host}:{port}")
                assert (await asyncio.to_thread(again.invite)).status == 200
                assert "w1" in (again.remote_target or "")
                w2.draining = False
                await front.wait_for_workers(
                    lambda ss: all(s.state == "active" for s in ss), timeout_s=scaled(5))
                assert (await asyncio.to_thread(again.bye)).status == 200
                raw = await front.rpc("dispatcher.list")
                assert isinstance(raw, dict) and raw["NRSETS"] == 1
                assert WORKER_SET == 1


async def test_a_call_a_worker_places_leaves_through_the_front(run_dir: Path) -> None:
    with FakeWorker("w1") as w1, FakeWorker("target") as target:
        spec = front_spec([w1], run_dir)
        host, port = front_address(spec)
        w1.target = target.target = (host, port)
        async with running_front(spec):
            # A REFER transfer: the worker calls the transfer target through the front.
            leg = Dialog(w1, target.contact)
            final = await asyncio.to_thread(leg.invite)
            assert final.status == 200
            (invite,) = target.invites()
            assert invite.source == (host, port)
            assert invite.header("Record-Route") == f"<sip:{host}:{port};lr>"
            assert invite.header("X-Gateway-Source") is None
            assert leg.route == (f"sip:{host}:{port};lr",)
            await asyncio.to_thread(
                target.wait_for, lambda m: m.method == "ACK" and m.status is None)
            # The far end hangs up: its BYE comes back through the front to the worker.
            since = await asyncio.to_thread(target.bye, leg.call_id)
            ok = await asyncio.to_thread(target.final, leg.call_id, "BYE", 5.0, since)
            assert ok.status == 200
            assert [m.header("Call-ID") for m in w1.requests("BYE")] == [leg.call_id]
