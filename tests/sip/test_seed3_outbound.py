"""Seed 3 end to end: the concierge phones a business, gets a quote, hands off, books a visit.

``POST /v1/calls`` has the gateway call a "business" (SIPp ``uas_answer_speak``: it answers,
listens through the concierge's greeting and says it has a quote) with the example concierge
(``dialplans/concierge.yaml``). The scenario book of the concierge test
chains the call from there: extract_quote, the handoff to the quotes desk, validate_quote,
compare_quotes, place_order, the handoff to scheduling, schedule_appointment and the farewell.
The test reads the call's record back from the database with ``gateway calls show``: the
quote in extract_quote's output, the handoffs with their reasons, the tokens and the cost.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from tests.sip.gateway import GATEWAY, Gateway, control_post, run_gateway, wait_until
from tests.sip.test_agents_concierge import TO_QUOTES, TO_SCHEDULING, _plan_text, chain_book
from tests.support.audio import silence_pcm16, speech_pcm16, write_g711
from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.sipp import start_sipp

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]


def _record(gw: Gateway, call_id: str) -> dict[str, Any] | None:
    out = subprocess.run([*GATEWAY, "calls", "show", call_id, "-c", str(gw.config_path)],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return None
    record: dict[str, Any] = json.loads(out.stdout)
    return record if record.get("state") == "ended" else None


async def test_the_concierge_calls_a_business_and_the_record_holds_the_outcome(
        tmp_path: Path) -> None:
    sip = {"outbound_allow": [r"sip:business@127\.0\.0\.1:\d+"]}
    speech = silence_pcm16(6000) + speech_pcm16("Hello, I have a quote from Acme Plumbing.") \
        + silence_pcm16(40000)
    audio = write_g711(tmp_path / "business.ulaw", speech)
    port = free_udp_port()
    async with SimulatorServer(scenarios=parse_scenarios(chain_book())) as sim, \
            run_gateway(tmp_path, sim, _plan_text(), sip=sip) as gw:
        with start_sipp("uas_answer_speak", None, log_dir=tmp_path / "business",
                        local_port=port, media_port=free_udp_port_block(4),
                        keys={"audio_file": str(audio)}, timeout_s=90) as business:
            status, placed = await asyncio.to_thread(control_post, gw, "/v1/calls", {
                "to": f"sip:business@127.0.0.1:{port}", "agent": "concierge",
                "context": {"request": "a quote for a boiler service"}})
            assert status == 201, placed
            result = await asyncio.to_thread(business.result, 80.0)
            assert result.ok, result.describe()  # answered, and the concierge hung up
        record = await asyncio.to_thread(
            wait_until, lambda: _record(gw, placed["call_id"]), 20.0, "the call's record")
    assert record["direction"] == "outbound" and record["kind"] == "bridged"
    sip_part = record  # `gateway calls show` prints the record's document
    tools = [t["name"] for t in sip_part["tool_calls"]]
    assert tools[:2] == ["extract_quote", "transfer_to_quotes"]
    assert "schedule_appointment" in tools
    quote = json.loads(next(t["output"] for t in sip_part["tool_calls"]
                            if t["name"] == "extract_quote"))
    assert (quote["vendor"], quote["amount"]) == ("Acme Plumbing", 450)
    assert [(h["reason"], h["context"]) for h in sip_part["handoffs"]] == [
        (TO_QUOTES["reason"], TO_QUOTES["context"]),
        (TO_SCHEDULING["reason"], TO_SCHEDULING["context"])]
    assert sip_part["usage"]["responses"] > 0
    assert sip_part["cost_usd"] is not None and sip_part["cost_usd"] > 0
