"""The optional ``fallback`` URI of routes and agents (where a call goes if its agent is lost)."""

from __future__ import annotations

import pytest

from gateway.dialplan import parse_dialplan
from gateway.errors import ConfigErrors

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

PLAN = """
agents:
  a:
    instructions: Hi.
    fallback: "sip:ops@pbx.example.com"
  b:
    instructions: Hi.
routes:
  - name: own
    agent: b
    fallback: "tel:+18005550100"
  - name: inherited
    agent: a
"""


def test_fallback_is_read_on_agents_and_routes() -> None:
    plan = parse_dialplan(PLAN, "plan.yaml", read_text=lambda _: "")
    assert plan.agents["a"].fallback == "sip:ops@pbx.example.com"
    assert plan.agents["b"].fallback is None
    assert [r.fallback for r in plan.routes] == ["tel:+18005550100", None]


@pytest.mark.parametrize(("text", "line", "field", "reason"), [
    (PLAN.replace('"sip:ops@pbx.example.com"', '"ops desk"'), 5, "agents.a.fallback",
     "must be a sip:, sips: or tel: URI"),
    (PLAN + '  - name: busy\n    reject: 486\n    fallback: "sip:x@y"\n', 16,
     "routes[2].fallback", "applies to agent routes only"),
])
def test_bad_fallbacks_name_file_line_and_field(text: str, line: int, field: str,
                                                reason: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_dialplan(text, "plan.yaml", read_text=lambda _: "")
    errors = info.value.errors
    assert len(errors) == 1
    assert (errors[0].source, errors[0].line, errors[0].field) == ("plan.yaml", line, field)
    assert reason in errors[0].reason
