"""Call rows: what the store writes for a call, built from what the control process knows.

A call reaches the store in parts, each a :class:`CallRow`:

* **offered** (:func:`offered`): a call starts (a worker's ``call_offered``, a webhook call);
  state ``live``.
* **sip** (:func:`ended_call`): a SIP worker's call ended: the control directory's ended-call
  dict, its ``record`` being the worker's ``CallRecord.as_dict()`` (or the one the directory
  made for a call whose worker died).
* **sideband** (:func:`sideband_ended`): a webhook call's ``SidebandRecord.as_dict()``.

A store keeps one row per call and folds each part into it: :func:`match` picks the stored
row a part belongs to (call ids repeat over time: a restarted worker counts from 1 again, so
the offer time tells calls apart), :func:`merge` combines them. A relayed call has two
records, the worker's and the sideband's (``sip_leg``: the worker's call id); both go to the
worker's row, in either order, the sideband giving the agent's side (``openai_call_id``, tool
calls, handoffs, guardrail events, responses). The row's ``document`` is the whole record:
its columns, the agent's activity at the top level, then ``sip`` (the worker's side) and
``sideband`` (the webhook's side). Secrets are never stored (keys such as ``token`` or
``password`` are dropped wherever they appear); with ``transcripts`` off neither transcript
turns nor the text a guardrail checked are. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from gateway.records.schema import COLUMNS

__all__ = [
    "ACTIVITY_KEYS", "DIRECTIONS", "KINDS", "STATES", "UNKNOWN_REASON", "CallRow", "Direction",
    "Kind", "State", "ended_call", "fold", "mark_unknown", "match", "merge", "offered",
    "row_from_document", "sideband_ended",
]

Kind: TypeAlias = Literal["bridged", "relayed", "direct"]
Direction: TypeAlias = Literal["inbound", "outbound"]
State: TypeAlias = Literal["live", "ended", "unknown"]
KINDS: Final[tuple[Kind, ...]] = ("bridged", "relayed", "direct")
DIRECTIONS: Final[tuple[Direction, ...]] = ("inbound", "outbound")
STATES: Final[tuple[State, ...]] = ("live", "ended", "unknown")

#: What the agent did, kept at the top of the document (from the side that ran the agent).
ACTIVITY_KEYS: Final = ("tool_calls", "handoffs", "guardrail_events", "responses",
                        "dtmf_digits", "model", "usage", "cost_usd", "transcript",
                        "turn_latency_ms", "first_audio_at", "realtime_errors")
#: The end reason of a call still live when the control process stopped.
UNKNOWN_REASON: Final = "unknown: the control process stopped before the call ended"
#: Keys never stored, at any depth: credentials (a relay token is one).
_SECRET_KEYS: Final = frozenset({"api_key", "authorization", "password", "secret", "token",
                                 "relay_token", "webhook_secret"})
_TRANSCRIPT_KEYS: Final = frozenset({"transcript", "transcripts"})
#: From the directory's ended-call dict into ``sip``, beside the worker's record.
_CALL_EXTRAS: Final = ("request_uri_user", "source_ip", "started_at", "setup_s", "duration_s",
                       "events")
_MAX_TEXT: Final = 512
#: Two parts with offer times this close are the same offer.
_SAME_OFFER_S: Final = 0.001
#: A relayed call's sideband starts after the worker's offer, at most this much later
#: (OpenAI's answer is bounded by ``openai_calls.relay_answer_timeout_s``, at most 120 s).
_RELAY_WINDOW_S: Final = 600.0
_STATE_RANK: Final[dict[State, int]] = {"live": 0, "unknown": 1, "ended": 2}
#: Sideband end reasons (lower case) of calls the gateway failed.
_SIDEBAND_FAILED: Final = ("sideband lost", "sideband failed", "accept failed", "refer failed",
                           "reject failed", "internal error")


@dataclass(frozen=True)
class CallRow:
    """One call's row: the indexed columns and the whole record as ``document``.

    ``document`` repeats the columns, so it alone is the record a reader sees; ``id`` is the
    store's row id (``None`` until stored). Build rows with the functions of this module.
    """

    call_id: str
    kind: Kind
    direction: Direction
    state: State
    offered_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    route: str | None = None
    agent: str | None = None
    from_user: str | None = None
    to_user: str | None = None
    sip_call_id: str | None = None
    openai_call_id: str | None = None
    end_reason: str | None = None
    outcome: str | None = None
    sip_status: int | None = None
    worker_id: str | None = None
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)
    id: int | None = field(default=None, compare=False)

    def columns(self) -> dict[str, Any]:
        """The column values by name, in :data:`~gateway.records.schema.COLUMNS` order."""
        return {name: getattr(self, name) for name in COLUMNS}

    @property
    def parts(self) -> frozenset[str]:
        """Which records it holds: ``sip``, ``sideband`` (neither: only its offer)."""
        return frozenset(k for k in ("sip", "sideband") if k in self.document)


def offered(call_id: str, kind: Kind, direction: Direction, offered_at: float,
            from_user: str | None, to_user: str | None, sip_call_id: str | None = None,
            worker_id: str | None = None, openai_call_id: str | None = None,
            route: str | None = None) -> CallRow:
    """A call that has started: a ``live`` row.

    Raises:
        ValueError: ``kind`` or ``direction`` is not one of the known values, or the time is
            not a finite number.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    at = _time(offered_at)
    if at is None:
        raise ValueError(f"offered_at must be a finite Unix time, not {offered_at!r}")
    return _row({}, call_id=_text(call_id) or "-", kind=kind, direction=direction,
                state="live", offered_at=at, from_user=_text(from_user),
                to_user=_text(to_user), sip_call_id=_text(sip_call_id),
                worker_id=_text(worker_id), openai_call_id=_text(openai_call_id),
                route=_text(route))


