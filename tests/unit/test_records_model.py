"""Call rows from real records: columns, the relayed merge, matching, what is never stored."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest

from gateway.records import model, schema
from gateway.records.model import CallRow, fold, match, merge
from tests.support.records import T0, WorkerSide, bridged_call, sideband_record, worker_record

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def _stored(row: CallRow, row_id: int) -> CallRow:
    return dataclasses.replace(row, id=row_id)


def _parts(*rows: CallRow) -> CallRow:
    """Fold rows in order as a store would, the stored row being the only candidate."""
    stored: CallRow | None = None
    for row in rows:
        stored = fold([stored] if stored is not None else [], row)
    assert stored is not None
    return stored


# Schema ---------------------------------------------------------------------------------


def test_pending_migrations_from_empty_and_from_the_latest() -> None:
    assert schema.pending(0, schema.SQLITE) == schema.SQLITE
    assert schema.pending(len(schema.SQLITE), schema.SQLITE) == ()
    assert [m.version for m in schema.POSTGRES] == [m.version for m in schema.SQLITE]


def test_a_newer_database_or_a_gap_is_refused() -> None:
    with pytest.raises(schema.SchemaError, match="newer than this gateway"):
        schema.pending(len(schema.SQLITE) + 1, schema.SQLITE)
    gap = (schema.Migration(1, "a", ()), schema.Migration(3, "c", ()))
    with pytest.raises(schema.SchemaError, match="out of order"):
        schema.pending(0, gap)


# Parts ----------------------------------------------------------------------------------


def test_offered_row_is_live_and_its_document_holds_the_columns() -> None:
    row = model.offered("w1:1", "bridged", "inbound", T0, "1001", "100", sip_call_id="x@pbx",
                        worker_id="w1")
    assert row.state == "live"
    assert row.document == row.columns()
    assert row.parts == frozenset()
    with pytest.raises(ValueError, match="kind"):
        model.offered("w1:1", "bogus", "inbound", T0, None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="offered_at"):
        model.offered("w1:1", "bridged", "inbound", float("nan"), None, None)


def test_a_bridged_call_from_the_directory() -> None:
    side = WorkerSide()
    ended = bridged_call(side, 7, at=T0)
    row = model.ended_call(ended)
    assert (row.call_id, row.kind, row.state, row.worker_id) == ("w1:7", "bridged", "ended", "w1")
    assert (row.offered_at, row.answered_at, row.ended_at) == (T0, T0 + 0.5, T0 + 30)
    assert (row.route, row.agent, row.outcome, row.sip_status) == ("main", "helper", "ok", 200)
    assert (row.from_user, row.to_user, row.end_reason) == ("1001", "100", "caller hung up")
    assert row.sip_call_id == f"sip-7-{T0}@pbx"
    doc = row.document
    assert doc["tool_calls"] == [{"name": "weather", "ok": True, "duration_s": 0.12}]
    assert doc["responses"] == 3 and doc["dtmf_digits"] == 2
    assert doc["sip"]["media"] == {"rx_frames": 500, "tx_frames_played": 480}
    assert doc["sip"]["source_ip"] == "192.0.2.10"
    assert doc["sip"]["events"] == {}
    assert "tool_calls" not in doc["sip"]


def test_a_call_whose_worker_died_is_recorded_from_what_the_directory_knew() -> None:
    side = WorkerSide()
    side.offer(1, at=T0)
    side.start(1, at=T0 + 1)
    (ended,) = side.die("killed by SIGKILL", at=T0 + 9)
    row = model.ended_call(ended)
    assert row.state == "ended" and row.outcome == "worker_died"
    assert row.end_reason == "worker w1 died: killed by SIGKILL"
    assert (row.answered_at, row.ended_at, row.sip_status) == (T0 + 1, T0 + 9, None)


@pytest.mark.parametrize(("fields", "outcome", "status"), [
    ({}, "ok", None),
    ({"rejected": 404, "accepted": False, "end_reason": "no route"}, "refused", 404),
    ({"end_reason": "sideband lost: 1006"}, "failed", None),
    ({"accepted": False, "end_reason": "accept failed: 500"}, "failed", None),
    ({"accepted": False, "end_reason": "caller gone before accept"}, "unanswered", None),
])
def test_a_direct_call(fields: dict[str, Any], outcome: str, status: int | None) -> None:
    row = model.sideband_ended(sideband_record("rtc_1", at=T0, **fields))
    assert (row.call_id, row.openai_call_id, row.kind) == ("rtc_1", "rtc_1", "direct")
    assert (row.outcome, row.sip_status, row.worker_id) == (outcome, status, None)
    assert row.parts == {"sideband"}


# The relayed merge ----------------------------------------------------------------------


def _relayed() -> tuple[CallRow, CallRow, CallRow]:
    side = WorkerSide()
    msg = side.offer(3, at=T0)
    offered = model.offered(msg.call_id, "bridged", "inbound", msg.time, msg.from_user,
                            msg.to_user, sip_call_id=msg.sip_call_id, worker_id="w1")
    side.start(3, at=T0 + 2)
    sip = model.ended_call(side.end(3, at=T0 + 40, record=worker_record(3, kind="relayed")))
    sideband = model.sideband_ended(sideband_record("rtc_9", at=T0 + 1.5, sip_leg="w1:3"))
    return offered, sip, sideband


def test_relayed_call_is_one_row_whichever_record_comes_first() -> None:
    offered, sip, sideband = _relayed()
    a = _parts(offered, sip, sideband)
    b = _parts(offered, sideband, sip)
    assert a.columns() == b.columns()
    assert a.document == b.document
    assert (a.call_id, a.kind, a.openai_call_id, a.worker_id) == ("w1:3", "relayed", "rtc_9",
                                                                   "w1")
    # The worker's view of the call wins; the agent's side comes from the sideband.
    assert (a.end_reason, a.ended_at, a.sip_status, a.from_user) == ("caller hung up",
                                                                     T0 + 40, 200, "1001")
    assert a.document["tool_calls"] == [{"name": "book", "ok": True, "duration_s": 0.3}]
    assert a.document["handoffs"][0]["to_agent"] == "billing"
    assert a.document["responses"] == 4
    assert (a.document["model"], a.document["cost_usd"]) == ("gpt-realtime-mini", 0.017)
    assert a.document["transcript"] == [{"role": "user", "text": "book a table for two"}]
    assert a.parts == {"sip", "sideband"}
    assert a.document["sideband"]["call_id"] == "rtc_9"


def test_relayed_records_merge_without_an_offer_row_too() -> None:
    _, sip, sideband = _relayed()
    a, b = _parts(sip, sideband), _parts(sideband, sip)
    assert a.columns() == b.columns()
    assert a.offered_at == T0


def test_merging_a_part_again_changes_nothing() -> None:
    offered, sip, sideband = _relayed()
    once = _parts(offered, sip, sideband)
    twice = _parts(offered, sip, sideband, sideband, sip, offered)
    assert twice.columns() == once.columns() and twice.document == once.document


def test_a_reused_call_id_is_a_new_call() -> None:
    """A restarted worker counts its call ids from 1 again."""
    before = model.ended_call(bridged_call(WorkerSide(), 1, at=T0))
    again = model.offered("w1:1", "bridged", "inbound", T0 + 3600, "1002", "100")
    assert match([before], again) is None
    assert fold([before], again).id is None


def test_relayed_sideband_matches_the_newest_offer_before_it() -> None:
    old = _stored(model.offered("w1:3", "bridged", "inbound", T0 - 7200, "9", "1"), 1)
    new = _stored(model.offered("w1:3", "bridged", "inbound", T0, "1001", "100"), 2)
    sideband = model.sideband_ended(sideband_record("rtc_2", at=T0 + 3, sip_leg="w1:3"))
    assert match([new, old], sideband) is new
    assert match([old], sideband) is None  # two hours before: another call


def test_merge_keeps_the_stored_id_and_the_earliest_offer() -> None:
    offered, sip, _ = _relayed()
    stored = _stored(offered, 42)
    merged = merge(stored, sip)
    assert merged.id == 42 and merged.offered_at == T0 and merged.state == "ended"
    assert merged.kind == "relayed"  # the offer said bridged: the record knows better


def test_unknown_after_a_restart() -> None:
    row = model.mark_unknown(model.offered("w1:1", "bridged", "inbound", T0, "1", "2"))
    assert row.state == "unknown" and row.end_reason == model.UNKNOWN_REASON
    assert row.document["state"] == "unknown"
    # The worker's record arriving later still ends it.
    side = WorkerSide()
    side.offer(1, at=T0)
    ended = model.ended_call(side.end(1, at=T0 + 5, record=worker_record(1)))
    assert merge(row, ended).state == "ended"


def test_row_from_document_round_trip() -> None:
    _, sip, sideband = _relayed()
    row = _parts(sip, sideband)
    back = model.row_from_document(row.document, 5)
    assert back.columns() == row.columns() and back.id == 5
    with pytest.raises(ValueError, match="not a call document"):
        model.row_from_document({"call_id": "x"})


# Never stored ---------------------------------------------------------------------------


def test_transcripts_off_strips_turns_and_guardrail_text() -> None:
    ended = bridged_call(WorkerSide(), 2, at=T0)
    kept = model.ended_call(ended, transcripts=True).document
    assert kept["transcript"][1] == {"role": "assistant", "text": "sunny, 24 degrees"}
    assert kept["guardrail_events"][0]["text"] == "my card is 4111"
    off = model.ended_call(ended, transcripts=False).document
    assert "transcript" not in off and "transcript" not in off["sip"]
    assert "Lyon" not in repr(off) and "4111" not in repr(off)
    assert off["guardrail_events"][0]["reason"] == "card number"
    assert off["usage"] == {"input_audio": 900, "output_audio": 1200}
    sideband = model.sideband_ended(sideband_record("rtc_3", at=T0), transcripts=False)
    assert "book a table" not in repr(sideband.document)
    assert sideband.document["tool_calls"][0]["name"] == "book"


def test_secrets_are_never_stored() -> None:
    side = WorkerSide()
    ended = bridged_call(side, 4, at=T0)
    ended["record"]["media"] = {"rx_frames": 1, "token": "relay-credential"}
    ended["record"]["tool_calls"] = [{"name": "crm", "ok": True,
                                      "headers": {"Authorization": "Bearer sk-1"}}]
    document = model.ended_call(ended).document
    text = repr(document)
    assert "relay-credential" not in text and "sk-1" not in text
    assert document["sip"]["media"] == {"rx_frames": 1}


def test_values_both_databases_accept() -> None:
    side = WorkerSide()
    ended = bridged_call(side, 5, at=T0)
    ended["end_reason"] = "bad\x00byte " + "x" * 2000
    ended["record"]["media"] = {"jitter": float("nan")}
    row = model.ended_call(ended)
    assert row.end_reason is not None and "\x00" not in row.end_reason
    assert len(row.end_reason) == 512
    assert row.document["sip"]["media"] == {"jitter": None}


# Boundaries -----------------------------------------------------------------------------

PROBE = """
import sys
for name in ("asyncio", "sqlite3", "psycopg", "aiohttp", "websockets", "pjsua2"):
    sys.modules[name] = None
import gateway.records.schema, gateway.records.model, gateway.records.queries
"""


def test_pure_modules_import_no_io_library() -> None:
    proc = subprocess.run([sys.executable, "-W", "error", "-c", PROBE], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
