"""Call records in a real SQLite file: migrations, the writer, crashes, pruning, filters.

Every test writes through :class:`RecordWriter` or the store into a file under ``tmp_path``
and reads back what a user would: rows, their state, the document, the schema version. A
crash is a real one: a child process writing records is killed with ``SIGKILL``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.records import model, schema
from gateway.records.sqlite import SqliteStore
from gateway.records.store import RecordStoreError
from gateway.records.writer import RecordWriter
from tests.conftest import scaled
from tests.support.records import T0, WorkerSide, bridged_call, sideband_record, worker_record

pytestmark = [pytest.mark.component, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]


def _writer(path: Path, **kwargs: Any) -> RecordWriter:
    store = SqliteStore(path, instance="h1", busy_timeout_s=0.05)
    return RecordWriter(store, retry_initial_s=0.02, retry_max_s=0.1, **kwargs)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (``False`` after the scaled timeout)."""
    deadline = time.monotonic() + scaled(timeout_s)
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _rows(path: Path) -> list[dict[str, object]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM calls ORDER BY id")]


async def test_migrates_an_empty_file_into_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "calls.db"
    store = SqliteStore(path, instance="h1")
    assert await store.open() == 0
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = conn.execute("SELECT version, description FROM schema_version").fetchall()
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                              "type = 'index' AND tbl_name = 'calls'")}
    assert versions == [(1, "calls table")]
    assert {"calls_offered_at", "calls_kind", "calls_state", "calls_route",
            "calls_openai_call_id", "calls_sip_call_id", "calls_instance_call_id"} <= indexes
    # Opening again applies nothing more.
    store = SqliteStore(path, instance="h1")
    assert await store.open() == 0
    await store.close()


async def test_upgrades_an_older_database_and_refuses_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with _writer(path) as writer:
        await writer.ended(bridged_call(WorkerSide(), 1, at=T0))
        assert await writer.flush(scaled(10))
    newer = (*schema.SQLITE, schema.Migration(2, "a note per call",
                                              ("ALTER TABLE calls ADD COLUMN note TEXT",)))
    store = SqliteStore(path, instance="h1", migrations=newer)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        assert [v for (v,) in conn.execute("SELECT version FROM schema_version")] == [1, 2]
    assert _rows(path)[0]["call_id"] == "w1:1" and _rows(path)[0]["note"] is None
    old_code = SqliteStore(path, instance="h1")
    with pytest.raises(RecordStoreError, match="newer than this gateway") as info:
        await old_code.open()
    assert not info.value.retryable
    await old_code.close()


