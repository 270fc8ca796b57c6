"""Realtime Calls faults the simulator plays on purpose: scripted REST answers, lost sidebands.

``rest_faults`` makes a call's next REST requests of a verb fail with the API's envelopes (the
official SDK reads them as its exception types, the gateway's ``CallsClient`` retries the
transient ones and gives up on 404), and every request is logged with its answer. A call's
sideband can be dropped mid-call (the call and its session go on, a new sideband attaches)
and its upgrades refused with an HTTP status. Also over ``/sim/calls``.
"""

from __future__ import annotations

import aiohttp
import pytest
from openai import InternalServerError, NotFoundError, RateLimitError

from gateway.realtime.calls import CallGone, CallsApiError, CallsClient
from gateway.realtime.retry import RetryPolicy
from gateway.sim.calls import CallState
from gateway.sim.restfaults import RestFaults, parse_rest_faults
from tests.component.test_sim_calls import AUTH, calls_sim, handshake_status, sdk
from tests.component.test_sim_calls_media import answered, raw_sideband
from tests.conftest import scaled

pytestmark = pytest.mark.component

FAST = RetryPolicy(max_attempts=3, initial_delay_s=0.01, max_delay_s=0.05)


# --- scripted REST answers ----------------------------------------------------------------


async def test_faulted_requests_get_the_api_envelopes_then_requests_work() -> None:
    async with calls_sim() as sim, sdk(sim) as client:
        call = await sim.incoming_call(rest_faults={"accept": [503, 429, 404]})
        with pytest.raises(InternalServerError) as busy:
            await client.realtime.calls.accept(call.call_id, type="realtime")
        with pytest.raises(RateLimitError) as limited:
            await client.realtime.calls.accept(call.call_id, type="realtime")
        with pytest.raises(NotFoundError) as gone:
            await client.realtime.calls.accept(call.call_id, type="realtime")
        assert call.state is CallState.INCOMING  # a faulted accept accepted nothing
        await client.realtime.calls.accept(call.call_id, type="realtime")
        await call.wait_accepted()
    assert (busy.value.status_code, busy.value.type) == (503, "server_error")
    assert (limited.value.type, limited.value.code) == ("requests", "rate_limit_exceeded")
    assert (gone.value.code, gone.value.type) == ("call_not_found", "invalid_request_error")
    assert call.requests == [("accept", 503), ("accept", 429), ("accept", 404), ("accept", 200)]


async def test_the_calls_client_retries_server_errors_and_not_a_404() -> None:
    async with calls_sim() as sim, CallsClient(sim.http_url, "sk-test", retry=FAST) as rest:
        flaky = await sim.incoming_call(rest_faults={"accept": [503, 500], "refer": [502]})
        await rest.accept(flaky.call_id, {"instructions": "Hi."})
        await rest.refer(flaky.call_id, "sip:desk@pbx.example.com")
        assert await flaky.wait_referred() == "sip:desk@pbx.example.com"
        gone = await sim.incoming_call(rest_faults={"accept": [404]})
        with pytest.raises(CallGone):
            await rest.accept(gone.call_id, {"instructions": "Hi."})
        down = await sim.incoming_call(rest_faults={"hangup": [503, 503, 503, 503]})
        await rest.accept(down.call_id, {})
        with pytest.raises(CallsApiError) as exhausted:
            await rest.hangup(down.call_id)
    assert flaky.requests == [("accept", 503), ("accept", 500), ("accept", 200),
                              ("refer", 502), ("refer", 200)]
    assert gone.requests == [("accept", 404)]  # final: no retry
    assert exhausted.value.status == 503 and exhausted.value.retryable
    assert down.requests == [("accept", 200), *[("hangup", 503)] * 3]
    assert down.faults.pending() == {"hangup": [503]} and down.state is CallState.ACCEPTED


@pytest.mark.parametrize("bad", [
    [503], {"answer": [503]}, {"accept": 503}, {"accept": [200]}, {"accept": [True]},
    {"accept": [400]}, {"accept": [503] * 21},
])
def test_bad_fault_scripts_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_rest_faults(bad)


def test_faults_are_used_up_in_order_per_verb() -> None:
    faults = RestFaults({"accept": [503, 404], "refer": []})
    assert [faults.take("accept"), faults.take("refer"), faults.pending()] == [
        503, None, {"accept": [404]}]
    assert [faults.take("accept"), faults.take("accept"), faults.take("hangup")] == [
        404, None, None]


# --- the sideband -------------------------------------------------------------------------


@pytest.mark.parametrize("abort", [True, False])
async def test_a_dropped_sideband_leaves_the_call_up_for_a_new_one(abort: bool) -> None:
    async with calls_sim() as sim, aiohttp.ClientSession() as http:
        call, _ = await answered(sim, "Anything")
        ws = await raw_sideband(http, sim, call)
        assert await call.drop_sideband(abort=abort) == 1
        msg = await ws.receive(timeout=scaled(5))
        await ws.close()
        if abort:
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        else:
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1011
        assert call.state is CallState.ACCEPTED
        again = await raw_sideband(http, sim, call)  # reads its session.created
        await again.send_str('{"type": "response.create"}')
        await call.wait_for_event("response.done", timeout=scaled(10))
        await again.close()
        assert [await c.wait_closed(timeout=scaled(5)) is not None for c in call.sidebands] == [
            True, True]
        assert await call.drop_sideband() == 0  # none left open


async def test_refused_sidebands_get_the_status_until_allowed_again() -> None:
    async with calls_sim() as sim:
        call, _ = await answered(sim, "Anything")
        call.refuse_sidebands()
        assert await handshake_status(sim, f"call_id={call.call_id}") == 503
        call.refuse_sidebands(429)
        assert await handshake_status(sim, f"call_id={call.call_id}") == 429
        call.refuse_sidebands(None)
        assert await handshake_status(sim, f"call_id={call.call_id}") == 101
        for status in (200, 600, True):
            with pytest.raises(ValueError):
                call.refuse_sidebands(status)


async def test_faults_over_http_test_control() -> None:
    async with calls_sim() as sim, aiohttp.ClientSession() as http:
        base = sim.control_url
        async with http.post(base, json={"rest_faults": {"accept": [503]}}) as resp:
            assert resp.status == 201
            call_id = (await resp.json())["call_id"]
        rest = f"{sim.http_url}/realtime/calls/{call_id}/accept"
        for status in (503, 200):
            async with http.post(rest, headers=AUTH, json={"type": "realtime"}) as resp:
                assert resp.status == status
        async with http.post(f"{base}/{call_id}/refuse_sidebands", json={"status": 502}) as resp:
            assert (await resp.json())["sideband_refusal"] == 502
        assert await handshake_status(sim, f"call_id={call_id}") == 502
        async with http.post(f"{base}/{call_id}/refuse_sidebands", json={"status": None}):
            pass
        call = sim.calls[0]
        ws = await raw_sideband(http, sim, call)
        async with http.post(f"{base}/{call_id}/drop_sideband", json={}) as resp:
            summary = await resp.json()
        await ws.close()
        assert await call.sidebands[0].wait_closed(timeout=scaled(5)) is not None
        assert summary["state"] == "accepted"
        assert summary["rest_requests"] == [{"verb": "accept", "status": 503},
                                            {"verb": "accept", "status": 200}]
        assert summary["rest_faults"] == {}
        for bad in ({"rest_faults": {"accept": [200]}}, {"rest_faults": [503]}):
            async with http.post(base, json=bad) as resp:
                assert resp.status == 400, bad
        async with http.post(f"{base}/{call_id}/refuse_sidebands", json={"status": 99}) as resp:
            assert resp.status == 400
