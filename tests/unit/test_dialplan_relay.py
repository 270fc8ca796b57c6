"""``relay:`` routes: parsing, errors with file and line, the checks against ``openai_calls``."""

from __future__ import annotations

import pytest

from gateway.config import OpenAICallsSettings, Secret
from gateway.control.plans import relay_errors
from gateway.dialplan import parse_dialplan
from gateway.dialplan.router import CallInfo, decide, route_call, route_named
from gateway.dialplan.schema import AgentAction, Relay
from gateway.errors import ConfigErrors

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

PLAN = """
agents:
  a:
    instructions: "Hello {caller}, this is {var.brand}."
variables: {brand: Acme}
routes:
  - name: default-uri
    match: {to: "200"}
    agent: a
    relay: true
  - name: own-uri
    match: {to: "201"}
    agent: a
    relay: {uri: "sip:proj_x@sip.api.openai.com;transport=tls"}
  - name: bridged
    agent: a
    relay: false
"""

ENABLED = OpenAICallsSettings(enabled=True, webhook_secret=Secret("whsec_x"),
                              sip_uri="sip:proj_y@sip.api.openai.com;transport=tls")


def _info(to: str) -> CallInfo:
    return CallInfo(to_user=to, from_user="+15550100", request_uri=f"sip:{to}@gw",
                    headers={}, account="trunk", source_ip="192.0.2.1")


def test_relay_is_an_agent_route_option() -> None:
    plan = parse_dialplan(PLAN, "plan.yaml", read_text=lambda _: "")
    actions = [r.action for r in plan.routes]
    assert actions == [
        AgentAction("a", relay=Relay()),
        AgentAction("a", relay=Relay("sip:proj_x@sip.api.openai.com;transport=tls")),
        AgentAction("a"),
    ]
    decision = route_call(plan, _info("201"))
    assert decision.route.name == "own-uri"
    assert decision.instructions == "Hello +15550100, this is Acme."


def test_decide_renders_a_named_route_for_the_callers_invite() -> None:
    """The control process renders the relayed call's route with the INVITE the worker saw."""
    plan = parse_dialplan(PLAN, "plan.yaml", read_text=lambda _: "")
    route = route_named(plan, "default-uri")
    assert route is not None and route_named(plan, "gone") is None
    decision = decide(plan, route, _info("999"))  # routing would not pick it: no matter
    assert decision.agent is not None and decision.agent.name == "a"
    assert decision.instructions == "Hello +15550100, this is Acme."


@pytest.mark.parametrize(("text", "line", "field", "reason"), [
    (PLAN.replace("relay: true", "relay: yes please"), 10, "routes[0].relay",
     "must be true (dial openai_calls.sip_uri) or {uri: SIP_URI}"),
    (PLAN.replace('"sip:proj_x@sip.api.openai.com;transport=tls"', '"tel:+15550100"'), 14,
     "routes[1].relay.uri", "must be a sip: or sips: URI"),
    (PLAN + "  - name: closed\n    reject: 486\n    relay: true\n", 20, "routes[3].relay",
     "applies to agent routes only"),
    (PLAN.replace("relay: {uri:", "relay: {url:"), 14, "routes[1].relay.url", "unknown"),
])
def test_bad_relays_name_file_line_and_field(text: str, line: int, field: str,
                                             reason: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_dialplan(text, "plan.yaml", read_text=lambda _: "")
    errors = [e for e in info.value.errors if e.field == field]
    assert errors, [str(e) for e in info.value.errors]
    assert (errors[0].source, errors[0].line) == ("plan.yaml", line)
    assert reason in errors[0].reason


def test_relay_routes_need_the_webhook_and_a_uri() -> None:
    plan = parse_dialplan(PLAN, "plan.yaml", read_text=lambda _: "")
    assert relay_errors(plan, ENABLED) == []
    off = relay_errors(plan, OpenAICallsSettings())
    assert [(e.line, e.field) for e in off] == [(7, "relay"), (11, "relay")]
    assert "set openai_calls.enabled" in off[0].reason
    no_uri = relay_errors(plan, OpenAICallsSettings(enabled=True,
                                                    webhook_secret=Secret("whsec_x")))
    assert [e.line for e in no_uri] == [7]  # the route with its own uri needs none
    assert "openai_calls.sip_uri, which is not set" in no_uri[0].reason
