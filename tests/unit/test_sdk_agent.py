"""Agents SDK RealtimeAgents converted to dialplan agents, with real openai-agents objects."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest
from agents import (
    GuardrailFunctionOutput,
    RunContextWrapper,
    WebSearchTool,
    function_tool,
    output_guardrail,
)
from agents.realtime import RealtimeAgent, realtime_handoff
from pydantic import BaseModel

from gateway.agents.sdk import SdkAgentError, load_sdk_agent
from gateway.agents.spec import GuardrailSpec, HandoffSpec, SdkTool
from gateway.dialplan import parse_dialplan
from gateway.dialplan.template import RenderContext

pytestmark = pytest.mark.unit

HERE = "tests.unit.test_sdk_agent"


@function_tool
def lookup_account(caller: str) -> str:
    """Look up the caller's account.

    Args:
        caller: The caller's number.
    """
    return caller


@function_tool(name_override="balance", timeout=3.5)
async def get_balance(account_id: str) -> float:
    """Get an account's balance."""
    return 1.0


@function_tool(is_enabled=False)
def hidden_tool() -> str:
    """Never shown to the model."""
    return ""


@output_guardrail
def no_secrets(ctx: RunContextWrapper[Any], agent: Any, output: Any) -> GuardrailFunctionOutput:
    """Trips on the word secret."""
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="secret" in str(output))


@output_guardrail(name="polite")
def be_polite(ctx: RunContextWrapper[Any], agent: Any, output: Any) -> GuardrailFunctionOutput:
    """Never trips."""
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)


def billing_instructions(ctx: RunContextWrapper[Any], agent: RealtimeAgent[Any]) -> str:
    """Computed from the agent, as the SDK allows."""
    assert ctx.context is None
    return f"You are {agent.name}. Reply with {{\"ok\": true}} braces kept."


async def sales_instructions(ctx: RunContextWrapper[Any], agent: RealtimeAgent[Any]) -> str:
    """Async, but waits on nothing that needs a running loop."""
    await asyncio.sleep(0)
    return "You sell things."


# Defined inside a function so only the handoff's closure knows it (no module global).
def _make_vip() -> RealtimeAgent[Any]:
    return RealtimeAgent(name="VIP Desk", instructions="You help VIP callers.")


billing: RealtimeAgent[Any] = RealtimeAgent(
    name="Billing", instructions=billing_instructions, handoff_description="Money questions.",
    tools=[get_balance, hidden_tool], output_guardrails=[no_secrets])
sales: RealtimeAgent[Any] = RealtimeAgent(name="sales", instructions=sales_instructions)
triage: RealtimeAgent[Any] = RealtimeAgent(
    name="triage",
    instructions="You are the triage agent.",
    tools=[lookup_account],
    handoffs=[
        billing,
        realtime_handoff(sales, tool_name_override="to_sales",
                         tool_description_override="Buying something."),
        realtime_handoff(_make_vip()),
        realtime_handoff(sales, tool_name_override="disabled", is_enabled=False),
    ],
    output_guardrails=[no_secrets, be_polite],
)
# Handoffs may form cycles: billing can send the caller back.
billing.handoffs.append(triage)


class _Pending:
    """An awaitable that waits on something (like a future): needs a running loop."""

    def __await__(self) -> Generator[Any, None, str]:
        yield self
        return "never"


async def waiting_instructions(ctx: RunContextWrapper[Any], agent: RealtimeAgent[Any]) -> str:
    return await _Pending()


def raising_instructions(ctx: RunContextWrapper[Any], agent: RealtimeAgent[Any]) -> str:
    raise KeyError("tenant")


def number_instructions(ctx: RunContextWrapper[Any], agent: RealtimeAgent[Any]) -> Any:
    return 42


class Reason(BaseModel):
    why: str


def _on_handoff(ctx: RunContextWrapper[Any], reason: Reason) -> None:
    raise AssertionError("the conversion must never invoke a handoff")


waits: RealtimeAgent[Any] = RealtimeAgent(name="waits", instructions=waiting_instructions)
raises: RealtimeAgent[Any] = RealtimeAgent(name="raises", instructions=raising_instructions)
number: RealtimeAgent[Any] = RealtimeAgent(name="number", instructions=number_instructions)
hosted: RealtimeAgent[Any] = RealtimeAgent(name="hosted", instructions="x",
                                           tools=[WebSearchTool()])
approval: RealtimeAgent[Any] = RealtimeAgent(
    name="approval", instructions="x",
    tools=[function_tool(lambda: "x", name_override="risky", needs_approval=True)])
with_input: RealtimeAgent[Any] = RealtimeAgent(
    name="with_input", instructions="x",
    handoffs=[realtime_handoff(sales, on_handoff=_on_handoff, input_type=Reason)])
twins: RealtimeAgent[Any] = RealtimeAgent(
    name="twins", instructions="x",
    handoffs=[RealtimeAgent(name="same", instructions="a"),
              realtime_handoff(RealtimeAgent(name="same", instructions="b"),
                               tool_name_override="other")])
