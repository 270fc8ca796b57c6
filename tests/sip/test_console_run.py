"""``gateway run`` through the installed console script reaches "gateway ready" with the
shipped examples' dialplans, from a working directory that is not the repository.

The config sits in a directory of its own and names the example dialplan and scenario book
relative to itself, the way the examples' own ``gateway.yaml`` files do (theirs bind the
default SIP port 5060, which tests must not take). Start-up imports every Python tool,
guardrail and Agents SDK agent in the gateway and again in each tool worker process.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import scaled
from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.procs import ManagedProcess

pytestmark = [pytest.mark.sip, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / ".venv" / "bin" / "gateway"


@pytest.mark.parametrize("example", ["concierge", "voice_assistant"])
def test_gateway_run_with_an_example_is_ready_from_another_directory(
        example: str, tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    config = {
        "realtime": {"url": "embedded"},
        "simulator": {"port": 0, "scenarios": os.path.relpath(
            ROOT / "gateway" / "sim" / "scenarios" / f"{example}.yaml", conf_dir)},
        "dialplan": os.path.relpath(ROOT / "dialplans" / f"{example}.yaml", conf_dir),
        "sip": {"transports": [{"type": "udp", "host": "127.0.0.1", "port": free_udp_port()}],
                "rtp_port_start": free_udp_port_block(8), "rtp_port_range": 8},
        "calls": {"tool_workers": 1},
    }
    (conf_dir / "gateway.yaml").write_text(yaml.safe_dump(config))
    proc = ManagedProcess(
        [str(GATEWAY), "run", "-c", "../conf/gateway.yaml", "--run-seconds", "120"],
        log_path=tmp_path / "gateway.log", name="gateway", env={"PYTHONPATH": ""}, cwd=cwd,
        max_lifetime_s=150)
    with proc:
        text = proc.wait_for_log(lambda log: "gateway ready" in log, scaled(90))
    assert "cannot import" not in text
    assert "started 1 tool worker process(es)" in text
    # The tool worker imported every module the plan names (a failure logs "preload X: ...").
    assert re.search(r"preload \S+: ", text) is None
    ready = re.search(r"dialplan (\S+) \(reload", text)
    assert ready is not None
    assert (cwd / ready.group(1)).resolve() == ROOT / "dialplans" / f"{example}.yaml"
