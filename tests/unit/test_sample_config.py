from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings, load_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_sample_config_is_valid_and_equals_the_defaults() -> None:
    loaded = load_settings(ROOT / "gateway.example.yaml", {})
    assert loaded == Settings(source=str(ROOT / "gateway.example.yaml"))


def test_env_example_lists_every_variable_config_reads() -> None:
    text = (ROOT / ".env.example").read_text()
    source = (ROOT / "gateway" / "config.py").read_text()
    import re

    read = set(re.findall(r'"(GATEWAY_[A-Z_]+|OPENAI_[A-Z_]+)"', source))
    listed = set(re.findall(r"^#? ?([A-Z_]+)=", text, re.M))
    assert read <= listed, read - listed
