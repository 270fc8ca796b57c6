from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import EMBEDDED, Secret, load_settings, parse_settings
from gateway.errors import ConfigErrors
from gateway.yamlsrc import load_yaml

pytestmark = pytest.mark.unit


def settings_from(text: str, env: dict[str, str] | None = None) -> object:
    return parse_settings(load_yaml(text, "gw.yaml"), env or {})


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        settings_from(text, env)
    return [str(e) for e in info.value.errors]


def test_defaults_run_on_the_embedded_simulator(tmp_path: Path) -> None:
    s = load_settings(None, {"GATEWAY_CONFIG": ""}) if not Path("gateway.yaml").exists() else None
    if s is None:  # a developer's own gateway.yaml in the checkout must not change this test
        s = parse_settings(load_yaml("", "x"), {})
    assert s.realtime.url == EMBEDDED
    assert s.realtime.embedded
    assert s.sip.codecs == ("PCMU", "PCMA")
    assert s.sip.max_calls is None  # from the binding at start


def test_errors_name_file_line_and_field() -> None:
    text = "realtime:\n  model: 5\nsip:\n  max_calls: 0\n  codecs: [G729]\n  bogus: 1\n"
    errs = errors_of(text)
    assert "gw.yaml:2: realtime.model: must be a string, got an integer" in errs
    assert "gw.yaml:4: sip.max_calls: must be >= 1; got 0" in errs
    assert any(e.startswith("gw.yaml:5: sip.codecs: unsupported codec 'G729'") for e in errs)
    assert "gw.yaml:6: sip.bogus: unknown field" in errs


def test_yaml_syntax_error_has_line() -> None:
    with pytest.raises(Exception) as info:
        load_yaml("a: 1\nb: [\n", "bad.yaml")
    assert str(info.value).startswith("bad.yaml:")


def test_duplicate_keys_are_rejected() -> None:
    with pytest.raises(Exception) as info:
        load_yaml("a: 1\nb: 2\na: 3\n", "dup.yaml")
    assert str(info.value) == "dup.yaml:3: a: duplicate key"


def test_remote_realtime_needs_a_key_and_never_prints_it() -> None:
    errs = errors_of("realtime:\n  url: wss://api.openai.com/v1/realtime\n")
    assert any("needs an API key" in e and "OPENAI_API_KEY" in e for e in errs)
    key = "sk-test-abcdefghijklmnop"
    s = parse_settings(load_yaml("realtime:\n  url: wss://api.openai.com/v1/realtime\n", "g"),
                       {"OPENAI_API_KEY": key})
    assert s.realtime.api_key.value == key
    assert key not in repr(s)
    assert key not in str(s.realtime.api_key)


def test_env_overrides_file() -> None:
    s = parse_settings(load_yaml("realtime:\n  model: a\nlogging:\n  level: info\n", "g"),
                       {"GATEWAY_REALTIME_MODEL": "gpt-realtime-2.1-mini",
                        "GATEWAY_LOG_LEVEL": "debug"})
    assert s.realtime.model == "gpt-realtime-2.1-mini"
    assert s.logging.level == "DEBUG"


def test_account_password_comes_from_env_only() -> None:
    text = ("sip:\n  accounts:\n    - name: pbx\n      registrar: sip:127.0.0.1:5060\n"
            "      user: gw\n      password_env: PBX_PASS\n")
    errs = errors_of(text)
    assert "gw.yaml:6: sip.accounts[0].password_env: environment variable PBX_PASS is not set" \
        in errs
    s = parse_settings(load_yaml(text, "g"), {"PBX_PASS": "hunter2-secret"})
    acct = s.sip.accounts[0]
    assert acct.password == Secret("hunter2-secret")
    assert acct.domain == "127.0.0.1:5060"
    assert acct.auth_user == "gw"
    assert "hunter2" not in repr(s)


def test_tls_transport_requires_certificates() -> None:
    errs = errors_of("sip:\n  transports:\n    - type: tls\n      port: 5061\n")
    assert errs == ["gw.yaml:3: sip.transports[0]: tls transport needs cert_file and key_file"]


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_settings(tmp_path / "nope.yaml", {})
    assert "file not found" in str(info.value)


def test_bad_networks_and_chunk_size() -> None:
    errs = errors_of("sip:\n  trunk_allow: [10.0.0.0/33]\ncalls:\n  append_chunk_ms: 30\n")
    assert "gw.yaml:2: sip.trunk_allow: not an IP network: '10.0.0.0/33'" in errs
    assert "gw.yaml:4: calls.append_chunk_ms: must be a multiple of 20 ms" in errs