duplicate_guardrails: RealtimeAgent[Any] = RealtimeAgent(
    name="dup", instructions="x", output_guardrails=[no_secrets, no_secrets])
no_instructions: RealtimeAgent[Any] = RealtimeAgent(name="quiet")
not_an_agent = "triage"


def test_conversion_covers_tools_handoffs_guardrails_and_reachable_agents() -> None:
    plan = load_sdk_agent(f"{HERE}:triage")
    assert plan.path == f"{HERE}:triage"
    assert plan.start == "triage"
    # Breadth first from the starting agent; the cycle back to triage adds nothing.
    assert list(plan.agents) == ["triage", "Billing", "sales", "VIP Desk"]
    start = plan.starting_agent
    assert start.instructions.text == "You are the triage agent."
    caps = start.capabilities
    assert caps.sdk_agent == f"{HERE}:triage"
    assert caps.tools == (SdkTool(
        name="lookup_account", agent_path=f"{HERE}:triage", agent_name="triage",
        description="Look up the caller's account.",
        parameters=lookup_account.params_json_schema),)
    assert caps.tools[0].parameters["properties"]["caller"]["description"] == "The caller's number."
    assert caps.handoffs == (
        HandoffSpec("Billing", "transfer_to_billing",
                    "Handoff to the Billing agent to handle the request. Money questions."),
        HandoffSpec("sales", "to_sales", "Buying something."),
        HandoffSpec("VIP Desk", "transfer_to_vip_desk",
                    "Handoff to the VIP Desk agent to handle the request. "),
    )
    assert caps.guardrails == (
        GuardrailSpec("no_secrets", sdk_agent_path=f"{HERE}:triage", sdk_agent_name="triage"),
        GuardrailSpec("polite", sdk_agent_path=f"{HERE}:triage", sdk_agent_name="triage"),
    )


def test_tools_keep_name_overrides_and_timeouts_and_skip_disabled_ones() -> None:
    billing_spec = load_sdk_agent(f"{HERE}:triage").agents["Billing"]
    [tool] = billing_spec.capabilities.tools
    assert isinstance(tool, SdkTool)
    assert (tool.name, tool.agent_name, tool.timeout_s) == ("balance", "Billing", 3.5)
    assert tool.description == "Get an account's balance."
    assert billing_spec.capabilities.handoffs == (
        HandoffSpec("triage", "transfer_to_triage",
                    "Handoff to the triage agent to handle the request. "),)
    assert billing_spec.capabilities.guardrails[0].sdk_agent_name == "Billing"


def test_callable_instructions_are_called_once_with_an_empty_context() -> None:
    plan = load_sdk_agent(f"{HERE}:triage")
    text = 'You are Billing. Reply with {"ok": true} braces kept.'
    assert plan.agents["Billing"].instructions.text == text
    # Literal text, not a dialplan template: braces render as written.
    context = RenderContext(call={}, headers={}, variables={})
    assert plan.agents["Billing"].instructions.render(context) == text
    assert plan.agents["sales"].instructions.text == "You sell things."


def test_an_agent_without_instructions_gets_empty_ones() -> None:
    plan = load_sdk_agent(f"{HERE}:no_instructions")
    assert plan.starting_agent.instructions.text == ""


@pytest.mark.parametrize(("attr", "reason"), [
    ("not_an_agent", "is a str, not an agents.realtime.RealtimeAgent"),
    ("missing", "has no attribute 'missing'"),
    ("waits", "its async instructions function waits on I/O"),
    ("raises", "its instructions function raised KeyError: 'tenant'"),
    ("number", "its instructions function returned a int, not a string"),
    ("hosted", "tool 'web_search' is a WebSearchTool; only function tools"),
    ("approval", "tool 'risky' needs approval"),
    ("with_input", "takes input (input_type)"),
    ("twins", "two different RealtimeAgents are named 'same'"),
    ("dup", "two output guardrails are named 'no_secrets'"),
])
def test_what_a_call_cannot_run_is_refused_with_the_reason(attr: str, reason: str) -> None:
    path = f"{HERE}:{attr}" if attr != "dup" else f"{HERE}:duplicate_guardrails"
    with pytest.raises(SdkAgentError) as info:
        load_sdk_agent(path)
    assert reason in str(info.value)


def test_sdk_agent_route_in_a_dialplan_uses_the_converted_agents() -> None:
    text = f"""\
agents:
  front:
    instructions: Front desk.
    handoffs: [triage]
routes:
  - name: sdk
    match: {{to: "200"}}
    sdk_agent: "{HERE}:triage"
  - name: front
    agent: front
"""
    plan = parse_dialplan(text, "plan.yaml")
    assert set(plan.agents) == {"front", "triage", "Billing", "sales", "VIP Desk"}
    assert plan.agents["triage"].capabilities.handoffs[1].name == "to_sales"
    assert [a.name for a in plan.reachable("front")] == \
        ["front", "triage", "Billing", "sales", "VIP Desk"]
