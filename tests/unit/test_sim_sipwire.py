"""The simulator/SIP-endpoint channel's messages and the INVITE facts, without any I/O."""

from __future__ import annotations

import pytest

from gateway.ipc.framing import FrameDecoder
from gateway.sim import sipwire

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

SDES = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 4000 RTP/SAVP 0 101
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
a=rtpmap:0 PCMU/8000
"""


def test_messages_round_trip_through_the_framing() -> None:
    pcm = bytes(range(256)) + bytes(64)
    frames = sipwire.encode({"type": "play", "leg": 3, "pcm": sipwire.encode_pcm(pcm)})
    decoder = FrameDecoder()
    decoder.feed(frames)
    message = decoder.next_message()
    assert message is not None
    assert sipwire.check(message, sipwire.FROM_SIMULATOR) == "play"
    assert sipwire.decode_pcm(message["pcm"]) == pcm


@pytest.mark.parametrize("message", [
    {"type": "answer", "leg": 1},                      # missing status
    {"type": "answer", "leg": True, "status": 200},    # bool is not a leg number
    {"type": "refer", "leg": 1, "target": 5},
    {"type": "invite", "leg": 1},                      # the other direction's type
    {"leg": 1},
])
def test_malformed_messages_are_refused(message: dict[str, object]) -> None:
    with pytest.raises(sipwire.WireError):
        sipwire.check(message, sipwire.FROM_SIMULATOR)


def test_pcm_must_be_base64_pcm16() -> None:
    with pytest.raises(sipwire.WireError):
        sipwire.decode_pcm("not base64!")
    with pytest.raises(sipwire.WireError):
        sipwire.decode_pcm(sipwire.encode_pcm(b"\x00\x01\x02"))


def test_webhook_headers_keep_order_and_repeats_but_drop_credentials() -> None:
    headers = [("Via", "SIP/2.0/UDP a"), ("Authorization", "Digest x"), ("X-A", "1"),
               ("proxy-authorization", "Digest y"), ("X-A", "2")]
    assert sipwire.webhook_headers(headers) == [("Via", "SIP/2.0/UDP a"), ("X-A", "1"),
                                                ("X-A", "2")]


def test_media_security_is_srtp_only_for_an_sdes_offer() -> None:
    assert sipwire.media_security(SDES) == "srtp"
    assert sipwire.media_security(SDES.replace("RTP/SAVP", "RTP/AVP")) == "rtp"
    no_keys = "\n".join(line for line in SDES.splitlines() if not line.startswith("a=crypto"))
    assert sipwire.media_security(no_keys) == "rtp"
    assert sipwire.media_security("") == "rtp"
