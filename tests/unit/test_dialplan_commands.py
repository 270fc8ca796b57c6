"""``gateway dialplan check`` / ``route``: what the admin sees and the exit status."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from gateway.dialplan.commands import check, parse_header_args, route

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dialplans"
EXAMPLE = ROOT / "dialplans" / "example.yaml"
NO_FALLBACK = FIXTURES / "no_fallback.yaml"


def test_check_ok_prints_counts() -> None:
    out = io.StringIO()
    assert check(EXAMPLE, out) == 0
    assert out.getvalue() == "OK: 6 routes, 3 agents\n"
    out = io.StringIO()
    assert check(ROOT / "dialplans" / "default.yaml", out) == 0
    assert out.getvalue() == "OK: 1 route, 1 agent\n"


def test_check_prints_every_error_as_file_line_field_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "agents:\n"
        "  a:\n"
        "    instructions: 'Hi {nope}'\n"
        "routes:\n"
        "  - name: r\n"
        "    agent: b\n"
        "  - name: s\n"
        "    reject: 99\n"
    )
    out = io.StringIO()
    assert check(path, out) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert re.match(rf"{re.escape(str(path))}:\d+: [\w.\[\]]+: \S", line), line
    assert lines[0].startswith(
        f"{path}:3: agents.a.instructions: unknown template variable {{nope}}")
    assert lines[1] == f"{path}:6: routes[0].agent: unknown agent 'b' (agents: a)"
    assert lines[2] == f"{path}:8: routes[1].reject: must be >= 400; got 99"


def test_check_unreadable_file(tmp_path: Path) -> None:
    out = io.StringIO()
    assert check(tmp_path / "missing.yaml", out) == 1
    assert out.getvalue().startswith(f"{tmp_path / 'missing.yaml'}: cannot read")


def test_route_to_agent_shows_route_agent_and_rendered_instructions() -> None:
    out = io.StringIO()
    code = route(NO_FALLBACK, from_user="+14155550123", to_user="+18005550100",
                 headers={"x-tenant": "acme"}, out=out)
    assert code == 0
    text = out.getvalue()
    assert text.splitlines()[:2] == [f"route: sales ({NO_FALLBACK}:16)", "action: agent sales"]
    assert "voice: marin\n" in text and "model: (gateway default)\n" in text
    assert "greeting: Sales, this is Acme.\n" in text
    assert text.endswith("instructions:\n  You sell for Acme. The caller is +14155550123.\n")


def test_route_reject_and_refer() -> None:
    out = io.StringIO()
    assert route(NO_FALLBACK, from_user="anonymous", to_user="+18005550100", out=out) == 0
    assert out.getvalue() == f"route: blocked ({NO_FALLBACK}:10)\naction: reject 403 Forbidden\n"
    out = io.StringIO()
    assert route(NO_FALLBACK, from_user="1", to_user="+18005550111", out=out) == 0
    assert out.getvalue().splitlines()[1] == "action: refer sip:voicemail@pbx.example.com"


def test_route_without_match_prints_404_and_exits_2() -> None:
    out = io.StringIO()
    # The sales route needs the X-Tenant header, so this call matches nothing.
    assert route(NO_FALLBACK, from_user="+14155550123", to_user="+18005550100", out=out) == 2
    assert out.getvalue() == "no route (404)\n"


def test_route_uses_every_call_field() -> None:
    out = io.StringIO()
    code = route(EXAMPLE, from_user="+14155550123", to_user="+18005550100",
                 request_uri="sip:+18005550100@gw.example.com",
                 headers={"X-Tenant": "acme", "X-Account-Id": "A-17"}, account="trunk",
                 source_ip="10.9.8.7", caller_name="Jo", out=out)
    assert code == 0
    text = out.getvalue()
    assert text.startswith("route: support (")
    assert "account is A-17 and they called the support line" in text
    assert "Their name, if the network gave it, is: Jo." in text
    out = io.StringIO()
    # Same call from outside the allowed networks falls through to the included catch-all.
    route(EXAMPLE, from_user="+14155550123", to_user="+18005550100",
          request_uri="sip:+18005550100@gw.example.com", headers={"X-Tenant": "acme"},
          account="trunk", source_ip="192.0.2.1", out=out)
    assert out.getvalue().startswith("route: default (")


def test_route_on_invalid_dialplan_prints_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes: [{name: r}]\n")
    out = io.StringIO()
    assert route(path, from_user="1", to_user="2", out=out) == 1
    assert out.getvalue() == f"{path}:1: routes[0]: needs one action: agent, reject or refer\n"


def test_parse_header_args() -> None:
    assert parse_header_args(["X-A=1", "X-B=a=b", "X-C="]) == {"X-A": "1", "X-B": "a=b", "X-C": ""}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_header_args(["X-A"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_header_args(["=1"])
