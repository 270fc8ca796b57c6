"""Token totals from ``response.done`` usage, and their cost."""

from __future__ import annotations

import pytest

from gateway.calls.usage import Prices, UsageMeter, cost_usd
from gateway.realtime.events import Usage

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def test_usage_is_split_by_kind_with_cached_input_apart() -> None:
    meter = UsageMeter()
    meter.add(Usage(total_tokens=1500, input_tokens=1200, output_tokens=300,
                    input_token_details={"text_tokens": 700, "audio_tokens": 500,
                                         "cached_tokens": 400,
                                         "cached_tokens_details": {"text_tokens": 300,
                                                                   "audio_tokens": 100}},
                    output_token_details={"text_tokens": 60, "audio_tokens": 240}))
    meter.add(Usage(input_token_details={"text_tokens": 10, "audio_tokens": -5},
                    output_token_details={"audio_tokens": True}))  # junk counts as nothing
    assert meter.as_dict() == {"input_text": 410, "input_audio": 400, "input_cached": 400,
                               "output_text": 60, "output_audio": 240, "responses": 2}


def test_cost_per_model_and_by_prefix() -> None:
    tokens = {"input_text": 1_000_000, "input_audio": 0, "input_cached": 0,
              "output_text": 0, "output_audio": 1_000_000}
    prices = {"m": Prices(1.0, 2.0, 0.5, 4.0, 8.0), "m-mini": Prices(0.1, 0.2, 0.05, 0.4, 0.8)}
    assert cost_usd(tokens, "m", prices) == 9.0
    assert cost_usd(tokens, "m-mini-2025-10-06", prices) == pytest.approx(0.9)  # longest prefix
    assert cost_usd(tokens, "other", prices) is None
    assert cost_usd(tokens, "gpt-realtime-2025-08-28") == 68.0  # the default table