def ended_call(call: Mapping[str, Any], *, transcripts: bool = True) -> CallRow:
    """A SIP worker's ended call, from the control directory's ended-call dict.

    Args:
        call: What :class:`~gateway.control.directory.CallDirectory` returns for an ended call
            (its view of the call: ids, users, offered/started/ended times, ``end_reason``,
            ``outcome``) with ``record``: the worker's ``CallRecord.as_dict()``.
        transcripts: Whether transcript turns are kept.

    Raises:
        ValueError: No ``call_id``, or neither an offer nor an end time.
    """
    drop = _drop(transcripts)
    record = _clean(dict(call.get("record") or {}), drop)
    assert isinstance(record, dict)
    call_id = _text(call.get("call_id"))
    offered_at = _time(call.get("offered_at"))
    ended_at = _time(call.get("ended_at"))
    if call_id is None or (offered_at is None and ended_at is None):
        raise ValueError("an ended call needs its call_id and offered_at")
    kind = record.get("kind") or call.get("kind")
    sip = {k: v for k, v in record.items() if k not in ACTIVITY_KEYS}
    sip.update({k: _clean(call[k], drop) for k in _CALL_EXTRAS if k in call})
    if "codec" not in sip and call.get("codec") is not None:
        sip["codec"] = call.get("codec")
    activity = _activity(record, transcripts)
    return _row(
        {**activity, "sip": sip}, call_id=call_id,
        kind="relayed" if kind == "relayed" else "bridged",
        direction="outbound" if "outbound" in (call.get("direction"), record.get("direction"))
        else "inbound",
        state="ended", offered_at=offered_at if offered_at is not None else ended_at or 0.0,
        answered_at=_time(call.get("started_at")), ended_at=ended_at,
        route=_text(call.get("route") or record.get("route")),
        agent=_text(call.get("agent") or record.get("agent")),
        from_user=_text(call.get("from_user")), to_user=_text(call.get("to_user")),
        # The worker's record has the Call-ID of a call it placed; its offer said "-".
        sip_call_id=_text(call.get("sip_call_id") if call.get("sip_call_id") not in (None, "-")
                          else record.get("sip_call_id")),
        end_reason=_text(call.get("end_reason") or record.get("end_reason")),
        outcome=_text(call.get("outcome")), sip_status=_int(record.get("sip_status")),
        worker_id=_text(call.get("worker_id")))


