"""Pure SIP-side checks: offers the gateway cannot serve, short datagrams, RTP liveness, the
answer to unhandled requests, 503 refusals and the SIP settings that configure them."""

from __future__ import annotations

import pytest

from gateway.config import load_settings, parse_settings
from gateway.errors import AgentUnavailable, CallRejected, ConfigErrors, NoRouteError
from gateway.sip.liveness import RtpWatch
from gateway.sip.message import uri_host
from gateway.sip.offer import content_length_refusal, offer_refusal
from gateway.sip.reject import rejection_response
from gateway.sip.unhandled import answer_unhandled, method_of
from gateway.yamlsrc import load_yaml

pytestmark = pytest.mark.unit


def sdp(*, c: str = "IN IP4 192.0.2.1", m: str = "audio 4000 RTP/AVP 0 101",
        extra: tuple[str, ...] = ()) -> str:
    return "\r\n".join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", f"c={c}", "t=0 0", f"m={m}",
                        "a=rtpmap:0 PCMU/8000", *extra]) + "\r\n"


def test_a_plain_g711_offer_and_a_late_offer_are_fine() -> None:
    assert offer_refusal(sdp(), "application/sdp", codecs=("PCMU",)) is None
    assert offer_refusal("", None, codecs=("PCMU",)) is None


@pytest.mark.parametrize(("offer", "status", "warning"), [
    (sdp(c="IN IP6 ::1"), 488, "301"),
    (sdp(m="video 4000 RTP/AVP 96"), 488, "304"),
    (sdp(m="audio 0 RTP/AVP 0"), 488, "304"),
    (sdp(m="audio 4000 UDP/TLS/RTP/SAVPF 0"), 488, "302"),
    (sdp(m="audio 4000 RTP/AVP 18"), 488, "305"),
    (sdp(c="garbage"), 488, "300"),
    (sdp(m="audio 4000 RTP/SAVP 0"), 488, "302"),  # srtp off
])
def test_offers_that_cannot_be_served_name_the_reason(offer: str, status: int,
                                                      warning: str) -> None:
    refusal = offer_refusal(offer, "application/sdp", codecs=("PCMU", "PCMA"))
    assert refusal is not None and refusal.status == status
    assert dict(refusal.headers)["Warning"].startswith(warning)


def test_a_dynamic_payload_type_named_pcma_counts_and_ipv4_media_line_wins() -> None:
    offer = sdp(c="IN IP6 ::1", m="audio 4000 RTP/AVP 97",
                extra=("c=IN IP4 192.0.2.9", "a=rtpmap:97 PCMA/8000"))
    assert offer_refusal(offer, None, codecs=("PCMA",)) is None


def test_one_usable_stream_among_several_is_enough() -> None:
    offer = sdp(m="audio 4000 RTP/SAVP 0") + "m=audio 4002 RTP/AVP 0\r\n"
    assert offer_refusal(offer, None, codecs=("PCMU",)) is None


def test_srtp_policy() -> None:
    crypto = ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
              "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",)
    savp = sdp(m="audio 4000 RTP/SAVP 0", extra=crypto)
    assert offer_refusal(savp, None, codecs=("PCMU",), srtp="mandatory") is None
    assert offer_refusal(savp, None, codecs=("PCMU",), srtp="optional") is None
    plain = offer_refusal(sdp(), None, codecs=("PCMU",), srtp="mandatory")
    assert plain is not None and plain.status == 488


def test_a_body_that_is_not_sdp_gets_415_with_accept() -> None:
    refusal = offer_refusal("hello", "text/plain", codecs=("PCMU",))
    assert refusal is not None and refusal.status == 415
    assert ("Accept", "application/sdp") in refusal.headers


