"""The official ``openai`` SDK cannot tell the simulator from the GA Realtime API.

Two checks: (1) every server event of a rich session validates against the SDK's
``RealtimeServerEvent`` union and carries no field the SDK models do not know; (2) the SDK's
own client holds a whole conversation with the simulator: speech in, VAD, audio out, a
function-call round trip and a truncate.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import (
    RealtimeFunctionToolParam,
    RealtimeServerEvent,
    RealtimeSessionCreateRequest,
    RealtimeSessionCreateResponse,
)
from pydantic import BaseModel, TypeAdapter

from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimOptions, SimulatorServer
from gateway.sim.tts import synthesize
from tests.conftest import scaled

pytestmark = pytest.mark.component

SERVER_EVENT: TypeAdapter[RealtimeServerEvent] = TypeAdapter(RealtimeServerEvent)
#: Fields the API reports in session.created/updated that RealtimeSessionCreateRequest (the
#: event's declared type) lacks but the SDK's RealtimeSessionCreateResponse knows.
SESSION_EXTRAS = set(RealtimeSessionCreateResponse.model_fields) - set(
    RealtimeSessionCreateRequest.model_fields
)

BOOK = parse_scenarios("""
scenarios:
  bank:
    match: {instructions: "(?i)bank agent"}
    turns:
      - user_says: What is my balance?
        steps:
          - say: Let me check that for you.
          - call: {name: lookup_balance, arguments: {account: "42"}}
      - say: "Your balance is {tool_output.balance} dollars."
      - say: >-
          This is a long answer that goes on and on so that the caller has every chance
          to cancel it long before it is finished, which is exactly what happens here.
      - handoff: billing
""")
TOOLS: list[RealtimeFunctionToolParam] = [
    {
        "type": "function",
        "name": "lookup_balance",
        "description": "Balance of an account",
        "parameters": {"type": "object", "properties": {"account": {"type": "string"}}},
    },
    {"type": "function", "name": "transfer_to_billing", "parameters": {"type": "object"}},
]
OPTIONS = SimOptions(speed=10.0, tts_engine="auto", response_latency_ms=10)
AUTH = {"Authorization": "Bearer test-key"}


def unknown_fields(value: Any, path: str) -> list[str]:
    """Dotted paths of every field some SDK model in ``value`` did not declare."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{key}" for key in (value.model_extra or {})]
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += unknown_fields(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += unknown_fields(item, f"{path}.{key}")
    return found


def check_against_sdk(raw: str) -> str:
    """Validate one server message; return its type. Fails on unknown fields."""
    event = SERVER_EVENT.validate_json(raw, strict=True)
    assert isinstance(event, BaseModel)
    data = json.loads(raw)
    assert getattr(event, "type", None) == data["type"]
    extras = unknown_fields(event, data["type"])
    if data["type"] in ("session.created", "session.updated"):
        allowed = {f"{data['type']}.session.{name}" for name in SESSION_EXTRAS}
        assert set(extras) <= allowed, extras
        full = RealtimeSessionCreateResponse.model_validate(data["session"], strict=True)
        assert unknown_fields(full, "session") == []
    else:
        assert extras == [], f"{data['type']}: fields unknown to the SDK: {extras}"
    return str(data["type"])


def speech_pcm(text: str) -> bytes:
    """Spoken ``text`` (espeak-ng when installed) at 24 kHz, then 1.5 s of silence."""
    return synthesize(text, voice="echo", sample_rate=24000) + bytes(72000)


def rms(pcm16: bytes) -> float:
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


# --- (1) every event validates against the SDK's types ------------------------------------


class RawPeer:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.raw: list[str] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(event))

    async def until(self, type_: str, **match: Any) -> dict[str, Any]:
        async with asyncio.timeout(scaled(20)):
            while True:
                msg = await self.ws.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
                self.raw.append(msg.data)
                event: dict[str, Any] = json.loads(msg.data)
                if event["type"] == type_ and all(event.get(k) == v for k, v in match.items()):
                    return event


@pytest.fixture
async def raw_peer(simulator: SimulatorServer) -> AsyncIterator[RawPeer]:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{simulator.ws_url}?model=gpt-realtime-2.1", headers=AUTH)
        yield RawPeer(ws)
        await ws.close()