def sideband_ended(record: Mapping[str, Any], *, transcripts: bool = True) -> CallRow:
    """A webhook call's record (``SidebandRecord.as_dict()``), direct or relayed.

    A relayed call's row is the worker's (``call_id`` = ``sip_leg``); OpenAI's ``call_id``
    goes to ``openai_call_id``. The outcome is classified like a worker's (``refused`` for a
    rejected call, ``failed`` for a lost sideband or a failed accept, refer or reject).

    Raises:
        ValueError: No ``call_id``.
    """
    drop = _drop(transcripts)
    clean = _clean(dict(record), drop)
    assert isinstance(clean, dict)
    openai_id = _text(clean.get("call_id"))
    if openai_id is None:
        raise ValueError("a sideband record needs its call_id")
    sip_leg = _text(clean.get("sip_leg")) if clean.get("kind") == "relayed" else None
    started = _time(clean.get("started_at"))
    ended = _time(clean.get("ended_at"))
    accepted = bool(clean.get("accepted"))
    rejected = _int(clean.get("rejected"))
    reason = _text(clean.get("end_reason"))
    sideband = {k: v for k, v in clean.items() if k not in ACTIVITY_KEYS}
    return _row(
        {**_activity(clean, transcripts), "sideband": sideband},
        call_id=sip_leg or openai_id, kind="relayed" if sip_leg else "direct",
        direction="inbound", state="ended",
        offered_at=started if started is not None else ended or 0.0,
        answered_at=started if accepted else None, ended_at=ended,
        route=_text(clean.get("route")), agent=_text(clean.get("agent")),
        openai_call_id=openai_id, end_reason=reason,
        outcome=_sideband_outcome(reason, accepted=accepted, rejected=rejected),
        sip_status=rejected)


def match(candidates: Sequence[CallRow], new: CallRow) -> CallRow | None:
    """The stored row ``new`` belongs to, among rows with its call id (newest first)."""
    for old in candidates:
        if _same_call(old, new):
            return old
    return None


def fold(candidates: Sequence[CallRow], new: CallRow) -> CallRow:
    """The row to store for ``new``: merged into the stored row it belongs to, or itself.

    A merged row keeps the stored row's ``id``; ``new`` itself has ``id`` ``None`` (insert).
    """
    old = match(candidates, new)
    return new if old is None else merge(old, new)


def merge(old: CallRow, new: CallRow) -> CallRow:
    """Fold ``new`` into the stored ``old`` (same call): the result keeps ``old``'s id.

    Columns come from the fuller part first: the worker's record, then the sideband's, then
    the offer, each filling what the other left empty; the offer time is the earliest, the
    state the furthest along (``live`` < ``unknown`` < ``ended``), ``openai_call_id`` the
    sideband's. The agent's activity is the sideband's when there is one (it ran the agent).
    """
    first, second = (new, old) if _rank(new) >= _rank(old) else (old, new)
    columns = {c: getattr(first, c) if getattr(first, c) is not None else getattr(second, c)
               for c in COLUMNS}
    columns["offered_at"] = min(old.offered_at, new.offered_at)
    columns["state"] = max(old.state, new.state, key=_STATE_RANK.__getitem__)
    agent_side = next((r for r in (new, old) if "sideband" in r.document), None)
    if agent_side is not None and agent_side.openai_call_id is not None:
        columns["openai_call_id"] = agent_side.openai_call_id
    other = old if agent_side is new else new
    ordered = (other, agent_side) if agent_side is not None else (old, new)
    activity: dict[str, Any] = {}
    for row in ordered:
        activity.update((k, v) for k, v in row.document.items() if k in ACTIVITY_KEYS)
    parts = {k: v for r in (old, new) for k, v in r.document.items() if k in ("sip", "sideband")}
    return dataclasses.replace(_row({**activity, **parts}, **columns), id=old.id)


