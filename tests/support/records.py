"""Call records as the control process gets them, made by the real classes.

A worker's call goes through a real :class:`~gateway.control.directory.CallDirectory` fed the
IPC messages a worker sends (``hello``, ``call_offered``, ``call_started``, ``call_ended``
with a real ``CallRecord.as_dict()``), so the ended-call dict is exactly what the directory
hands the writer. A webhook call's record is a real ``SidebandRecord.as_dict()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.calls.record import CallRecord
from gateway.calls.sideband import SidebandRecord
from gateway.control.directory import CallDirectory
from gateway.ipc.messages import PROTOCOL_VERSION, CallEnded, CallOffered, CallStarted, Hello

T0 = 1_800_000_000.0


@dataclass
class Clock:
    """A settable Unix clock for the directory."""

    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class WorkerSide:
    """One worker as the control directory sees it."""

    worker_id: str = "w1"
    clock: Clock = field(default_factory=Clock)
    directory: CallDirectory = field(init=False)

    def __post_init__(self) -> None:
        self.directory = CallDirectory(clock=self.clock)
        self.directory.worker_up(Hello(self.worker_id, 4242, PROTOCOL_VERSION, "test", 8,
                                       "127.0.0.1", 5070))

    def offer(self, leg: int, *, at: float, from_user: str = "1001",
              to_user: str = "100") -> CallOffered:
        """A ``call_offered`` for leg ``leg``, fed to the directory."""
        msg = CallOffered(f"{self.worker_id}:{leg}", f"sip-{leg}-{at}@pbx", from_user, to_user,
                          to_user, "192.0.2.10", at)
        self.clock.now = at
        assert self.directory.on_message(self.worker_id, msg) == []
        return msg

    def start(self, leg: int, *, at: float, route: str = "main", agent: str = "helper") -> None:
        """A ``call_started``."""
        self.clock.now = at
        self.directory.on_message(self.worker_id,
                                  CallStarted(f"{self.worker_id}:{leg}", route, agent, "PCMU"))

    def end(self, leg: int, *, at: float, record: CallRecord,
            reason: str = "caller hung up") -> dict[str, Any]:
        """A ``call_ended``: the directory's ended-call dict."""
        self.clock.now = at
        ended = self.directory.on_message(
            self.worker_id, CallEnded(f"{self.worker_id}:{leg}", reason, record.as_dict()))
        assert len(ended) == 1
        return ended[0]

    def die(self, reason: str, *, at: float) -> list[dict[str, Any]]:
        """The worker's process went away: its live calls' ended-call dicts."""
        self.clock.now = at
        return self.directory.worker_down(self.worker_id, reason)


def worker_record(leg: int, *, kind: str = "bridged", route: str = "main",
                  agent: str = "helper", **fields: Any) -> CallRecord:
    """A worker's ``CallRecord`` of an answered call, with some activity."""
    record = CallRecord(leg, f"sip-{leg}@pbx", route, agent, kind=kind, answered=True,
                        codec="PCMU", end_reason="caller hung up", sip_status=200,
                        rt_session_id=f"sess_{leg}", responses=3, dtmf_digits=2,
                        media={"rx_frames": 500, "tx_frames_played": 480})
    if kind == "bridged":
        record.model = "gpt-realtime"
        record.usage = {"input_audio": 900, "output_audio": 1200}
        record.cost_usd = 0.1056
        record.transcript = [{"role": "user", "text": "what is the weather in Lyon"},
                             {"role": "assistant", "text": "sunny, 24 degrees"}]
        record.tool_calls = [{"name": "weather", "ok": True, "duration_s": 0.12}]
        record.guardrail_events = [{"at": T0, "item_id": "item_1", "guardrail": "cards",
                                    "action": "cut", "reason": "card number",
                                    "excerpt_chars": 20, "final": True,
                                    "text": "my card is 4111"}]
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def bridged_call(side: WorkerSide, leg: int, *, at: float, **fields: Any) -> dict[str, Any]:
    """A bridged call offered at ``at``, answered, ended 30 s later."""
    side.offer(leg, at=at)
    side.start(leg, at=at + 0.5)
    return side.end(leg, at=at + 30, record=worker_record(leg, **fields))


def sideband_record(call_id: str, *, at: float, sip_leg: str | None = None,
                    accepted: bool = True, end_reason: str = "call ended",
                    rejected: int | None = None) -> dict[str, Any]:
    """A webhook call's ``SidebandRecord.as_dict()`` (relayed when ``sip_leg`` is given)."""
    record = SidebandRecord(call_id, "main", "helper", kind="relayed" if sip_leg else "direct",
                            sip_leg=sip_leg, accepted=accepted, end_reason=end_reason,
                            rejected=rejected, responses=4, started_at=at, ended_at=at + 28)
    if accepted:
        record.model = "gpt-realtime-mini"
        record.usage = {"input_audio": 700, "output_audio": 500}
        record.cost_usd = 0.017
        record.transcript = [{"role": "user", "text": "book a table for two"}]
        record.tool_calls = [{"name": "book", "ok": True, "duration_s": 0.3}]
        record.handoffs = [{"at": at + 5, "from_agent": "helper", "to_agent": "billing",
                            "tool_call_id": "call_1"}]
    return record.as_dict()
