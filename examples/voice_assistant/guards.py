"""Output guardrails of the example voice assistant, in Python.

A ``python:`` guardrail gets the agent's transcript so far and trips when it returns something
truthy; a string is reported as the reason. Keep them fast and free of I/O: they run every
``guardrail_debounce_chars`` characters while the agent speaks.
"""

from __future__ import annotations

import re
from typing import Final

_DOSAGE: Final = re.compile(
    r"\b(?:\d+(?:\.\d+)?\s*(?:mg|milligrams?|ml|millilit(?:er|re)s?)\b"
    r"|(?:take|double|increase|decrease)\s+(?:the\s+|your\s+)?(?:dose|dosage))",
    re.IGNORECASE)


def medical_advice(text: str) -> str:
    """Trip when the agent starts giving dosing advice.

    Args:
        text: What the agent has said in the current item so far.

    Returns:
        The reason it tripped, or "" when the text is fine.
    """
    # The reason may be logged: it names the rule, never what was said.
    return "dosing advice" if _DOSAGE.search(text) else ""
