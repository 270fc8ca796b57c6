"""The simulator over real WebSockets on 127.0.0.1: handshake rules, audio formats, barge-in."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.media.g711 import alaw_decode, ulaw_decode
from gateway.sim.audio import encode_output
from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimOptions, SimulatorServer, serve
from gateway.sim.tts import synthesize
from tests.conftest import scaled

pytestmark = pytest.mark.component

FAST = SimOptions(speed=20.0, tts_engine="tone", response_latency_ms=0)
AUTH = {"Authorization": "Bearer test-key"}
Event = dict[str, Any]


class Peer:
    """A raw WebSocket client that keeps every server event it read."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        await self.ws.send_str(json.dumps(event))

    async def next(self, timeout: float = 10.0) -> Event:  # noqa: ASYNC109
        msg = await self.ws.receive(timeout=scaled(timeout))
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        event: Event = json.loads(msg.data)
        self.events.append(event)
        return event

    async def until(self, type_: str, timeout: float = 10.0) -> Event:  # noqa: ASYNC109
        async with asyncio.timeout(scaled(timeout)):
            while True:
                event = await self.next(timeout)
                if event["type"] == type_:
                    return event

    async def append_audio(self, data: bytes, chunk: int) -> None:
        for i in range(0, len(data), chunk):
            await self.send(
                {
                    "type": "input_audio_buffer.append",
                    "audio": base64.b64encode(data[i : i + chunk]).decode(),
                }
            )

    async def closed_code(self) -> int | None:
        async with asyncio.timeout(scaled(10)):
            while True:
                msg = await self.ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                ):
                    return self.ws.close_code
                self.events.append(json.loads(msg.data))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def connect(
    http: aiohttp.ClientSession,
    sim: SimulatorServer,
    query: str = "model=gpt-realtime-2.1",
    headers: dict[str, str] | None = None,
) -> Peer:
    ws = await http.ws_connect(
        f"{sim.ws_url}?{query}", headers=AUTH if headers is None else headers
    )
    return Peer(ws)


def speech(ms_hint: str = "What is my balance today") -> bytes:
    """Speech-like 24 kHz PCM16 (tone bursts), then one second of silence."""
    return synthesize(ms_hint, voice="cedar", engine="tone") + bytes(48000)


def rms(pcm16: bytes) -> float:
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


# --- handshake ----------------------------------------------------------------------------


