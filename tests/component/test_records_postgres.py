"""Call records in a real PostgreSQL server started for these tests (tests/support/postgres.py).

The same behaviour as the SQLite store's tests, through the same interface, plus what only a
server has: a lost connection (the server stopped, then started again: nothing lost), two
hosts migrating one database at once, a password. Each test gets a database of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.records import model, schema
from gateway.records.postgres import PostgresStore
from gateway.records.store import RecordStoreError
from gateway.records.writer import RecordWriter
from tests.conftest import scaled
from tests.support.ports import free_tcp_port
from tests.support.postgres import PASSWORD, PostgresServer, running_postgres
from tests.support.records import T0, WorkerSide, bridged_call, sideband_record, worker_record

pytestmark = [pytest.mark.component, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = Path(sys.executable).parent / "gateway"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One server for the module, stopped by pid and removed at the end."""
    with running_postgres(tmp_path_factory.mktemp("postgres-logs")) as server:
        yield server


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    """A fresh, empty database of the module's server."""
    return postgres.url(postgres.create_database())


def _store(url: str, instance: str = "h1", **kwargs: Any) -> PostgresStore:
    return PostgresStore(url, password=PASSWORD, instance=instance, connect_timeout_s=2,
                         operation_timeout_s=scaled(10), **kwargs)


def _writer(url: str, **kwargs: Any) -> RecordWriter:
    return RecordWriter(_store(url), retry_initial_s=0.05, retry_max_s=0.2,
                        **kwargs)


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, password=PASSWORD, connect_timeout=10) as conn:
        return conn.execute(sql).fetchall()


async def test_migrates_an_empty_database(url: str) -> None:
    store = _store(url)
    assert await store.open() == 0
    await store.close()
    assert _query(url, "SELECT version, description FROM schema_version") == \
        [(1, "calls table")]
    indexes = {name for (name,) in _query(
        url, "SELECT indexname FROM pg_indexes WHERE tablename = 'calls'")}
    assert {"calls_offered_at", "calls_kind", "calls_state", "calls_openai_call_id",
            "calls_instance_call_id"} <= indexes
    assert _query(url, "SELECT data_type FROM information_schema.columns WHERE "
                       "table_name = 'calls' AND column_name = 'record'") == [("jsonb",)]
    store = _store(url)
    assert await store.open() == 0
    await store.close()
    assert len(_query(url, "SELECT * FROM schema_version")) == 1


async def test_two_hosts_migrating_at_once_apply_each_version_once(url: str) -> None:
    stores = [_store(url, instance=f"host{n}") for n in range(3)]
    try:
        assert await asyncio.gather(*(s.open() for s in stores)) == [0, 0, 0]
    finally:
        for store in stores:
            await store.close()
    assert _query(url, "SELECT version FROM schema_version") == [(1,)]


async def test_upgrades_an_older_database_and_refuses_a_newer_one(url: str) -> None:
    async with _writer(url) as writer:
        await writer.ended(bridged_call(WorkerSide(), 1, at=T0))
        assert await writer.flush(scaled(10))
    newer = (*schema.POSTGRES, schema.Migration(2, "a note per call",
                                                ("ALTER TABLE calls ADD COLUMN note TEXT",)))
    store = _store(url, migrations=newer)
    await store.open()
    await store.close()
    assert _query(url, "SELECT version FROM schema_version ORDER BY version") == [(1,), (2,)]
    assert _query(url, "SELECT call_id, note FROM calls") == [("w1:1", None)]
    old_code = _store(url)
    with pytest.raises(RecordStoreError, match="newer than this gateway") as info:
        await old_code.open()
    assert not info.value.retryable
    await old_code.close()


async def test_offered_then_ended(url: str) -> None:
    side = WorkerSide()
    async with _writer(url) as writer:
        msg = side.offer(1, at=T0)
        await writer.offered(msg.call_id, "bridged", "inbound", msg.time, msg.from_user,
                             msg.to_user, sip_call_id=msg.sip_call_id, worker_id="w1")
        assert await writer.flush(scaled(10))
        assert [r["state"] for r in await writer.store.list()] == ["live"]
        side.start(1, at=T0 + 1)
        await writer.ended(side.end(1, at=T0 + 20, record=worker_record(1)))
        assert await writer.flush(scaled(10))
        document = await writer.store.get("w1:1")
    assert _query(url, "SELECT state, outcome, answered_at, ended_at, record->>'state' "
                       "FROM calls") == [("ended", "ok", T0 + 1, T0 + 20, "ended")]
    assert document is not None and document["instance"] == "h1"
    assert document["usage"] == {"input_audio": 900, "output_audio": 1200}


