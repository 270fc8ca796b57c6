"""The example concierge written with the OpenAI Agents SDK instead of YAML.

``dialplans/concierge.yaml`` routes calls to ``200`` here with
``sdk_agent: {path: examples.concierge.sdk_agent:concierge, ...}``. gateway imports the
starting agent, follows its handoffs and runs it like a dialplan agent: the ``@function_tool``
tools run in gateway's tool workers, the handoffs become transfer tools (with the names given
here, the same as the YAML version's, so one simulator scenario book drives both), and the
output guardrail below is run on what the agent says. The scheduling desk shows callable
instructions: gateway calls them once, when the dialplan loads, with an empty context.
Needs ``pip install gateway[agents]``.
"""

from __future__ import annotations

import re
from typing import Any, Final

from agents import GuardrailFunctionOutput, RunContextWrapper, function_tool, output_guardrail
from agents.realtime import RealtimeAgent, realtime_handoff

from examples.concierge import tools

COMPANY: Final = "Harbour Home Services"
#: 13 to 19 digits, optionally grouped by spaces or dashes.
_CARD_CANDIDATE: Final = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """Whether ``text`` contains something that looks like a payment card number.

    Args:
        text: What the agent said.

    Returns:
        True when a 13-19 digit run (spaces and dashes allowed) passes the Luhn check.
    """
    return any(_luhn(re.sub(r"\D", "", m.group(0))) for m in _CARD_CANDIDATE.finditer(text))


@output_guardrail(name="card_number")
def no_card_numbers(ctx: RunContextWrapper[Any], agent: Any,
                    output: Any) -> GuardrailFunctionOutput:
    """Stop the agent from reading out a payment card number."""
    tripped = contains_card_number(str(output))
    return GuardrailFunctionOutput(output_info={"card_number": tripped},
                                   tripwire_triggered=tripped)


def scheduling_instructions(ctx: RunContextWrapper[Any], agent: RealtimeAgent[Any]) -> str:
    """The scheduling desk's instructions (callable: the SDK passes context and agent)."""
    return (
        f"You run the scheduling desk of {COMPANY}. The caller has an order number from the"
        " quotes desk. Ask for the day and a preferred time, book the vendor's visit with"
        " schedule_appointment, read back the two-hour window and the confirmation code, then"
        " say goodbye. Never read out card numbers."
    )


scheduling: RealtimeAgent[Any] = RealtimeAgent(
    name="sdk_scheduling",
    instructions=scheduling_instructions,
    tools=[function_tool(tools.schedule_appointment)],
    output_guardrails=[no_card_numbers],
)

quotes: RealtimeAgent[Any] = RealtimeAgent(
    name="sdk_quotes",
    instructions=(
        f"You run the quotes desk of {COMPANY}. Check the caller's quote with validate_quote,"
        " compare it with the others they have using compare_quotes, and when they agree,"
        " order from the best vendor with place_order and read back the order number. Then"
        " hand over to the scheduling desk to book the visit. Never read out card numbers."
    ),
    tools=[function_tool(tools.validate_quote), function_tool(tools.compare_quotes),
           function_tool(tools.place_order)],
    handoffs=[realtime_handoff(
        scheduling, tool_name_override="transfer_to_scheduling",
        tool_description_override="Book the vendor's visit once an order is placed.")],
    output_guardrails=[no_card_numbers],
)

concierge: RealtimeAgent[Any] = RealtimeAgent(
    name="sdk_concierge",
    instructions=(
        f"You are the concierge of {COMPANY}. Callers read you quotes they got from"
        " tradespeople. Use extract_quote to read each quote, tell the caller what you"
        " understood, then hand over to the quotes desk. If they only want to book a visit"
        " for an existing order, hand over to the scheduling desk. Be brief and warm. Never"
        " read out card numbers."
    ),
    tools=[function_tool(tools.extract_quote)],
    handoffs=[
        realtime_handoff(quotes, tool_name_override="transfer_to_quotes",
                         tool_description_override="Check, compare and order a quote."),
        realtime_handoff(scheduling, tool_name_override="transfer_to_scheduling",
                         tool_description_override="Book a visit for an existing order."),
    ],
    output_guardrails=[no_card_numbers],
)
