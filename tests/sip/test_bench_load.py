"""``bench/load.py`` as a user runs it, with several gateway processes in one level.

The benchmark starts one ``gateway run`` per share of calls (always so on the PyPI wheel, 3
calls each). Each must get its own SIP, RTP and HTTP ports: when they all took the control
server's default 8080, every process but one exited and the level was "not measured".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.echo_ua import REPO_ROOT

pytestmark = [pytest.mark.sip, pytest.mark.timeout(180)]


def test_a_quick_run_with_one_call_per_gateway_measures_every_call(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--quick", "--calls-per-gateway", "1",
         "--modes", "native", "--no-doc", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (level,) = json.loads((out / "results.json").read_text())["levels"]
    # --quick: 3 calls; one per `gateway run`, each of three processes (control, worker and
    # the worker's preloaded parent).
    assert (level["calls"], level["procs"]) == (3, 9)
    assert (level["calls_ok"], level["calls_failed"]) == (3, 0)
    assert level["rtp"]["streams"] == 3
    assert ": not measured" not in done.stdout