async def test_offered_then_ended(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    side = WorkerSide()
    async with _writer(path) as writer:
        msg = side.offer(1, at=T0)
        await writer.offered(msg.call_id, "bridged", "inbound", msg.time, msg.from_user,
                             msg.to_user, sip_call_id=msg.sip_call_id, worker_id="w1")
        assert await writer.flush(scaled(10))
        (live,) = await writer.store.list(state="live")
        assert live["call_id"] == "w1:1" and live["ended_at"] is None
        side.start(1, at=T0 + 1)
        await writer.ended(side.end(1, at=T0 + 20, record=worker_record(1)))
        assert await writer.flush(scaled(10))
        document = await writer.store.get("w1:1")
    (row,) = _rows(path)
    assert (row["state"], row["outcome"], row["answered_at"], row["ended_at"]) == \
        ("ended", "ok", T0 + 1, T0 + 20)
    assert document is not None and document["id"] == row["id"]
    assert document["tool_calls"][0]["name"] == "weather"
    assert document["sip"]["media"]["rx_frames"] == 500
    assert json.loads(str(row["record"]))["state"] == "ended"


async def test_calls_that_failed_are_recorded(tmp_path: Path) -> None:
    """A worker that died and a Realtime session that failed still leave their records."""
    path = tmp_path / "calls.db"
    side = WorkerSide()
    async with _writer(path) as writer:
        for leg in (1, 2):
            msg = side.offer(leg, at=T0 + leg)
            await writer.offered(msg.call_id, "bridged", "inbound", msg.time, msg.from_user,
                                 msg.to_user, worker_id="w1")
            side.start(leg, at=T0 + leg + 1)
        failed = worker_record(1, end_reason="Realtime session failed: 1011", sip_status=503)
        await writer.ended(side.end(1, at=T0 + 5, record=failed,
                                    reason="Realtime session failed: 1011"))
        for ended in side.die("killed by SIGKILL", at=T0 + 6):
            await writer.ended(ended)
        assert await writer.flush(scaled(10))
    assert [(r["call_id"], r["state"], r["outcome"], r["end_reason"]) for r in _rows(path)] == [
        ("w1:1", "ended", "failed", "Realtime session failed: 1011"),
        ("w1:2", "ended", "worker_died", "worker w1 died: killed by SIGKILL"),
    ]


@pytest.mark.parametrize("sideband_first", [False, True])
async def test_relayed_call_is_one_row(tmp_path: Path, sideband_first: bool) -> None:
    path = tmp_path / "calls.db"
    side = WorkerSide()
    async with _writer(path) as writer:
        msg = side.offer(2, at=T0)
        await writer.offered(msg.call_id, "bridged", "inbound", msg.time, msg.from_user,
                             msg.to_user, worker_id="w1")
        side.start(2, at=T0 + 2)
        sip = side.end(2, at=T0 + 30, record=worker_record(2, kind="relayed"))
        sideband = sideband_record("rtc_7", at=T0 + 1, sip_leg="w1:2")
        if sideband_first:
            await writer.sideband_ended(sideband)
            await writer.ended(sip)
        else:
            await writer.ended(sip)
            await writer.sideband_ended(sideband)
        assert await writer.flush(scaled(10))
        document = await writer.store.get("w1:2")
    (row,) = _rows(path)
    assert (row["kind"], row["openai_call_id"], row["end_reason"]) == \
        ("relayed", "rtc_7", "caller hung up")
    assert document is not None
    assert document["tool_calls"][0]["name"] == "book"
    assert set(document) >= {"sip", "sideband"}


async def test_a_new_call_with_a_reused_id_gets_its_own_row(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with _writer(path) as writer:
        await writer.ended(bridged_call(WorkerSide(), 1, at=T0))
        # The worker restarted: its first call is w1:1 again.
        await writer.ended(bridged_call(WorkerSide(), 1, at=T0 + 600))
        assert await writer.flush(scaled(10))
        newest = await writer.store.get("w1:1")
    assert [r["offered_at"] for r in _rows(path)] == [T0, T0 + 600]
    assert newest is not None and newest["offered_at"] == T0 + 600


CRASHING_WRITER = """
import asyncio, os, signal, sys
from gateway.records.sqlite import SqliteStore
from gateway.records.writer import RecordWriter

async def main():
    writer = RecordWriter(SqliteStore(sys.argv[1], instance=sys.argv[2]))
    writer.start()
    for leg in range(3):
        await writer.offered(f"w1:{leg}", "bridged", "inbound", 1.8e9 + leg, "1001", "100")
    assert await writer.flush(10)
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def _crash(path: Path, instance: str) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(path), instance],
                          capture_output=True, text=True, timeout=scaled(30), cwd=ROOT,
                          check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "written"


async def test_calls_live_when_the_process_died_are_marked_unknown(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    _crash(path, "h1")
    _crash(path, "other-host")  # its calls are not this instance's to judge
    writer = _writer(path)
    async with writer:
        assert await writer.wait_open(scaled(10))
    assert writer.marked_unknown == 3
    rows = _rows(path)
    mine = [r for r in rows if r["instance"] == "h1"]
    assert [r["state"] for r in mine] == ["unknown"] * 3
    assert {r["end_reason"] for r in mine} == {model.UNKNOWN_REASON}
    assert all(json.loads(str(r["record"]))["state"] == "unknown" for r in mine)
    assert [r["state"] for r in rows if r["instance"] == "other-host"] == ["live"] * 3


async def test_retention_prunes_at_open_and_then_periodically(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    wall = time.time()
    store = SqliteStore(path, instance="h1")
    await store.open()
    await store.write([
        model.ended_call(bridged_call(WorkerSide(), 1, at=wall - 100 * 86400)),
        model.ended_call(bridged_call(WorkerSide(), 2, at=wall - 10 * 86400)),
        # Left live by a run that died long ago: marked unknown at open, then old enough.
        model.offered("w1:3", "bridged", "inbound", wall - 200 * 86400, "1", "2"),
    ])
    await store.close()
    writer = _writer(path, retention_days=30, prune_every_s=0.2)
    async with writer:
        assert await writer.wait_open(scaled(10))
        assert await _until(lambda: len(_rows(path)) == 1)
        assert [r["call_id"] for r in _rows(path)] == ["w1:2"]
        # Hourly in production, every 0.2 s here: an ended record past the limit goes, a
        # live call stays however old its offer.
        await writer.offered("w1:5", "bridged", "inbound", wall - 200 * 86400, "1", "2")
        await writer.ended(bridged_call(WorkerSide(), 4, at=wall - 31 * 86400))
        assert await writer.flush(scaled(10))
        assert await _until(lambda: {r["call_id"] for r in _rows(path)} == {"w1:2", "w1:5"})
    assert writer.written == 2


async def test_filters_and_pages(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "calls.db", instance="h1")
    await store.open()
    side = WorkerSide()
    rows = [model.ended_call(bridged_call(side, leg, at=T0 + leg // 2)) for leg in range(1, 7)]
    rows.append(model.sideband_ended(sideband_record("rtc_1", at=T0 + 10)))
    rows.append(model.offered("w1:9", "bridged", "inbound", T0 + 11, "1", "2", route="other"))
    await store.write(rows)
    try:
        assert [r["call_id"] for r in await store.list(kind="direct")] == ["rtc_1"]
        assert [r["call_id"] for r in await store.list(state="live")] == ["w1:9"]
        assert [r["call_id"] for r in await store.list(route="other")] == ["w1:9"]
        assert len(await store.list(kind="bridged", state="ended")) == 6
        assert await store.list(kind="relayed") == []
        # Pages of 2 over rows offered in the same second: none lost, none twice.
        seen: list[str] = []
        before = None
        while page := await store.list(limit=2, before=before, kind="bridged"):
            seen += [str(r["call_id"]) for r in page]
            before = (float(page[-1]["offered_at"]), int(page[-1]["id"]))
        assert seen == ["w1:9", "w1:6", "w1:5", "w1:4", "w1:3", "w1:2", "w1:1"]
        full = await store.list(limit=1, documents=True)
        assert full[0]["call_id"] == "w1:9" and "id" in full[0]
    finally:
        await store.close()


async def test_transcripts_off_are_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with _writer(path, transcripts=False) as writer:
        await writer.ended(bridged_call(WorkerSide(), 1, at=T0))
        await writer.sideband_ended(sideband_record("rtc_1", at=T0 + 5))
        assert await writer.flush(scaled(10))
    text = " ".join(str(r["record"]) for r in _rows(path))
    assert "weather in Lyon" not in text and "book a table" not in text
    assert "transcript" not in text
    assert "my card is 4111" not in text  # the guardrail's checked text
    assert '"usage":{"input_audio":900' in text  # the rest of the record is there


async def test_a_locked_database_is_retried_and_nothing_is_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "calls.db"
    caplog.set_level(logging.INFO, "gateway.records")
    writer = _writer(path, queue_size=3, batch_size=2)
    async with writer:
        assert await writer.wait_open(scaled(10))
        # Another process (a backup, a careless sqlite3 shell) holds the write lock.
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        side = WorkerSide()
        calls = [bridged_call(side, leg, at=T0 + leg) for leg in range(1, 9)]
        accepted = 0
        blocked: asyncio.Task[None] | None = None
        for call in calls:
            task = asyncio.create_task(writer.ended(call), name=f"test:ended:{accepted}")
            await asyncio.sleep(scaled(0.2))
            if not task.done():
                blocked = task
                break
            accepted += 1
        # The batch being retried (1 or 2 rows) and the queue (3) are full: the next waits.
        assert blocked is not None, "a full queue must make the caller wait"
        assert 3 < accepted <= 5 and writer.queued == accepted
        await asyncio.sleep(0.3)
        assert not blocked.done() and writer.written == 0
        lock.execute("ROLLBACK")
        lock.close()
        await asyncio.wait_for(blocked, scaled(10))
        for call in calls[accepted + 1:]:
            await writer.ended(call)
        assert await writer.flush(scaled(10))
    assert sorted(str(r["call_id"]) for r in _rows(path)) == sorted(f"w1:{n}" for n in range(1, 9))
    outage = [r for r in caplog.records if "retrying until it works" in r.getMessage()]
    assert len(outage) == 1, "an outage is logged once"
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_a_row_the_database_refuses_does_not_hold_the_others_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "calls.db"
    side = WorkerSide()
    good = [model.ended_call(bridged_call(side, leg, at=T0 + leg)) for leg in (1, 2)]
    # Not a row the model builds: one that breaks the table's CHECK constraint.
    bad = dataclasses.replace(model.ended_call(bridged_call(side, 3, at=T0 + 3)),
                              kind="sideways")  # type: ignore[arg-type]
    store = SqliteStore(path, instance="h1")
    await store.open()
    with pytest.raises(RecordStoreError, match="CHECK constraint") as info:
        await store.write([good[0], bad])
    assert not info.value.retryable
    assert _rows(path) == []  # one transaction: all or nothing
    await store.close()
    writer = _writer(path, batch_size=10)
    async with writer:
        for row in (good[0], bad, good[1]):
            await writer._put(row)  # what offered() and ended() queue
        assert await writer.flush(scaled(10))
    assert [r["call_id"] for r in _rows(path)] == ["w1:1", "w1:2"]
    assert (writer.written, writer.dropped) == (2, 1)
    assert any("call w1:3 not written" in r.getMessage() for r in caplog.records)


async def test_close_says_how_many_were_not_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "calls.db"
    writer = _writer(path)
    writer.start()
    assert await writer.wait_open(scaled(10))
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        side = WorkerSide()
        for leg in range(1, 4):
            await writer.ended(bridged_call(side, leg, at=T0 + leg))
        assert await writer.close(timeout_s=0.3) == 3
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert any("3 not written" in r.getMessage() for r in caplog.records)
    assert _rows(path) == []


# The installed command ------------------------------------------------------------------

GATEWAY = Path(sys.executable).parent / "gateway"


def _gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PYTHON"))}
    return subprocess.run([str(GATEWAY), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=scaled(60), check=False)


@pytest.fixture
async def written(tmp_path: Path) -> Path:
    """A config whose database holds a bridged, a direct and a live call."""
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent("""\
        records:
          database: data/calls.db
    """))
    async with _writer(tmp_path / "data" / "calls.db") as writer:
        await writer.ended(bridged_call(WorkerSide(), 1, at=T0))
        await writer.sideband_ended(sideband_record("rtc_5", at=T0 + 60))
        await writer.offered("w1:2", "bridged", "inbound", T0 + 120, "1003", "100")
        assert await writer.flush(scaled(10))
    return config


def test_cli_list_show_and_export(written: Path, tmp_path: Path) -> None:
    listed = _gateway("calls", "list", "-c", str(written), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["offered", "(UTC)", "call_id"]
    assert [line.split()[2] for line in lines[1:]] == ["w1:2", "rtc_5", "w1:1"]
    assert "2027-01-15 08:00:00" in lines[3] and "caller hung up" in lines[3]
    # A reader leaves the live call live: it is not the writer.
    assert lines[1].split()[4] == "live"
    direct = _gateway("calls", "list", "--kind", "direct", "-c", str(written), cwd=tmp_path)
    assert [line.split()[2] for line in direct.stdout.splitlines()[1:]] == ["rtc_5"]

    shown = _gateway("calls", "show", "w1:1", "-c", str(written), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["call_id"] == "w1:1" and document["sip"]["media"]["rx_frames"] == 500
    assert shown.stdout.startswith("{\n  ")

    out = tmp_path / "calls.jsonl"
    exported = _gateway("calls", "export", "--format", "jsonl", "--output", str(out),
                        "-c", str(written), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line)["call_id"] for line in out.read_text().splitlines()] == \
        ["w1:2", "rtc_5", "w1:1"]
    assert out.stat().st_mode & 0o077 == 0
    as_csv = _gateway("calls", "export", "--format", "csv", "-c", str(written), cwd=tmp_path)
    header, *body = as_csv.stdout.splitlines()
    assert header.startswith("id,instance,call_id,kind,direction,state,offered_at")
    assert len(body) == 3
    assert _rows(tmp_path / "data" / "calls.db")[2]["state"] == "live"


def test_cli_errors(written: Path, tmp_path: Path) -> None:
    unknown = _gateway("calls", "show", "w9:9", "-c", str(written), cwd=tmp_path)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: no call record with id 'w9:9'"
    empty = tmp_path / "empty.yaml"
    empty.write_text("records:\n  database: nothing-here.db\n")
    missing = _gateway("calls", "list", "-c", str(empty), cwd=tmp_path)
    assert missing.returncode == 1
    assert "no call records yet" in missing.stderr and "nothing-here.db" in missing.stderr
    assert not (tmp_path / "nothing-here.db").exists()
    usage = _gateway("calls", "list", "--kind", "sideways", "-c", str(written), cwd=tmp_path)
    assert usage.returncode == 2
    helped = _gateway("calls", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "list" in helped.stdout and "export" in helped.stdout
    helped = _gateway("calls", "export", "--help", cwd=tmp_path)
    assert "--format" in helped.stdout and "--output" in helped.stdout


async def test_cli_beside_a_running_writer(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("records:\n  database: calls.db\n")
    side = WorkerSide()
    async with _writer(tmp_path / "calls.db") as writer:
        msg = side.offer(1, at=T0)
        await writer.offered(msg.call_id, "bridged", "inbound", msg.time, msg.from_user,
                             msg.to_user, worker_id="w1")
        assert await writer.flush(scaled(10))
        listed = await asyncio.to_thread(_gateway, "calls", "list", "--state", "live",
                                         "-c", str(config), cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert [line.split()[2] for line in listed.stdout.splitlines()[1:]] == ["w1:1"]
        # The writer goes on writing while a reader has been there.
        side.start(1, at=T0 + 1)
        await writer.ended(side.end(1, at=T0 + 9, record=worker_record(1)))
        assert await writer.flush(scaled(10))
        shown = await asyncio.to_thread(_gateway, "calls", "show", "w1:1", "-c", str(config),
                                        cwd=tmp_path)
    assert json.loads(shown.stdout)["state"] == "ended"