async def test_missing_credentials_get_401_with_json_error(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{simulator.ws_url}?model=gpt-realtime-2.1") as resp:
        assert resp.status == 401
        body = await resp.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert "API key" in body["error"]["message"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{simulator.ws_url}?model=m", headers={"Authorization": "Bearer "})
    assert info.value.status == 401
    assert simulator.sessions == []


async def test_api_key_header_is_accepted(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    peer = await connect(http, simulator, headers={"api-key": "azure-style"})
    created = await peer.next()
    assert created["type"] == "session.created"
    session = await simulator.wait_for_session(0)
    assert "api-key" not in {k.lower() for k in session.headers}  # secrets are not kept
    await peer.ws.close()


@pytest.mark.parametrize(
    ("query", "status"), [("", 400), ("model=a&call_id=b", 400), ("model=a&scenario=nope", 400)]
)
async def test_bad_query_is_refused(
    simulator: SimulatorServer, http: aiohttp.ClientSession, query: str, status: int
) -> None:
    async with http.get(f"{simulator.ws_url}?{query}", headers=AUTH) as resp:
        assert resp.status == status
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_call_id_session_is_a_sip_sideband_session(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    peer = await connect(http, simulator, query="call_id=rtc_123")
    created = await peer.next()
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert created["session"]["model"] == SimOptions().default_model
    await peer.ws.close()


async def test_beta_header_gets_beta_error_then_close_4000(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    peer = await connect(http, simulator, headers={**AUTH, "OpenAI-Beta": "realtime=v1"})
    error = await peer.next()
    assert error["type"] == "error"
    assert error["error"]["code"] == "beta_api_shape_disabled"
    assert await peer.closed_code() == 4000
    session = await simulator.wait_for_session(0)
    assert await session.wait_closed() == 4000
    assert session.sent_types() == ["error"]


async def test_fail_next_connects_then_recover(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    simulator.fail_next_connects(2, status=503)
    for _ in range(2):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await connect(http, simulator)
        assert info.value.status == 503
    peer = await connect(http, simulator)
    assert (await peer.next())["type"] == "session.created"
    assert simulator.connect_attempts == 3 and len(simulator.sessions) == 1
    await peer.ws.close()


async def test_close_all_drops_live_sessions_with_the_code(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    peers = [await connect(http, simulator) for _ in range(2)]
    for peer in peers:
        await peer.next()
    await simulator.close_all(code=1011, reason="boom")
    for peer in peers:
        assert await peer.closed_code() == 1011
    assert [await s.wait_closed() for s in simulator.sessions] == [1011, 1011]
    # New connections still work (a reconnect).
    peer = await connect(http, simulator)
    assert (await peer.next())["type"] == "session.created"
    await peer.ws.close()


async def test_records_every_event_in_order(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    peer = await connect(http, simulator)
    await peer.next()
    await peer.send(
        {
            "type": "session.update",
            "event_id": "c1",
            "session": {"type": "realtime", "instructions": "x"},
        }
    )
    await peer.send({"type": "response.cancel", "event_id": "c2"})
    await peer.until("error")
    session = simulator.sessions[0]
    assert [e.get("event_id") for e in session.received] == ["c1", "c2"]
    await session.wait_for_event("error")
    assert [e["event_id"] for e in session.sent] == [e["event_id"] for e in peer.events]
    await peer.ws.close()
    assert await session.wait_closed() is not None


async def test_malformed_json_is_an_error_and_the_session_survives(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    peer = await connect(http, simulator)
    await peer.next()
    await peer.ws.send_str("{nope")
    error = await peer.next()
    assert error["error"]["type"] == "invalid_request_error"
    await peer.send({"type": "input_audio_buffer.clear"})
    assert (await peer.next())["type"] == "input_audio_buffer.cleared"
    await peer.ws.close()


# --- audio --------------------------------------------------------------------------------


@pytest.mark.parametrize("simulator", [FAST], indirect=True)
@pytest.mark.parametrize(
    ("fmt", "delta_bytes"),
    [
        ({"type": "audio/pcm", "rate": 24000}, 4800),
        ({"type": "audio/pcmu"}, 800),
        ({"type": "audio/pcma"}, 800),
    ],
)
async def test_audio_in_and_out_in_each_format(
    simulator: SimulatorServer, http: aiohttp.ClientSession, fmt: dict[str, Any], delta_bytes: int
) -> None:
    peer = await connect(http, simulator)
    await peer.next()
    await peer.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": fmt}, "output": {"format": fmt}},
            },
        }
    )
    await peer.until("session.updated")
    wire = encode_output(fmt, speech())
    await peer.append_audio(wire, chunk=delta_bytes // 5)  # 20 ms appends
    started = await peer.until("input_audio_buffer.speech_started")
    assert 0 <= started["audio_start_ms"] < 300
    stopped = await peer.until("input_audio_buffer.speech_stopped")
    assert stopped["item_id"] == started["item_id"]
    done = await peer.until("response.done")
    assert done["response"]["status"] == "completed"
    assert done["response"]["audio"]["output"]["format"] == fmt
    deltas = [
        base64.b64decode(e["delta"])
        for e in peer.events
        if e["type"] == "response.output_audio.delta"
    ]
    assert deltas and all(len(d) == delta_bytes for d in deltas[:-1])
    audio = b"".join(deltas)
    if fmt["type"] == "audio/pcmu":
        audio = ulaw_decode(audio)
    elif fmt["type"] == "audio/pcma":
        audio = alaw_decode(audio)
    assert rms(audio) > 1000  # the reply is audible, not silence
    await peer.ws.close()


@pytest.mark.parametrize("simulator", [SimOptions(speed=1.0, tts_engine="tone")], indirect=True)
async def test_barge_in_cancels_with_turn_detected(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    peer = await connect(http, simulator)
    await peer.next()
    await peer.send({"type": "response.create"})
    delta = await peer.until("response.output_audio.delta")
    # Audio plays in real time (speed 1), so the reply is still going when the caller talks.
    await peer.append_audio(speech("Stop"), chunk=960)
    started = await peer.until("input_audio_buffer.speech_started")
    done = await peer.until("response.done")
    assert done["response"]["id"] == delta["response_id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert done["response"]["output"][0]["status"] == "incomplete"
    kinds = [e["type"] for e in peer.events]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
    assert started["item_id"].startswith("item_")
    # The caller's turn then gets its own response.
    second = await peer.until("response.created")
    assert second["response"]["id"] != delta["response_id"]
    await peer.ws.close()


@pytest.mark.parametrize("simulator", [SimOptions(speed=4.0, tts_engine="tone")], indirect=True)
async def test_audio_is_paced_speed_times_faster_than_real_time(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    peer = await connect(http, simulator)
    await peer.next()
    await peer.send({"type": "response.create"})
    await peer.until("response.output_audio.delta")
    began = time.monotonic()
    await peer.until("response.output_audio.done")
    elapsed = time.monotonic() - began
    deltas = [e for e in peer.events if e["type"] == "response.output_audio.delta"]
    audio_s = sum(len(base64.b64decode(e["delta"])) for e in deltas) / 48000
    assert audio_s > 1.0
    # Each chunk is followed by chunk / speed of waiting: audio_s / 4 in all.
    assert audio_s / 4 * 0.9 <= elapsed < scaled(audio_s / 2)
    await peer.ws.close()


# --- scenarios ----------------------------------------------------------------------------

HANGUP = parse_scenarios("""
scenarios:
  default:
    turns:
      - [{say: One.}, {wait: 300}, {say: Two.}, hangup]
""")


@pytest.mark.parametrize("simulator", [(HANGUP, FAST)], indirect=True)
async def test_wait_then_hangup_closes_with_1000(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    peer = await connect(http, simulator)
    await peer.next()
    await peer.send({"type": "response.create"})
    first = await peer.until("response.output_item.done")
    began = time.monotonic()
    second = await peer.until("response.output_item.added")
    assert time.monotonic() - began >= 0.25
    assert second["output_index"] == 1 and first["output_index"] == 0
    done = await peer.until("response.done")
    assert len(done["response"]["output"]) == 2
    assert await peer.closed_code() == 1000


async def test_serve_runs_until_cancelled() -> None:
    urls: list[str] = []
    ready = asyncio.Event()

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    task = asyncio.create_task(serve("127.0.0.1", 0, None, FAST, on_ready), name="test:sim-serve")
    async with asyncio.timeout(scaled(10)):
        await ready.wait()
    assert urls[0].startswith("ws://127.0.0.1:") and urls[0].endswith("/v1/realtime")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{urls[0]}?model=m", headers=AUTH)
        assert json.loads((await ws.receive()).data)["type"] == "session.created"
        task.cancel()
        msg = await ws.receive(timeout=scaled(10))
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1001
    with pytest.raises(asyncio.CancelledError):
        await task
