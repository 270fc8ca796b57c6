"""A screenshot of the live call monitor during a simulated call (for the docs).

    .venv/bin/python -m bench.monitor_screenshot [-o docs/images/monitor.png]

Plays the browser test's call (``tests/browser/scene.py``) on 127.0.0.1: ``gateway run`` with
the two-desk plan, the simulator in this process, SIPp as the caller, and a headless Chromium
(Debian's ``chromium`` + ``chromium-driver``) on ``/monitor/`` with a generated token. Once
the quotes desk has answered, the window is saved as a PNG; the call is then ended from the
page ("End call") and everything is stopped. Takes about 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from tests.browser import scene
from tests.browser.page import MonitorPage, chromium, chromium_missing, wait_for
from tests.sip.gateway import API_TOKEN, run_gateway
from tests.support.sipp import start_sipp

DEFAULT_OUTPUT = Path("docs/images/monitor.png")


async def take(output: Path, width: int, height: int) -> Path:
    with tempfile.TemporaryDirectory(prefix="monitor-shot-") as tmp:
        work = Path(tmp)
        audio = scene.caller_audio(work)
        book = parse_scenarios(scene.book(scene.PLAIN_CALLER_SAYS))
        async with SimulatorServer(scenarios=book) as sim, \
                run_gateway(work, sim, scene.DIALPLAN) as gw, \
                chromium(width, height) as driver:
            page = MonitorPage(driver, gw.control_url)
            await asyncio.to_thread(page.open, API_TOKEN)
            with start_sipp("uac_expect_bye", gw.target, log_dir=work / "sipp",
                            keys={"audio_file": str(audio)}, timeout_s=60) as sipp:
                await asyncio.to_thread(wait_for, page.live_calls, 20, "the call")
                await asyncio.to_thread(wait_for, lambda: (
                    ("quotes", scene.quote_line()) in page.transcript()), 40,
                    "the quotes desk's answer")
                await asyncio.sleep(1.5)  # the timer and "last heard" move on a little
                shot = await asyncio.to_thread(page.screenshot, output)
                await asyncio.to_thread(page.end_call)
                await asyncio.to_thread(sipp.result, 20.0)
    return shot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"PNG to write (default {DEFAULT_OUTPUT})")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    missing = chromium_missing()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 2
    shot = asyncio.run(take(args.output.resolve(), args.width, args.height))
    print(shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
