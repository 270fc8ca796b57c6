"""Voice agents: tools, handoffs, output guardrails, DTMF handling and Agents SDK import."""
