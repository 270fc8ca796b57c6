"""Example agents for gateway, used by the shipped dialplans.

``dialplans/voice_assistant.yaml`` and ``dialplans/concierge.yaml`` name the Python tools,
guardrails and Agents SDK agents here by import path
(``examples.voice_assistant.tools:get_weather``); their ``python_path: ..`` puts the repository
root on the import path, so the ``gateway`` command finds this package from any working
directory. Every tool returns deterministic fake data, so the simulator scenario books in
``gateway/sim/scenarios/`` can script whole calls against them.
"""