def mark_unknown(row: CallRow, reason: str = UNKNOWN_REASON) -> CallRow:
    """A row left ``live`` by a control process that stopped: state ``unknown``."""
    columns = row.columns()
    columns.update(state="unknown", end_reason=row.end_reason or reason)
    rest = {k: v for k, v in row.document.items() if k not in COLUMNS}
    return dataclasses.replace(_row(rest, **columns), id=row.id)


def row_from_document(document: Mapping[str, Any], id: int | None = None) -> CallRow:
    """A stored row back from its document.

    Raises:
        ValueError: The document lacks a column every row has.
    """
    columns: dict[str, Any] = {c: document.get(c) for c in COLUMNS}
    if (columns["kind"] not in KINDS or columns["state"] not in STATES
            or columns["direction"] not in DIRECTIONS or _time(columns["offered_at"]) is None
            or not isinstance(columns["call_id"], str)):
        raise ValueError("not a call document: no call_id, kind, state, direction or "
                         "offered_at")
    return CallRow(**columns, document=dict(document), id=id)


# Internals --------------------------------------------------------------------------------


def _row(rest: Mapping[str, Any], **columns: Any) -> CallRow:
    row = CallRow(**columns)
    document = {**{k: v for k, v in rest.items() if k not in COLUMNS}, **row.columns()}
    return dataclasses.replace(row, document=document)


def _rank(row: CallRow) -> int:
    return 3 if "sip" in row.document else 2 if "sideband" in row.document else 1


def _same_call(old: CallRow, new: CallRow) -> bool:
    if "sideband" in new.document:
        stored = old.document.get("sideband")
        if isinstance(stored, Mapping):  # the same record again, or another call
            return bool(stored.get("call_id") == new.openai_call_id)
        if new.kind == "direct":  # OpenAI's call ids are unique
            return True
        # A relayed call: the worker offered it shortly before the sideband started.
        return (new.offered_at - _RELAY_WINDOW_S <= old.offered_at
                <= new.offered_at + _SAME_OFFER_S)
    if abs(old.offered_at - new.offered_at) <= _SAME_OFFER_S:
        return True
    # The worker's record of a relayed call whose sideband record came first (no offer).
    return ("sip" in new.document and old.parts == {"sideband"}
            and new.offered_at - _SAME_OFFER_S <= old.offered_at
            <= new.offered_at + _RELAY_WINDOW_S)


def _activity(record: Mapping[str, Any], transcripts: bool) -> dict[str, Any]:
    activity = {k: record[k] for k in ACTIVITY_KEYS if k in record}
    events = activity.get("guardrail_events")
    if not transcripts and isinstance(events, list):
        # The text a guardrail checked is the agent's transcript.
        activity["guardrail_events"] = [
            {k: v for k, v in e.items() if k != "text"} if isinstance(e, dict) else e
            for e in events]
    return activity


def _sideband_outcome(reason: str | None, *, accepted: bool, rejected: int | None) -> str:
    if (reason or "").lower().startswith(_SIDEBAND_FAILED):
        return "failed"
    if rejected is not None:
        return "refused"
    return "ok" if accepted else "unanswered"


def _drop(transcripts: bool) -> frozenset[str]:
    return _SECRET_KEYS if transcripts else _SECRET_KEYS | _TRANSCRIPT_KEYS


def _clean(value: Any, drop: frozenset[str]) -> Any:
    """JSON-safe data for both dialects: no dropped keys, no NUL, no NaN, no odd types."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v, drop) for k, v in value.items()
                if str(k).lower() not in drop}
    if isinstance(value, list | tuple):
        return [_clean(v, drop) for v in value]
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value).replace("\x00", "")


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value).replace("\x00", "")[:_MAX_TEXT]


def _time(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