@pytest.mark.parametrize("simulator", [(BOOK, OPTIONS)], indirect=True)
async def test_every_server_event_validates_against_the_sdk_types(
    simulator: SimulatorServer, raw_peer: RawPeer
) -> None:
    peer = raw_peer
    await peer.until("session.created")
    await peer.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "You are a bank agent.",
                "tools": TOOLS,
                "audio": {
                    "input": {
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                        "noise_reduction": {"type": "far_field"},
                    }
                },
            },
        }
    )
    await peer.until("session.updated")
    # Greeting pattern.
    await peer.send(
        {
            "type": "response.create",
            "response": {"instructions": "Say exactly 'Thanks for calling' now."},
        }
    )
    await peer.until("response.done")
    # A VAD turn that ends in a function call.
    audio = speech_pcm("What is my balance?")
    for i in range(0, len(audio), 4800):
        await peer.send(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(audio[i : i + 4800]).decode(),
            }
        )
    await peer.until("conversation.item.input_audio_transcription.completed")
    done = await peer.until("response.done")
    call = done["response"]["output"][-1]
    assert call["type"] == "function_call"
    # Function call round trip.
    await peer.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": json.dumps({"balance": 1234}),
            },
        }
    )
    await peer.send({"type": "response.create"})
    done = await peer.until("response.done")
    message_id = done["response"]["output"][0]["id"]
    # Truncate, within and beyond the audio.
    await peer.send(
        {
            "type": "conversation.item.truncate",
            "item_id": message_id,
            "content_index": 0,
            "audio_end_ms": 200,
        }
    )
    await peer.until("conversation.item.truncated")
    await peer.send(
        {
            "type": "conversation.item.truncate",
            "item_id": message_id,
            "content_index": 0,
            "audio_end_ms": 10_000_000,
        }
    )
    await peer.until("error")
    # Cancel a long answer mid-way.
    await peer.send({"type": "response.create"})
    await peer.until("response.output_audio.delta")
    await peer.send({"type": "response.cancel"})
    cancelled = await peer.until("response.done")
    assert cancelled["response"]["status"] == "cancelled"
    # Errors and the remaining client events.
    await peer.send({"type": "response.cancel"})
    await peer.until("error")
    await peer.send({"type": "input_audio_buffer.clear"})
    await peer.until("input_audio_buffer.cleared")
    await peer.send({"type": "input_audio_buffer.commit", "event_id": "c_commit"})
    await peer.until("error")
    await peer.send({"type": "no.such.event"})
    await peer.until("error")
    await peer.send({"type": "session.update", "session": {"type": "realtime", "tools": "x"}})
    await peer.until("error")
    await peer.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        }
    )
    added = await peer.until("conversation.item.done")
    await peer.send({"type": "conversation.item.retrieve", "item_id": added["item"]["id"]})
    await peer.until("conversation.item.retrieved")
    await peer.send({"type": "conversation.item.delete", "item_id": added["item"]["id"]})
    await peer.until("conversation.item.deleted")
    await peer.send({"type": "output_audio_buffer.clear"})
    await peer.until("output_audio_buffer.cleared")
    # Text output and a handoff call.
    await peer.send(
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
    )
    await peer.until("session.updated")
    await peer.send({"type": "response.create"})
    await peer.until("response.done")
    await peer.send(
        {"type": "response.create", "response": {"instructions": "Say 'In text' please."}}
    )
    await peer.until("response.done")

    seen = [check_against_sdk(raw) for raw in peer.raw]
    expected = {
        "session.created",
        "session.updated",
        "error",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.truncated",
        "conversation.item.retrieved",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "output_audio_buffer.cleared",
    }
    assert expected <= set(seen), expected - set(seen)
    session = simulator.sessions[0]
    assert len(seen) <= len(session.sent)  # the simulator's record covers what we read


# --- (2) the SDK's client holds a conversation --------------------------------------------


async def until(conn: AsyncRealtimeConnection, type_: str, seen: list[Any] | None = None) -> Any:
    async with asyncio.timeout(scaled(20)):
        while True:
            event = await conn.recv()
            if seen is not None:
                seen.append(event)
            if event.type == type_:
                return event


@pytest.mark.parametrize("simulator", [(BOOK, OPTIONS)], indirect=True)
async def test_sdk_client_holds_a_full_conversation(simulator: SimulatorServer) -> None:
    client = AsyncOpenAI(base_url=simulator.http_url, api_key="test")
    try:
        async with client.realtime.connect(model="gpt-realtime-2.1") as conn:
            created = await until(conn, "session.created")
            assert created.session.model == "gpt-realtime-2.1"
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "You are a bank agent.",
                    "tools": [*TOOLS],
                    "audio": {
                        "input": {
                            "transcription": {"model": "gpt-4o-mini-transcribe"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                        },
                        "output": {"voice": "cedar"},
                    },
                }
            )
            updated = await until(conn, "session.updated")
            assert updated.session.audio.output.voice == "cedar"

            # Speech in, 100 ms chunks, through the SDK's typed sender.
            audio = speech_pcm("What is my balance?")
            for i in range(0, len(audio), 4800):
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(audio[i : i + 4800]).decode()
                )
            events: list[Any] = []
            await until(conn, "input_audio_buffer.speech_started", events)
            stopped = await until(conn, "input_audio_buffer.speech_stopped", events)
            transcript = await until(
                conn, "conversation.item.input_audio_transcription.completed", events
            )
            assert transcript.item_id == stopped.item_id
            assert transcript.transcript == "What is my balance?"
            done = await until(conn, "response.done", events)
            assert done.response.status == "completed"
            pcm = b"".join(
                base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
            )
            assert len(pcm) > 48000 // 2 and rms(pcm) > 500  # at least 0.5 s of audible speech
            message, call = done.response.output
            assert message.type == "message" and message.content[0].transcript == (
                "Let me check that for you."
            )
            assert call.type == "function_call" and call.name == "lookup_balance"
            assert json.loads(call.arguments) == {"account": "42"}

            # Function call round trip; the next turn uses {tool_output.balance}.
            await conn.conversation.item.create(
                item={
                    "type": "function_call_output",
                    "call_id": call.call_id,
                    "output": json.dumps({"balance": 1234}),
                }
            )
            await until(conn, "conversation.item.done")
            await conn.response.create()
            said = await until(conn, "response.output_audio_transcript.done")
            assert said.transcript == "Your balance is 1234 dollars."
            done = await until(conn, "response.done")
            item_id = done.response.output[0].id

            # The caller heard 300 ms of it.
            await conn.conversation.item.truncate(
                item_id=item_id, content_index=0, audio_end_ms=300
            )
            truncated = await until(conn, "conversation.item.truncated")
            assert (truncated.item_id, truncated.audio_end_ms) == (item_id, 300)
    finally:
        await client.close()
    session = simulator.sessions[0]
    assert await session.wait_closed() is not None
    kinds = [e["type"] for e in session.received]
    assert kinds[:2] == ["session.update", "input_audio_buffer.append"]
    assert kinds[-1] == "conversation.item.truncate"
