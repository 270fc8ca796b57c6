"""A call's record (:class:`CallRecord`) and the small pure helpers that fill it.

The record is what a SIP worker's call leaves behind: its ids, kind and direction, the SIP
outcome, the agent's activity, media counters and RTP quality, usage and cost, turn latency
and, with a ``recording:`` route, the recording. The worker logs it (``call record:``, without
call content unless ``logging.call_content``) and sends it whole to the control process,
which stores it (:mod:`gateway.records`). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from gateway.calls.redact import log_view
from gateway.media.channel import MediaChannel

__all__ = ["AgentActivity", "CallRecord", "OutboundCall", "media_counters", "outbound_end"]


@dataclass(kw_only=True)
class AgentActivity:
    """What the agent did on a call, the part both kinds of call record keep.

    They are a SIP worker's call (:class:`CallRecord`) and a sideband call
    (``gateway.calls.sideband.SidebandRecord``). Filled by ``ActivityLog.fill_record``.
    Keyword-only, so each record's own fields keep their places in its constructor.
    """

    responses: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, object]] = field(default_factory=list)
    guardrail_events: list[dict[str, object]] = field(default_factory=list)
    dtmf_digits: int = 0
    #: The Realtime model, its tokens by kind and what they cost (``None``: no known price).
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    #: Speech stop -> first agent audio, ms (:mod:`gateway.calls.turns`); first agent audio
    #: (wall clock); Realtime ``error`` events by code.
    turn_latency_ms: list[int] = field(default_factory=list)
    first_audio_at: float | None = None
    realtime_errors: dict[str, int] = field(default_factory=dict)
    #: Caller and agent turns (call content: never in the log line without call_content).
    transcript: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CallRecord(AgentActivity):
    """What happened on a call (kept by the manager; later persisted)."""

    leg_id: int
    sip_call_id: str
    route: str
    agent: str | None
    #: ``bridged`` (our media path to the Realtime API) or ``relayed`` (through OpenAI SIP).
    kind: str = "bridged"
    #: ``inbound`` (an INVITE the gateway received) or ``outbound`` (one it placed).
    direction: str = "inbound"
    answered: bool = False
    codec: str | None = None
    end_reason: str = ""
    sip_status: int | None = None
    rt_session_id: str | None = None
    barge_ins: int = 0
    truncates: int = 0
    #: Realtime continuity: connections dropped, sessions reconnected, rotated, apologies said.
    realtime: dict[str, int] = field(default_factory=lambda: {
        "drops": 0, "reconnects": 0, "rotations": 0, "apologies": 0})
    #: Media counters: caller frames received / dropped (loop behind), agent frames played,
    #: dropped (playout full), silence mid-item (audio late), discarded by barge-in.
    media: dict[str, int] = field(default_factory=dict)
    #: RTP quality of the audio stream: packets, loss, jitter (``gateway.sip.legs``).
    rtp: dict[str, float] = field(default_factory=dict)
    #: A ``recording:`` route's file (path, format, channels, sample_rate, duration_s, bytes)
    #: or ``{"error": ...}``; ``None`` when the route does not record.
    recording: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able data."""
        return dataclasses.asdict(self)

    def as_json(self, *, content: bool = False) -> str:
        """The record as one JSON line (keys sorted), as the ``call record:`` log shows it.

        Without ``content`` the call's content is left out (:mod:`gateway.calls.redact`; the
        record sent to the control process keeps it).
        """
        return json.dumps(log_view(self.as_dict(), content=content), sort_keys=True)


@dataclass(frozen=True)
class OutboundCall:
    """A call the gateway places (``POST /v1/calls``): how long it may ring unanswered."""

    ring_timeout_s: float = 30.0


def outbound_end(status: int, reason: str, answered: bool) -> str:
    """The end reason of a call the gateway placed, from the leg's final SIP status."""
    if answered:
        return "callee hung up"
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no answer"
    return f"failed: {status} {reason}".strip()


def media_counters(media: MediaChannel) -> dict[str, int]:
    """A call record's ``media`` counters of one call's media channel."""
    stats = media.playout_stats()
    return {"rx_frames": media.rx_frames, "rx_dropped": media.rx_dropped,
            "tx_frames_played": stats.frames_played, "tx_frames_dropped": stats.frames_dropped,
            "tx_underrun_frames": stats.silence_frames_underrun,
            "tx_frames_flushed": stats.frames_flushed}