def test_content_length_longer_than_the_datagram_gets_400() -> None:
    head = "INVITE sip:1@h SIP/2.0\r\nCall-ID: x\r\nContent-Length: {}\r\n\r\n"
    body = sdp()
    assert content_length_refusal(head.format(len(body)) + body, "udp") is None
    short = content_length_refusal(head.format(5000) + body, "udp")
    assert short is not None and short.status == 400
    assert content_length_refusal(head.format(5000) + body, "tcp") is None
    compact = "INVITE sip:1@h SIP/2.0\r\nl: 10\r\n\r\nabc"
    assert content_length_refusal(compact, "udp") is not None
    bad = content_length_refusal("INVITE sip:1@h SIP/2.0\r\nContent-Length: x\r\n\r\n", "udp")
    assert bad is not None and bad.status == 400


def test_rtp_watch_fires_after_silence_and_pauses_on_hold() -> None:
    watch = RtpWatch(3.0)
    assert not watch.observe(0.0, 10)
    assert not watch.observe(2.9, 10)
    assert watch.observe(3.0, 10)
    watch = RtpWatch(3.0)
    watch.observe(0.0, 10)
    assert not watch.observe(2.0, None)  # on hold: nothing expected
    assert not watch.observe(100.0, None)
    assert not watch.observe(101.0, 10)  # resumed: the clock starts over
    assert not watch.observe(103.5, 11)
    assert watch.observe(106.5, 11)
    with pytest.raises(ValueError):
        RtpWatch(0)


@pytest.mark.parametrize(("method", "status"), [("FOO", 501), ("INFO", 481), ("BYE", 481),
                                                ("PUBLISH", 405), ("SUBSCRIBE", 405)])
def test_unhandled_requests_get_rfc_3261_answers(method: str, status: int) -> None:
    answer = answer_unhandled(method)
    assert answer is not None and answer.status == status
    assert answer.allow == (status != 481)


def test_ack_is_never_answered_and_the_method_is_read_from_pjsip_info() -> None:
    assert answer_unhandled("ACK") is None
    assert answer_unhandled("") is None
    assert method_of("Request msg FOO/cseq=1 (rdata0x1)") == "FOO"
    assert method_of("Request msg INFO/cseq=2/call-id=abc/to=x (rdata0x2)") == "INFO"
    assert method_of("Response msg 200/INVITE/cseq=1 (rdata0x3)") == ""


def test_every_503_says_when_to_retry_and_nothing_declines() -> None:
    status, _, headers = rejection_response(AgentUnavailable())
    assert status == 503 and dict(headers)["Retry-After"] == "5"
    status, _, headers = rejection_response(CallRejected("x", sip_status=503))
    assert dict(headers)["Retry-After"]
    status, _, headers = rejection_response(NoRouteError())
    assert status == 404 and headers == ()


@pytest.mark.parametrize(("uri", "host"), [
    ("sip:pbx.example.com", "pbx.example.com"), ("sip:gw@10.0.0.1:5060;transport=tcp", "10.0.0.1"),
    ("sips:[2001:db8::1]:5061", "2001:db8::1"), ("", ""),
])
def test_uri_host(uri: str, host: str) -> None:
    assert uri_host(uri) == host


def test_sip_settings_defaults_and_errors() -> None:
    sip = load_settings(None, {}).sip
    assert sip.caller_refer_allow == () and sip.rtp_timeout_s == 30
    assert sip.session_timers == "optional" and sip.srtp == "off"
    assert sip.transports[0].verify_server
    doc = load_yaml("sip:\n  srtp: off\n  session_timers: off\n", "g.yaml")
    parsed = parse_settings(doc, {}).sip
    assert parsed.srtp == "off" and parsed.session_timers == "off"
    bad = load_yaml("sip:\n  caller_refer_allow: ['sip:(']\n  rtp_timeout_s: 1\n"
                    "  session_min_se_s: 4000\n  session_expires_s: 3600\n"
                    "  accounts:\n    - {name: p, registrar: 'sip:h', user: u,"
                    " allow_from: [nonsense]}\n", "g.yaml")
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(bad, {})
    text = str(caught.value)
    for field in ("sip.caller_refer_allow", "sip.rtp_timeout_s", "sip.session_min_se_s",
                  "sip.accounts[0].allow_from"):
        assert "g.yaml:" in text and field in text, (field, text)
