"""The finished dialplan handed to SIP workers: exact round trips, and nothing else decodes."""

from __future__ import annotations

import base64
import json
import os
import pickle
from pathlib import Path

import pytest

from gateway.dialplan.loader import load_dialplan, parse_dialplan
from gateway.dialplan.wire import PlanWireError, decode_plan, encode_plan
from gateway.errors import ConfigErrors
from gateway.ipc.messages import Reload, encode
from gateway.worker.plan import PushedPlan

ROOT = Path(__file__).parent.parent.parent
PLANS = sorted((ROOT / "dialplans").glob("*.yaml"))
ENV = {"CRM_TOKEN": "tok-123", "API_TOKEN": "tok-456"}


@pytest.mark.parametrize("path", PLANS, ids=[p.name for p in PLANS])
def test_every_shipped_dialplan_round_trips_exactly(path: Path) -> None:
    plan = load_dialplan(path, ENV)
    text = encode_plan(plan)
    assert text.isascii()
    assert decode_plan(text) == plan


def test_the_sdk_agent_plan_round_trips() -> None:
    pytest.importorskip("agents")
    plan = load_dialplan(ROOT / "tests" / "fixtures" / "dialplans" / "capabilities_sdk.yaml")
    assert decode_plan(encode_plan(plan)) == plan


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


@pytest.mark.parametrize(("payload", "reason"), [
    (pickle.dumps(_Evil()), "an encoded dialplan may not hold posix.system"),
    (pickle.dumps({"routes": []}), "an encoded dialplan holds a dict"),
    (pickle.dumps(_Evil), "an encoded dialplan may not hold tests.unit.test_dialplan_wire._Evil"),
    (b"not a pickle", "not an encoded dialplan: UnpicklingError"),
])
def test_anything_but_a_plan_of_value_types_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(PlanWireError) as info:
        decode_plan(base64.b64encode(payload).decode())
    assert str(info.value).startswith(reason)


def test_text_that_is_not_base64_is_refused() -> None:
    with pytest.raises(PlanWireError, match="must be base64 text"):
        decode_plan("not base64!")


PLAN_A = "agents: {a: {instructions: First.}}\nroutes: [{name: all, agent: a}]\n"
PLAN_B = "agents: {b: {instructions: Second.}}\nroutes: [{name: all, agent: b}]\n"


def _reload(version: int, yaml_text: str) -> Reload:
    return Reload(version, "/etc/gateway/dialplan.yaml",
                  encode_plan(parse_dialplan(yaml_text, "/etc/gateway/dialplan.yaml")))


def test_a_worker_switches_only_to_newer_valid_plans(tmp_path: Path) -> None:
    path = tmp_path / "dialplan.json"
    path.write_text(json.dumps(encode(_reload(1, PLAN_A))))
    plans = PushedPlan.from_file(path)
    assert list(plans.current.agents) == ["a"] and plans.version == 1
    assert plans.switch(_reload(2, PLAN_B))
    assert list(plans.current.agents) == ["b"] and plans.version == 2
    assert not plans.switch(_reload(1, PLAN_A))  # stale: a late message
    assert plans.switch(_reload(2, PLAN_A)) and list(plans.current.agents) == ["b"]
    broken = Reload(3, "/etc/gateway/dialplan.yaml", base64.b64encode(b"junk").decode())
    assert not plans.switch(broken)
    assert list(plans.current.agents) == ["b"] and plans.version == 2


def test_a_missing_or_foreign_plan_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="not a dialplan from the control process"):
        PushedPlan.from_file(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"type": "drain", "deadline_s": 1}))
    with pytest.raises(ConfigErrors, match="holds a drain message"):
        PushedPlan.from_file(other)
