"""Example agents for gateway, used by the shipped dialplans.

``dialplans/voice_assistant.yaml`` and ``dialplans/concierge.yaml`` name the Python tools,
guardrails and Agents SDK agents here by import path
(``examples.voice_assistant.tools:get_weather``), so run gateway from the repository root with
``python -m gateway`` (or put the root on ``PYTHONPATH``). Every tool returns deterministic
fake data, so the simulator scenario books in ``gateway/sim/scenarios/`` can script whole calls
against them.
"""
