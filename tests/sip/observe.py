"""What a test can see of a call: the simulator's events and the gateway's RTP and logs.

Shared by the end-to-end agent tests: the call record the gateway logs, the model's function
calls with the outputs the gateway sent back, the lines the agent spoke, and where an agent
item's μ-law audio appears (byte for byte) in the RTP the gateway sent to the caller.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from gateway.sim.server import SimConnection
from tests.sip.gateway import Gateway
from tests.support.rtp import Packet, RtpStream, rtp_streams


def call_record(log: str) -> dict[str, Any]:
    """The one ``call record: {json}`` line the gateway logged at the end of the call."""
    records = re.findall(r"call record: (\{.*\})", log)
    assert len(records) == 1, f"expected one call record, found {len(records)}"
    record: dict[str, Any] = json.loads(records[0])
    return record


def function_calls(session: SimConnection) -> list[dict[str, Any]]:
    """The function calls the simulated model made, in order, with the gateway's outputs.

    Each entry: ``name``, ``call_id``, ``arguments`` (parsed), ``output`` (the
    ``function_call_output`` text the gateway sent back, or ``None``) and the indexes of the
    call in ``session.sent`` and of the output in ``session.received``.
    """
    outputs: dict[str, tuple[int, str]] = {}
    for index, event in enumerate(session.received):
        item = event.get("item") or {}
        if event.get("type") == "conversation.item.create" \
                and item.get("type") == "function_call_output":
            outputs.setdefault(str(item["call_id"]), (index, str(item["output"])))
    calls = []
    for index, event in enumerate(session.sent):
        if event["type"] == "response.function_call_arguments.done":
            out_index, output = outputs.get(event["call_id"], (-1, None))
            calls.append({"name": event["name"], "call_id": event["call_id"],
                          "arguments": json.loads(event["arguments"]), "output": output,
                          "sent_index": index, "output_index": out_index})
    return calls


def spoken(session: SimConnection) -> list[tuple[str, str]]:
    """``(item_id, transcript)`` of every line the simulated agent spoke, in order."""
    return [(e["item_id"], e["transcript"]) for e in session.sent
            if e["type"] == "response.output_audio_transcript.done"]


def normalise(ulaw: bytes) -> bytes:
    """μ-law with negative zero (0x7F) written as 0xFF, as PCM16 0 re-encodes."""
    # 0x7F is μ-law negative zero; PCM16 0 re-encodes as 0xFF. Compare them as equal.
    return ulaw.replace(b"\x7f", b"\xff")


def item_audio(session: SimConnection, item_id: str) -> bytes:
    """The μ-law audio the simulator sent for one assistant item (normalised)."""
    return normalise(b"".join(base64.b64decode(e["delta"]) for e in session.sent
                               if e["type"] == "response.output_audio.delta"
                               and e["item_id"] == item_id))


def gateway_stream(packets: list[Packet], gw: Gateway) -> RtpStream:
    """The one RTP stream the gateway sent to the caller.

    The gateway's RTP ports are ``rtp_port_start + 2k``; the caller's port is the OS's choice
    and can fall inside the gateway's range (seen once in CI: the caller on an odd port of
    it), so a stream counts as the gateway's only from a port of the gateway's parity, and
    when two still qualify, the one from the first port the gateway hands out.
    """
    start = gw.rtp_port_start
    streams = [s for s in rtp_streams(packets)
               if start <= s.sport < start + 40 and (s.sport - start) % 2 == 0]
    if len(streams) > 1:
        streams = [s for s in streams if s.sport == start] or streams
    assert len(streams) == 1, f"expected one RTP stream from the gateway, got {len(streams)}"
    return streams[0]


def stream_payload(stream: RtpStream) -> bytes:
    """The stream's μ-law payload in arrival order (normalised)."""
    return normalise(b"".join(p.rtp.payload for p in stream.packets))


def played_prefix(item: bytes, payload: bytes) -> tuple[int, int]:
    """Where ``item`` starts in ``payload`` and how many of its bytes follow it there.

    The item is located by the first 160 bytes after its first non-silent byte, so a
    truncated item is found as well as a complete one.
    """
    first = next(i for i, b in enumerate(item) if b != 0xFF)
    first -= first % 160
    at = payload.find(item[first:first + 160])
    assert at >= 0, "the item's audio never reached the caller"
    start = at - first
    assert start >= 0 and payload[start:at] == item[:first]
    played = first
    while (played < len(item) and start + played < len(payload)
           and payload[start + played] == item[played]):
        played += 1
    return start, played


def played_in_full(item: bytes, stream: RtpStream) -> tuple[float, float]:
    """Check that all of ``item`` went out, in order, in ``stream``.

    Returns:
        The arrival times of the first and the last packet that carried it.
    """
    payload = stream_payload(stream)
    at = payload.find(item)
    assert at >= 0, f"the {len(item)}-byte line was not played in full"
    return stream.packets[at // 160].at, stream.packets[(at + len(item) - 1) // 160].at


def output_of(calls: list[dict[str, Any]], name: str) -> Any:
    """The output (parsed JSON) the model got for the only call of ``name``."""
    matching = [c for c in calls if c["name"] == name]
    assert len(matching) == 1, f"{len(matching)} calls of {name}"
    assert matching[0]["output"] is not None, f"no function_call_output for {name}"
    return json.loads(matching[0]["output"])
