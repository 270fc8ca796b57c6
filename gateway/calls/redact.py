"""What of a call record may go to the log: call content only with ``logging.call_content``.

A record keeps the call's content for the operator (the database, the control API): the
transcript, tool arguments and outputs, the referral target. The ``call record:`` log line
leaves them out unless the operator turned call content on. Pure.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["log_view"]

_CONTENT_KEYS: Final = ("transcript", "referred_to")
_TOOL_CONTENT: Final = ("arguments", "output")
_HANDOFF_CONTENT: Final = ("reason", "context")


def log_view(record: Mapping[str, Any], *, content: bool) -> dict[str, Any]:
    """``record`` as the log may show it (a copy; ``record`` is not changed)."""
    data = copy.deepcopy(dict(record))
    if content:
        return data
    for key in _CONTENT_KEYS:
        data.pop(key, None)
    for tool in data.get("tool_calls") or []:
        if isinstance(tool, dict):
            for key in _TOOL_CONTENT:
                tool.pop(key, None)
    for handoff in data.get("handoffs") or []:
        if isinstance(handoff, dict):
            for key in _HANDOFF_CONTENT:
                handoff.pop(key, None)
    return data
