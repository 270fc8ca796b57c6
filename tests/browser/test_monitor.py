"""The live call monitor in a real browser, watching and ending a real call.

Real processes on 127.0.0.1: ``gateway run`` (control process and a SIP worker) with the
two-desk plan of :mod:`tests.browser.scene`, the simulator in the test process, SIPp as the
caller (``uac_expect_bye``: it succeeds only if the gateway sends it a BYE), and Debian's
Chromium, headless, driven by Selenium. The operator opens ``/monitor``, types a wrong token
(refused, not kept), then the right one; sees the call come in, its transcript with speakers,
the agent meter move while the agent speaks, the agent change on the handoff, the handoff
history and the tool cards; clicks "End call"
and confirms; the caller gets its BYE and the page moves the call to the recent calls with
its outcome and end reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException

from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from tests.browser import scene
from tests.browser.page import MonitorPage, chromium, chromium_missing, wait_for
from tests.sip.gateway import API_TOKEN, run_gateway
from tests.support.sipp import start_sipp

pytestmark = [pytest.mark.browser, pytest.mark.sip, pytest.mark.timeout(120),
              pytest.mark.skipif(chromium_missing() is not None,
                                 reason=chromium_missing() or "")]


def _moving(levels: dict[str, float]) -> dict[str, float] | None:
    return levels if levels["agent"] > 0 else None


def _open_late(driver: webdriver.Chrome, url: str, call_id: str) -> tuple[
        list[tuple[str, str]], list[str], list[tuple[str, str, str]], str]:
    """In a new tab: open the monitor, show ``call_id``, read it; back to the first tab."""
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")
    try:
        late = MonitorPage(driver, url)
        late.open(API_TOKEN)
        late.select(call_id)
        wait_for(lambda: late.handoffs() and late.tool_cards() and late.agent() == "quotes",
                 10, "the replayed handoff and tool cards")
        return late.transcript(), late.handoffs(), late.tool_cards(), late.agent()
    finally:
        driver.close()
        driver.switch_to.window(first)


async def test_the_operator_watches_a_call_hand_off_and_ends_it(tmp_path: Path) -> None:
    audio = scene.caller_audio(tmp_path)
    async with SimulatorServer(scenarios=parse_scenarios(scene.book())) as sim, \
            run_gateway(tmp_path, sim, scene.DIALPLAN) as gw, chromium() as driver:
        page = MonitorPage(driver, gw.control_url)
        await asyncio.to_thread(page.load)
        await asyncio.to_thread(page.submit_token, "not-the-token-0123456789")
        refusal = await asyncio.to_thread(wait_for, lambda: page.text("token-error"), 10,
                                          "the refusal of a wrong token")
        stored_after_refusal = await asyncio.to_thread(page.stored)
        await asyncio.to_thread(page.submit_token, API_TOKEN)
        await asyncio.to_thread(page.wait_live)
        stored = await asyncio.to_thread(page.stored)
        try:
            with start_sipp("uac_expect_bye", gw.target, log_dir=tmp_path / "sipp",
                            keys={"audio_file": str(audio)}, timeout_s=60) as sipp:
                call_id = (await asyncio.to_thread(
                    wait_for, page.live_calls, 20, "the call in the live list"))[0]
                await asyncio.to_thread(page.select, call_id)
                # The agent's greeting moves the agent meter (levels sampled while watched).
                agent_level = await asyncio.to_thread(
                    wait_for, lambda: _moving(page.levels()), 15, "the agent meter")
                # Before the handoff: the front desk, and its greeting under its name.
                await asyncio.to_thread(wait_for, lambda: (
                    page.agent() == "frontdesk"
                    and ("frontdesk", scene.GREETING) in page.transcript()), 15,
                    "the front desk's greeting")
                await asyncio.to_thread(wait_for, lambda: page.agent() == "quotes", 30,
                                        "the handoff to the quotes desk")
                await asyncio.to_thread(wait_for, lambda: (
                    ("quotes", scene.quote_line()) in page.transcript()), 20,
                    "the quotes desk's answer")
                transcript = await asyncio.to_thread(page.transcript)
                handoffs = await asyncio.to_thread(page.handoffs)
                cards = await asyncio.to_thread(page.tool_cards)
                # A second operator opens the page only now, mid-call: the replayed history
                # shows what the first one saw, once.
                late = await asyncio.to_thread(_open_late, driver, gw.control_url, call_id)
                markup = await asyncio.to_thread(page.markup_in_transcript)
                timer = await asyncio.to_thread(page.text, "d-timer")
                await asyncio.to_thread(page.end_call)
                result = await asyncio.to_thread(sipp.result, 20.0)
            recent = await asyncio.to_thread(wait_for, lambda: [
                c for c in page.recent_calls() if c["id"] == call_id and c["state"] == "ok"],
                10, "the ended call in the recent list with its outcome")
            reason = await asyncio.to_thread(page.text, "d-reason")
            state = await asyncio.to_thread(page.text, "d-state")
            live_after = await asyncio.to_thread(page.live_calls)
            errors = await asyncio.to_thread(page.console_errors)
            url = driver.current_url
        finally:
            with contextlib.suppress(WebDriverException):  # for a look after a failure
                await asyncio.to_thread(page.screenshot, tmp_path / "monitor.png")
        log = gw.log()

    # The token: refused when wrong (and not kept), then kept for this tab only, never in a URL
    # nor in the gateway's log.
    assert refusal == "The gateway refused the token: wrong bearer token."
    assert stored_after_refusal["session"].get("gateway.monitor.token") is None
    assert stored["session"]["gateway.monitor.token"] == API_TOKEN and stored["local"] == {}
    assert url == gw.control_url + "/monitor/" and API_TOKEN not in log

    assert transcript == [
        ("frontdesk", scene.GREETING),
        ("Caller", scene.CALLER_SAYS),
        ("frontdesk", scene.HANDING_OVER),
        ("note", "frontdesk handed the call to quotes"),
        ("quotes", scene.READING),
        ("quotes", scene.quote_line()),
    ]
    assert late == (transcript, handoffs, cards, "quotes")
    assert 0 < agent_level["agent"] <= 1 and agent_level["unavailable"] == 0
    assert markup == 0  # the caller's "<b>" is shown as text
    assert handoffs == ["frontdesk → quotes"]
    assert cards == [("handoff", "transfer_to_quotes", "ok"), ("quote", "extract_quote", "ok")]
    assert timer not in ("", "—", "0:00")
    assert result.ok, result.describe()  # SIPp received the BYE and answered it
    assert recent[0]["parties"] == "sipp → echo"
    assert state == "ended (ok)" and "ended by the operator (monitor)" in reason
    assert live_after == []
    # The browser's console: the wrong token's 401, nothing else (no script error, nothing
    # the Content-Security-Policy refused).
    assert len(errors) == 1 and "/v1/events" in errors[0] and "401" in errors[0], errors
