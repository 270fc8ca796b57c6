"""The installed ``gateway`` command, as a user types it, on the shipped examples.

The console script (``.venv/bin/gateway``) does not put the working directory on ``sys.path``
the way ``python -m gateway`` does, so these run it from the repository root and from
elsewhere: a dialplan's Python code must be found through the dialplan, not the directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import scaled

pytestmark = pytest.mark.component

ROOT = Path(__file__).resolve().parents[2]
#: The console script installed next to this interpreter.
GATEWAY = Path(sys.executable).parent / "gateway"


def _gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH is how a developer's shell could hide the bug; a user has none.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(GATEWAY), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=scaled(60), check=False)


@pytest.fixture(params=["repo", "elsewhere"])
def cwd(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The repository root, or a directory that has nothing to do with it."""
    return ROOT if request.param == "repo" else tmp_path


def _name(path: Path, cwd: Path) -> str:
    return str(path.relative_to(ROOT)) if cwd == ROOT else str(path)


@pytest.mark.parametrize(("dialplan", "summary"), [
    ("concierge", "OK: 2 routes, 6 agents"),
    ("voice_assistant", "OK: 1 route, 2 agents"),
])
def test_dialplan_check_imports_the_examples_code(dialplan: str, summary: str,
                                                   cwd: Path) -> None:
    assert GATEWAY.is_file()
    done = _gateway("dialplan", "check", _name(ROOT / "dialplans" / f"{dialplan}.yaml", cwd),
                    cwd=cwd)
    assert done.stderr == ""
    assert done.stdout.strip() == summary
    assert done.returncode == 0


def test_dialplan_route_reaches_the_agents_sdk_agent(cwd: Path) -> None:
    done = _gateway("dialplan", "route", _name(ROOT / "dialplans" / "concierge.yaml", cwd),
                    "--from", "1001", "--to", "200", cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot import" not in done.stdout + done.stderr


@pytest.mark.parametrize("example", ["concierge", "voice_assistant"])
def test_config_check_finds_the_examples_dialplan(example: str, cwd: Path) -> None:
    config = ROOT / "examples" / example / "gateway.yaml"
    done = _gateway("config", "check", _name(config, cwd), cwd=cwd)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("dialplan:"))
    assert (cwd / line.split(":", 1)[1].strip()).resolve() == \
        ROOT / "dialplans" / f"{example}.yaml"
