"""Tokens a call used and what they cost, from the Realtime API's ``response.done`` usage.

:class:`UsageMeter` adds up each response's ``usage`` by kind (text and audio input, cached
input, text and audio output); :func:`cost_usd` prices the totals with a per-model table (US
dollars per million tokens). The defaults are OpenAI's published prices for the GA realtime
models when this was written (check https://openai.com/api/pricing and override
``calls.prices`` when they change); a model with no entry is priced by the longest entry its
name starts with, or not at all (``None``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from gateway.realtime.events import Usage

__all__ = ["DEFAULT_PRICES", "Prices", "UsageMeter", "cost_usd"]

#: The token kinds counted, as the record shows them.
KINDS: Final = ("input_text", "input_audio", "input_cached", "output_text", "output_audio")


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens of each kind."""

    input_text: float
    input_audio: float
    input_cached: float
    output_text: float
    output_audio: float


#: Model name (or prefix) -> prices.
DEFAULT_PRICES: Final[Mapping[str, Prices]] = MappingProxyType({
    "gpt-realtime": Prices(4.0, 32.0, 0.40, 16.0, 64.0),
    "gpt-realtime-mini": Prices(0.60, 10.0, 0.30, 2.40, 20.0),
    "gpt-4o-realtime-preview": Prices(5.0, 40.0, 2.50, 20.0, 80.0),
    "gpt-4o-mini-realtime-preview": Prices(0.60, 10.0, 0.30, 2.40, 20.0),
})


class UsageMeter:
    """Token totals of one call (``response.done`` after ``response.done``)."""

    def __init__(self) -> None:
        self.tokens: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.responses = 0

    def add(self, usage: Usage) -> None:
        """Count one response's usage (cached input is part of the input; kept apart here)."""
        self.responses += 1
        inp, out = usage.input_token_details, usage.output_token_details
        cached = _int(inp.get("cached_tokens"))
        cached_details = inp.get("cached_tokens_details")
        cached_audio = _int(cached_details.get("audio_tokens")) \
            if isinstance(cached_details, Mapping) else 0
        self.tokens["input_cached"] += cached
        self.tokens["input_text"] += max(0, _int(inp.get("text_tokens"))
                                         - (cached - cached_audio))
        self.tokens["input_audio"] += max(0, _int(inp.get("audio_tokens")) - cached_audio)
        self.tokens["output_text"] += _int(out.get("text_tokens"))
        self.tokens["output_audio"] += _int(out.get("audio_tokens"))

    def as_dict(self) -> dict[str, int]:
        """The totals, for the call record."""
        return {**self.tokens, "responses": self.responses}


def cost_usd(tokens: Mapping[str, int], model: str,
             prices: Mapping[str, Prices] = DEFAULT_PRICES) -> float | None:
    """What ``tokens`` cost on ``model`` (``None`` when no price is known for it)."""
    table = prices.get(model) or next(
        (prices[name] for name in sorted(prices, key=len, reverse=True)
         if model.startswith(name)), None)
    if table is None:
        return None
    total = sum(tokens.get(kind, 0) * float(getattr(table, kind)) for kind in KINDS)
    return round(total / 1_000_000, 6)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