@pytest.mark.parametrize("sideband_first", [False, True])
async def test_relayed_call_is_one_row(url: str, sideband_first: bool) -> None:
    side = WorkerSide()
    async with _writer(url) as writer:
        msg = side.offer(2, at=T0)
        await writer.offered(msg.call_id, "bridged", "inbound", msg.time, msg.from_user,
                             msg.to_user, worker_id="w1")
        side.start(2, at=T0 + 2)
        sip = side.end(2, at=T0 + 30, record=worker_record(2, kind="relayed"))
        sideband = sideband_record("rtc_7", at=T0 + 1, sip_leg="w1:2")
        for part in ([sideband, sip] if sideband_first else [sip, sideband]):
            if part is sip:
                await writer.ended(part)
            else:
                await writer.sideband_ended(part)
        assert await writer.flush(scaled(10))
    assert _query(url, "SELECT call_id, kind, openai_call_id, end_reason, "
                       "record->'tool_calls'->0->>'name' FROM calls") == \
        [("w1:2", "relayed", "rtc_7", "caller hung up", "book")]


CRASHING_WRITER = """
import asyncio, os, signal, sys
from gateway.records.postgres import PostgresStore
from gateway.records.writer import RecordWriter

async def main():
    store = PostgresStore(sys.argv[1], password=os.environ["TEST_PG_PASSWORD"],
                          instance=sys.argv[2])
    writer = RecordWriter(store)
    writer.start()
    for leg in range(3):
        await writer.offered(f"w1:{leg}", "bridged", "inbound", 1.8e9 + leg, "1001", "100")
    assert await writer.flush(10)
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def _crash(url: str, instance: str) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASHING_WRITER, url, instance],
                          capture_output=True, text=True, timeout=scaled(30), cwd=ROOT,
                          env={**os.environ, "TEST_PG_PASSWORD": PASSWORD}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "written"


async def test_calls_live_when_the_process_died_are_marked_unknown(url: str) -> None:
    _crash(url, "h1")
    _crash(url, "other-host")  # another host's live calls are not ours to judge
    writer = _writer(url)
    async with writer:
        assert await writer.wait_open(scaled(10))
    assert writer.marked_unknown == 3
    assert _query(url, "SELECT instance, state, end_reason, record->>'state' FROM calls "
                       "ORDER BY id") == \
        [("h1", "unknown", model.UNKNOWN_REASON, "unknown")] * 3 + \
        [("other-host", "live", None, "live")] * 3


async def test_retention_prunes_ended_records_only(url: str) -> None:
    wall = time.time()
    store = _store(url)
    await store.open()
    await store.write([
        model.ended_call(bridged_call(WorkerSide(), 1, at=wall - 100 * 86400)),
        model.ended_call(bridged_call(WorkerSide(), 2, at=wall - 10 * 86400)),
    ])
    await store.close()
    writer = _writer(url, retention_days=30, prune_every_s=0.2)
    async with writer:
        assert await writer.wait_open(scaled(10))
        await writer.offered("w1:5", "bridged", "inbound", wall - 200 * 86400, "1", "2")
        await writer.ended(bridged_call(WorkerSide(), 4, at=wall - 31 * 86400))
        assert await writer.flush(scaled(10))
        deadline = time.monotonic() + scaled(10)
        while {c for (c,) in _query(url, "SELECT call_id FROM calls")} != {"w1:2", "w1:5"}:
            assert time.monotonic() < deadline, _query(url, "SELECT call_id FROM calls")
            await asyncio.sleep(0.05)


async def test_filters_and_pages(url: str) -> None:
    store = _store(url)
    await store.open()
    side = WorkerSide()
    rows = [model.ended_call(bridged_call(side, leg, at=T0 + leg // 2)) for leg in range(1, 7)]
    rows.append(model.sideband_ended(sideband_record("rtc_1", at=T0 + 10)))
    rows.append(model.offered("w1:9", "bridged", "inbound", T0 + 11, "1", "2", route="other"))
    await store.write(rows)
    try:
        assert [r["call_id"] for r in await store.list(kind="direct")] == ["rtc_1"]
        assert [r["call_id"] for r in await store.list(state="live", route="other")] == \
            ["w1:9"]
        seen: list[str] = []
        before = None
        while page := await store.list(limit=2, before=before, kind="bridged"):
            seen += [str(r["call_id"]) for r in page]
            before = (float(page[-1]["offered_at"]), int(page[-1]["id"]))
        assert seen == ["w1:9", "w1:6", "w1:5", "w1:4", "w1:3", "w1:2", "w1:1"]
        (full,) = await store.list(limit=1, kind="direct", documents=True)
        assert full["sideband"]["call_id"] == "rtc_1" and full["id"] == 7
    finally:
        await store.close()


async def test_transcripts_off_are_not_stored(url: str) -> None:
    async with _writer(url, transcripts=False) as writer:
        await writer.ended(bridged_call(WorkerSide(), 1, at=T0))
        await writer.sideband_ended(sideband_record("rtc_1", at=T0 + 5))
        assert await writer.flush(scaled(10))
    text = " ".join(str(r) for (r,) in _query(url, "SELECT record::text FROM calls"))
    assert "Lyon" not in text and "book a table" not in text and "4111" not in text
    assert "transcript" not in text


async def test_server_stopped_then_started_again_loses_nothing(
        postgres: PostgresServer, url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gateway.records")
    writer = _writer(url, queue_size=4, batch_size=2)
    side = WorkerSide()
    calls = [bridged_call(side, leg, at=T0 + leg) for leg in range(1, 11)]
    async with writer:
        assert await writer.wait_open(scaled(10))
        await writer.ended(calls[0])
        assert await writer.flush(scaled(10))  # the writer's connection is up
        postgres.stop()
        try:
            accepted = 1
            blocked: asyncio.Task[None] | None = None
            for call in calls[1:]:
                task = asyncio.create_task(writer.ended(call), name=f"test:ended:{accepted}")
                await asyncio.sleep(scaled(0.2))
                if not task.done():
                    blocked = task
                    break
                accepted += 1
            assert blocked is not None, "a full queue must make the caller wait"
            assert writer.queued == accepted - 1
            await asyncio.sleep(0.5)
            assert not blocked.done()
        finally:
            postgres.start()
        await asyncio.wait_for(blocked, scaled(20))
        for call in calls[accepted + 1:]:
            await writer.ended(call)
        assert await writer.flush(scaled(20))
    assert sorted(str(c) for (c,) in _query(url, "SELECT call_id FROM calls")) == \
        sorted(f"w1:{n}" for n in range(1, 11))
    assert writer.written == 10 and writer.dropped == 0
    outage = [r for r in caplog.records if "retrying until it works" in r.getMessage()]
    assert len(outage) == 1, [r.getMessage() for r in caplog.records]
    assert PASSWORD not in caplog.text


async def test_an_unreachable_server_is_a_retryable_error() -> None:
    nobody_there = f"postgresql://gateway@127.0.0.1:{free_tcp_port()}/calls"
    store = PostgresStore(nobody_there, password=PASSWORD, connect_timeout_s=2)
    with pytest.raises(RecordStoreError) as info:
        await store.open()
    assert info.value.retryable and PASSWORD not in str(info.value)
    await store.close()
    with_password = PostgresStore("postgresql://gw:hunter2@db.example:5432/calls")
    assert with_password.description == "postgresql://gw@db.example:5432/calls"


# The installed command against PostgreSQL ----------------------------------------------


def _gateway(*args: str, cwd: Path, password: str = PASSWORD
             ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PYTHON"))}
    env["GATEWAY_RECORDS_PASSWORD"] = password
    return subprocess.run([str(GATEWAY), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=scaled(60), check=False)


async def test_cli_reads_postgres(url: str, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"records:\n  database: {url}\n")
    empty = await asyncio.to_thread(_gateway, "calls", "list", "-c", str(config), cwd=tmp_path)
    assert empty.returncode == 1 and "no call records yet" in empty.stderr
    async with _writer(url) as writer:
        await writer.ended(bridged_call(WorkerSide(), 1, at=T0))
        await writer.sideband_ended(sideband_record("rtc_5", at=T0 + 60))
        assert await writer.flush(scaled(10))
    listed = await asyncio.to_thread(_gateway, "calls", "list", "-c", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[2] for line in listed.stdout.splitlines()[1:]] == ["rtc_5", "w1:1"]
    shown = await asyncio.to_thread(_gateway, "calls", "show", "rtc_5", "-c", str(config),
                                    cwd=tmp_path)
    assert json.loads(shown.stdout)["openai_call_id"] == "rtc_5"
    exported = await asyncio.to_thread(_gateway, "calls", "export", "--format", "jsonl",
                                       "-c", str(config), cwd=tmp_path)
    assert len(exported.stdout.splitlines()) == 2
    wrong = await asyncio.to_thread(_gateway, "calls", "list", "-c", str(config), cwd=tmp_path,
                                    password="wrong-password")
    assert wrong.returncode == 1 and "password authentication failed" in wrong.stderr
    assert "wrong-password" not in wrong.stderr and "Traceback" not in wrong.stderr
