"""Realtime Calls state machine, REST body rules, webhook events and signatures (pure)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from openai import InvalidWebhookSignatureError, OpenAI
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent
from standardwebhooks import Webhook, WebhookVerificationError

from gateway.sim.calls import (
    ALLOWED,
    DEFAULT_REJECT_STATUS,
    CallControlError,
    CallError,
    CallState,
    RealtimeCall,
    default_sip_headers,
    incoming_event,
    new_id,
    normalize_sip_headers,
    parse_body,
    validate_accept,
    validate_hangup,
    validate_refer,
    validate_reject,
)
from gateway.sim.options import SimOptions
from gateway.sim.signing import FAULT_SKEW_S, USER_AGENT, check_secret, sign_webhook
from gateway.sim.validate import SIP_FORMAT_CODE

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "calls"
ACCEPT = json.loads((FIXTURES / "accept_bodies.json").read_text())
REST = json.loads((FIXTURES / "rest_bodies.json").read_text())
SECRET = "whsec_" + base64.b64encode(b"simulator test secret, 32 bytes!").decode()
HEADERS = (("From", "<sip:+14155550100@pbx.example>;tag=1"), ("To", "<sip:proj_x@sip.api>"),
           ("Call-ID", "abc@pbx"), ("X-Trace", "1"), ("X-Trace", "2"))
NOW = 1_767_225_600.0


def make_call(ring_timeout_s: float = 30.0) -> RealtimeCall:
    return RealtimeCall("rtc_" + "a" * 32, HEADERS, "srtp", NOW, ring_timeout_s, "gpt-realtime-2.1")


def body(value: Any) -> bytes:
    return b"" if value is None else json.dumps(value).encode()


def refused(call: RealtimeCall, verb: str, value: Any = None) -> CallError:
    with pytest.raises(CallError) as info:
        call.request(verb, body(value), NOW + 1)
    return info.value


# --- the state machine ------------------------------------------------------------------


def test_accept_then_refer_then_transfer_done_ends_the_call() -> None:
    call = make_call()
    assert call.request("accept", body({"type": "realtime", "instructions": "Hi"}), NOW + 1) == (
        CallState.ACCEPTED
    )
    assert call.has_session and call.session is not None
    assert call.session["instructions"] == "Hi"
    assert call.request("refer", body({"target_uri": "tel:+14155550123"}), NOW + 2) == (
        CallState.REFERRED
    )
    assert call.refer_target == "tel:+14155550123" and call.has_session
    call.transfer_result(True, NOW + 3)
    assert (call.state, call.ended_by) == (CallState.ENDED, "transfer")
    assert [s for s, _ in call.history] == ["incoming", "accepted", "referred", "ended"]
    assert [at for _, at in call.history] == [NOW, NOW + 1, NOW + 2, NOW + 3]


def test_a_failed_transfer_returns_to_accepted_and_may_be_referred_again() -> None:
    call = make_call()
    call.request("accept", body({"type": "realtime"}), NOW)
    call.request("refer", body({"target_uri": "sip:a@example.com"}), NOW)
    assert refused(call, "refer", {"target_uri": "sip:b@example.com"}).code == "invalid_call_state"
    call.transfer_result(False, NOW)
    assert call.state is CallState.ACCEPTED
    call.request("refer", body({"target_uri": "sip:b@example.com"}), NOW)
    assert call.refer_target == "sip:b@example.com"
    call.request("hangup", b"", NOW)
    assert (call.state, call.ended_by) == (CallState.ENDED, "api")


def test_reject_defaults_to_603_and_the_call_is_then_gone() -> None:
    call = make_call()
    assert call.request("reject", b"", NOW) is CallState.REJECTED
    assert call.reject_status == DEFAULT_REJECT_STATUS == 603
    for verb in ALLOWED:
        error = refused(call, verb, {"type": "realtime"} if verb == "accept" else None)
        assert (error.status, error.code) == (404, "call_not_found")
        assert error.body() == {
            "error": {
                "message": f"Call '{call.call_id}' not found.",
                "type": "invalid_request_error",
                "param": None,
                "code": "call_not_found",
            }
        }


@pytest.mark.parametrize(
    ("state_setup", "verb"),
    [
        ("incoming", "refer"),
        ("incoming", "hangup"),
        ("accepted", "accept"),
        ("accepted", "reject"),
        ("referred", "accept"),
        ("referred", "reject"),
        ("referred", "refer"),
    ],
)
def test_verbs_the_state_does_not_allow_are_400_invalid_call_state(
    state_setup: str, verb: str
) -> None:
    call = make_call()
    if state_setup in ("accepted", "referred"):
        call.request("accept", body({"type": "realtime"}), NOW)
    if state_setup == "referred":
        call.request("refer", body({"target_uri": "tel:+1555"}), NOW)
    before = call.state
    good = {"accept": {"type": "realtime"}, "refer": {"target_uri": "tel:+1555"}}.get(verb)
    error = refused(call, verb, good)
    assert (error.status, error.type, error.code, error.param) == (
        400, "invalid_request_error", "invalid_call_state", None
    )
    assert str(before) in error.message
    assert call.state is before


def test_the_allowed_table_matches_the_documented_machine() -> None:
    assert {verb: sorted(states) for verb, states in ALLOWED.items()} == {
        "accept": ["incoming"],
        "reject": ["incoming"],
        "refer": ["accepted"],
        "hangup": ["accepted", "referred"],
    }


def test_ring_timeout_only_while_ringing_and_only_at_the_deadline() -> None:
    call = make_call(ring_timeout_s=5)
    assert call.ring_deadline == NOW + 5
    assert not call.expire(NOW + 4.9)
    assert call.expire(NOW + 5)
    assert call.state is CallState.TIMED_OUT and call.over
    assert refused(call, "accept", {"type": "realtime"}).status == 404
    answered = make_call(ring_timeout_s=5)
    answered.request("accept", body({"type": "realtime"}), NOW + 1)
    assert not answered.expire(NOW + 60)
    assert answered.state is CallState.ACCEPTED


def test_caller_hangup_cancels_a_ringing_call_and_ends_an_answered_one() -> None:
    ringing = make_call()
    assert ringing.caller_hangup(NOW)
    assert (ringing.state, ringing.ended_by) == (CallState.ENDED, "caller")
    assert not ringing.caller_hangup(NOW)  # already over
    answered = make_call()
    answered.request("accept", body({"type": "realtime"}), NOW)
    assert answered.caller_hangup(NOW)
    assert answered.ended_by == "caller"


def test_session_close_ends_only_a_call_with_a_session() -> None:
    ringing = make_call()
    assert not ringing.session_closed(NOW)
    answered = make_call()
    answered.request("accept", body({"type": "realtime"}), NOW)
    assert answered.session_closed(NOW) and answered.ended_by == "server"


def test_transfer_result_without_a_pending_refer_is_a_control_error() -> None:
    call = make_call()
    with pytest.raises(CallControlError):
        call.transfer_result(True, NOW)


def test_unknown_verb_is_an_invalid_url_404() -> None:
    error = refused(make_call(), "answer")
    assert error.status == 404 and error.code is None
    assert error.message == f"Invalid URL (POST /v1/realtime/calls/{'rtc_' + 'a' * 32}/answer)"


def test_to_json_summarises_the_call() -> None:
    call = make_call()
    call.request("reject", body({"status_code": 486}), NOW + 1)
    summary = call.to_json()
    assert summary["state"] == "rejected" and summary["reject_status"] == 486
    assert summary["sip_headers"][3:] == [
        {"name": "X-Trace", "value": "1"}, {"name": "X-Trace", "value": "2"}
    ]
    assert summary["history"] == [{"state": "incoming", "at": NOW},
                                  {"state": "rejected", "at": NOW + 1}]
    json.dumps(summary)


# --- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ACCEPT["valid"], ids=lambda c: c["name"])
def test_valid_accept_bodies_configure_the_session(case: dict[str, Any]) -> None:
    session = validate_accept(case["body"], "gpt-realtime-2.1")
    assert session["type"] == "realtime" and session["object"] == "realtime.session"
    assert session["model"] == case["body"].get("model", "gpt-realtime-2.1")
    # The SIP call's format comes from SDP: G.711 μ-law, never what the body says.
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    for key, value in case["body"].items():
        if key not in ("type", "audio"):
            assert session[key] == value or key in ("tools",), key


def test_a_full_accept_body_is_reported_field_by_field() -> None:
    full = ACCEPT["valid"][1]["body"]
    session = validate_accept(full, "other")
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 400
    assert session["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 1.0}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin",
                                          "speed": 1.1}
    assert [t["name"] for t in session["tools"]] == ["transfer_call", "end_call"]


@pytest.mark.parametrize("case", ACCEPT["invalid"], ids=lambda c: c["name"])
def test_invalid_accept_bodies_are_400_with_code_and_param(case: dict[str, Any]) -> None:
    with pytest.raises(CallError) as info:
        validate_accept(case["body"], "gpt-realtime-2.1")
    error = info.value
    assert (error.status, error.type, error.code, error.param) == (
        400, "invalid_request_error", case["code"], case["param"]
    )
    # Flat body: no "session." prefix anywhere.
    assert "session." not in error.message


def test_accept_refuses_audio_format_explaining_the_sip_pitfall() -> None:
    with pytest.raises(CallError) as info:
        validate_accept(
            {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcma"}}}}, "m"
        )
    assert info.value.code == SIP_FORMAT_CODE
    assert "negotiated in SDP" in info.value.message


def test_accept_without_body_misses_type() -> None:
    call = make_call()
    error = refused(call, "accept", None)
    assert (error.code, error.param) == ("missing_required_parameter", "type")
    assert call.state is CallState.INCOMING  # a refused accept changes nothing


@pytest.mark.parametrize(("value", "status"), REST["reject"]["valid"])
def test_valid_reject_bodies(value: Any, status: int) -> None:
    assert validate_reject(value) == status


@pytest.mark.parametrize(("value", "code", "param"), REST["reject"]["invalid"])
def test_invalid_reject_bodies(value: Any, code: str, param: str | None) -> None:
    with pytest.raises(CallError) as info:
        validate_reject(value)
    assert (info.value.status, info.value.code, info.value.param) == (400, code, param)


@pytest.mark.parametrize("target", REST["refer"]["valid"])
def test_valid_refer_targets(target: str) -> None:
    assert validate_refer({"target_uri": target}) == target


@pytest.mark.parametrize("target", REST["refer"]["invalid"])
def test_invalid_refer_targets(target: str) -> None:
    with pytest.raises(CallError) as info:
        validate_refer({"target_uri": target})
    assert (info.value.status, info.value.code, info.value.param) == (
        400, "invalid_value", "target_uri"
    )


@pytest.mark.parametrize(
    ("value", "code"),
    [(None, "missing_required_parameter"), ({}, "missing_required_parameter"),
     ({"target_uri": 5}, "invalid_type"), ({"target_uri": "tel:+1", "x": 1}, "unknown_parameter")],
)
def test_refer_body_errors(value: Any, code: str) -> None:
    with pytest.raises(CallError) as info:
        validate_refer(value)
    assert info.value.code == code


@pytest.mark.parametrize("value", REST["hangup"]["valid"])
def test_valid_hangup_bodies(value: Any) -> None:
    validate_hangup(value)


@pytest.mark.parametrize(("value", "code", "param"), REST["hangup"]["invalid"])
def test_invalid_hangup_bodies(value: Any, code: str, param: str | None) -> None:
    with pytest.raises(CallError) as info:
        validate_hangup(value)
    assert (info.value.code, info.value.param) == (code, param)


def test_non_json_body_is_a_400_without_code() -> None:
    assert parse_body(b"  ") is None
    with pytest.raises(CallError) as info:
        parse_body(b"{not json")
    assert (info.value.status, info.value.code, info.value.param) == (400, None, None)
    assert "could not parse the JSON body" in info.value.message


# --- headers, ids and the webhook event ---------------------------------------------------


def test_sip_headers_keep_order_and_repeats_and_refuse_garbage() -> None:
    assert normalize_sip_headers([("A", "1"), {"name": "A", "value": "2"}]) == (
        ("A", "1"), ("A", "2")
    )
    for bad in ([("Bad Name", "x")], [("A", "line\r\nInjected: 1")], [("A",)], [("A", 1)]):
        with pytest.raises(ValueError):
            normalize_sip_headers(bad)
    assert normalize_sip_headers([("Proxy-Authorization", "Digest x"), ("authorization", "y"),
                                  ("Via", "SIP/2.0/TLS pbx")]) == (("Via", "SIP/2.0/TLS pbx"),)
    names = [n for n, _ in default_sip_headers("rtc_" + "b" * 32)]
    assert names == ["From", "To", "Call-ID"]


def test_ids_are_shaped_like_the_apis() -> None:
    ids = {new_id("rtc") for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("rtc_") and len(i) == 36 for i in ids)


def test_incoming_event_parses_as_the_sdk_type() -> None:
    call = make_call()
    event = incoming_event(call, event_id="evt_" + "c" * 32, created_at=int(NOW))
    parsed = RealtimeCallIncomingWebhookEvent.model_validate(event, strict=True)
    assert parsed.object == "event" and parsed.type == "realtime.call.incoming"
    assert parsed.data.call_id == call.call_id
    assert [(h.name, h.value) for h in parsed.data.sip_headers] == list(HEADERS)
    assert parsed.data.sip_media_security == "srtp"
    unknown = RealtimeCall("rtc_" + "d" * 32, (), None, NOW, 1, "m")
    assert "sip_media_security" not in incoming_event(unknown, event_id="evt_x", created_at=1)[
        "data"
    ]


# --- signatures ---------------------------------------------------------------------------


def signed_event(**kwargs: Any) -> tuple[bytes, dict[str, str]]:
    event = incoming_event(make_call(), event_id="evt_" + "e" * 32, created_at=int(time.time()))
    signed = sign_webhook(event, secret=SECRET, webhook_id="wh_" + "f" * 32,
                          timestamp=int(time.time()), **kwargs)
    return signed.body, signed.headers


def test_signed_webhook_verifies_with_the_sdk_and_standardwebhooks() -> None:
    payload, headers = signed_event()
    assert headers["user-agent"] == USER_AGENT
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    event = OpenAI(api_key="x", webhook_secret=SECRET).webhooks.unwrap(payload, headers)
    assert isinstance(event, RealtimeCallIncomingWebhookEvent)
    assert Webhook(SECRET).verify(payload, headers)["id"] == event.id


@pytest.mark.parametrize("fault", ["bad_signature", "stale_timestamp", "future_timestamp"])
def test_spoilt_webhooks_fail_verification(fault: Any) -> None:
    payload, headers = signed_event(fault=fault)
    with pytest.raises(InvalidWebhookSignatureError):
        OpenAI(api_key="x", webhook_secret=SECRET).webhooks.unwrap(payload, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(payload, headers)
    if fault != "bad_signature":
        skew = int(headers["webhook-timestamp"]) - int(time.time())
        assert abs(abs(skew) - FAULT_SKEW_S) <= 2


@pytest.mark.parametrize("secret", ["plain", "whsec_", "whsec_***", "whsec_" + "=" * 4])
def test_secrets_the_two_libraries_would_read_differently_are_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        check_secret(secret)
    with pytest.raises(ValueError):
        SimOptions(webhook_url="http://127.0.0.1:1/hook", webhook_secret=secret)


def test_options_need_a_secret_with_a_webhook_url_and_sane_numbers() -> None:
    with pytest.raises(ValueError, match="webhook_secret"):
        SimOptions(webhook_url="http://127.0.0.1:1/hook")
    for bad in ({"webhook_attempts": 0}, {"webhook_timeout_s": 0}, {"ring_timeout_s": 0},
                {"playout_speed": 0}, {"webhook_url": "ftp://x", "webhook_secret": SECRET}):
        with pytest.raises(ValueError):
            SimOptions(**bad)
    SimOptions(webhook_url="http://127.0.0.1:1/hook", webhook_secret=SECRET)


# --- purity -------------------------------------------------------------------------------

PROBE = """
import sys
for name in ("aiohttp", "websockets", "asyncio", "pjsua2"):
    sys.modules[name] = None
import importlib
importlib.import_module({module!r})
"""


@pytest.mark.parametrize(
    "module", ["gateway.sim.calls", "gateway.sim.playout", "gateway.sim.signing"]
)
def test_pure_modules_import_without_io_libraries(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", PROBE.format(module=module)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
