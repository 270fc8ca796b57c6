"""The control process's one writer of call records.

The control process calls :meth:`RecordWriter.offered` when a call starts and
:meth:`RecordWriter.ended` / :meth:`RecordWriter.sideband_ended` when a record is finished
(also for calls whose worker died or whose Realtime session failed: the directory and the
webhook side make a record for those too). Each builds a row (:mod:`gateway.records.model`:
pure and quick) and puts it on a bounded queue; one task, ``records:writer``, opens the store
and then writes what is queued in batches of up to ``batch_size`` rows, one transaction each.

Overflow policy: the queue applies backpressure. A caller whose row finds the queue full
waits (``await put``) until the writer has made room, so nothing is dropped; the queue
(:data:`QUEUE_SIZE` rows, two per call) is sized to ride out minutes of outage at a busy
gateway's call rate without anyone waiting.

When the database is unreachable (at start or later) the writer keeps its batch and the
queue and retries with a capped exponential backoff, logging once when the outage starts and
once when it ends. A batch the database refuses for another reason is retried row by row, so
one bad row (logged with its call id, then dropped) cannot hold the others back. Records
older than ``retention_days`` are pruned once the store is open and then every hour, and with
them the call recordings in ``calls.recordings_dir`` (by file age).
:meth:`RecordWriter.close` flushes the queue for up to its timeout, then cancels the task,
closes the store and logs how many rows were not written, if any.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any, Final

from gateway.calls.recording import prune_recordings
from gateway.config import Settings, recordings_dir
from gateway.realtime.retry import capped_backoff
from gateway.records import model
from gateway.records.model import CallRow, Direction, Kind
from gateway.records.store import RecordStore, RecordStoreError, open_store

__all__ = ["BATCH_SIZE", "PRUNE_EVERY_S", "QUEUE_SIZE", "RecordWriter"]

log = logging.getLogger("gateway.records")

#: Rows waiting to be written at most (then callers wait).
QUEUE_SIZE: Final = 10_000
#: Rows per transaction at most.
BATCH_SIZE: Final = 100
#: Time between two prunes.
PRUNE_EVERY_S: Final = 3600.0
_DAY_S: Final = 86400.0


class RecordWriter:
    """Writes call records to a store from one task (see the module docstring).

    Args:
        store: Where the records go (not yet opened: the writer opens it).
        transcripts: Whether transcript turns are stored (``records.transcripts``).
        retention_days: Records older than this are pruned; 0 keeps them.
        queue_size: Rows queued at most before callers wait.
        batch_size: Rows per transaction at most.
        retry_initial_s: First wait after a failure; doubles on each failure in a row.
        retry_max_s: Longest wait between two attempts.
        prune_every_s: Time between two prunes.
        recordings_dir: Where the calls' recordings are (``calls.recordings_dir``): those
            older than ``retention_days`` are deleted with the records.
    """

    def __init__(self, store: RecordStore, *, transcripts: bool = True,
                 retention_days: float = 0.0, queue_size: int = QUEUE_SIZE,
                 batch_size: int = BATCH_SIZE, retry_initial_s: float = 0.5,
                 retry_max_s: float = 30.0, prune_every_s: float = PRUNE_EVERY_S,
                 recordings_dir: str | None = None) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        if not 0 < retry_initial_s <= retry_max_s or prune_every_s <= 0:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s and prune_every_s > 0")
        self.store = store
        self.transcripts = transcripts
        self.retention_s = retention_days * _DAY_S
        self.batch_size = batch_size
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.prune_every_s = prune_every_s
        self.recordings_dir = recordings_dir
        #: Rows written, and rows given up on (the database refused them).
        self.written = 0
        self.dropped = 0
        #: Rows marked ``unknown`` when the store opened (``None`` until it has).
        self.marked_unknown: int | None = None
        self._queue: asyncio.Queue[CallRow] = asyncio.Queue(queue_size)
        self._batch: list[CallRow] = []
        self._singly = False
        self._failures = 0
        self._outage_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._open_event = asyncio.Event()

    @classmethod
    def for_settings(cls, settings: Settings, *, instance: str | None = None) -> RecordWriter:
        """The writer ``settings.records`` describes (its store from ``records.database``)."""
        records = settings.records
        return cls(open_store(settings, instance=instance), transcripts=records.transcripts,
                   retention_days=records.retention_days,
                   recordings_dir=recordings_dir(settings))

    @property
    def queued(self) -> int:
        """Rows not yet written (queued, or in the batch being written)."""
        return self._queue.qsize() + len(self._batch)

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer's task (call from the event loop, once)."""
        if self._task is not None or self._closed:
            raise RuntimeError("a RecordWriter starts once")
        self._task = asyncio.create_task(self._run(), name="records:writer")
        self._task.add_done_callback(_report_crash)

    async def __aenter__(self) -> RecordWriter:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_open(self, timeout_s: float) -> bool:
        """Wait until the store is open (migrated, old live rows marked); ``False`` on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._open_event.wait()
        except TimeoutError:
            return False
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every row queued so far is written (or given up); ``False`` on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float = 5.0) -> int:
        """Write what is queued for up to ``timeout_s``, then stop and close the store.

        Returns:
            How many rows were not written (also logged).
        """
        if self._closed:
            return 0
        self._closed = True
        task = self._task
        if task is not None:
            await self.flush(timeout_s)
            task.cancel()
            await asyncio.wait([task])
        left = self.queued
        if left:
            log.error("call records: %d not written to %s (the database was unreachable)",
                      left, self.store.description)
        await self.store.close()
        return left

    # What the control process calls --------------------------------------------------------

    async def offered(self, call_id: str, kind: Kind, direction: Direction, offered_at: float,
                      from_user: str | None, to_user: str | None, *,
                      sip_call_id: str | None = None, worker_id: str | None = None,
                      openai_call_id: str | None = None, route: str | None = None) -> None:
        """A call started (a worker's ``call_offered``, a webhook call): a ``live`` row.

        For a worker's call pass ``CallOffered.time`` as ``offered_at``: the worker's record
        of the call is matched to this row by it.
        """
        try:
            row = model.offered(call_id, kind, direction, offered_at, from_user, to_user,
                                sip_call_id=sip_call_id, worker_id=worker_id,
                                openai_call_id=openai_call_id, route=route)
        except ValueError as exc:
            log.error("call records: call %s not recorded: %s", call_id, exc)
            return
        await self._put(row)

    async def ended(self, call: Mapping[str, Any]) -> None:
        """A SIP worker's call ended: an ended-call dict of the control directory."""
        try:
            row = model.ended_call(call, transcripts=self.transcripts)
        except (ValueError, TypeError, AttributeError) as exc:
            log.error("call records: call %s not recorded: %s", call.get("call_id"), exc)
            return
        await self._put(row)

    async def sideband_ended(self, record: Mapping[str, Any]) -> None:
        """A webhook call's record ended: ``SidebandRecord.as_dict()``."""
        try:
            row = model.sideband_ended(record, transcripts=self.transcripts)
        except (ValueError, TypeError, AttributeError) as exc:
            log.error("call records: call %s not recorded: %s", record.get("call_id"), exc)
            return
        await self._put(row)

    async def _put(self, row: CallRow) -> None:
        if self._closed:
            log.error("call records: call %s not recorded: the writer is closed", row.call_id)
            return
        await self._queue.put(row)

    # The writer's task ---------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await self._open()
        next_prune = loop.time()
        while True:
            if self.retention_s > 0 and loop.time() >= next_prune:
                await self._prune()
                next_prune = loop.time() + self.prune_every_s
            wait = next_prune - loop.time() if self.retention_s > 0 else math.inf
            try:
                async with asyncio.timeout(None if math.isinf(wait) else max(0.0, wait)):
                    self._batch.append(await self._queue.get())
            except TimeoutError:
                continue
            while len(self._batch) < self.batch_size and not self._queue.empty():
                self._batch.append(self._queue.get_nowait())
            await self._write_batch()

    async def _open(self) -> None:
        while True:
            try:
                self.marked_unknown = await self.store.open()
            except Exception as exc:
                await self._failed(_store_error(exc), "open")
                continue
            break
        self._open_event.set()
        self._recovered()
        log.info("call records: %s open%s", self.store.description,
                 f"; {self.marked_unknown} call(s) left live by the last run marked unknown"
                 if self.marked_unknown else "")

    async def _write_batch(self) -> None:
        while self._batch:
            rows = self._batch[:1] if self._singly else list(self._batch)
            try:
                await self.store.write(rows)
            except Exception as exc:
                if isinstance(exc, RecordStoreError) and exc.retryable:
                    await self._failed(exc, "write")
                    continue
                if len(rows) > 1:
                    self._singly = True  # find the row the database refuses
                    continue
                log.error("call records: call %s not written: %s", rows[0].call_id, exc)
                self.dropped += 1
            else:
                self._recovered()
                self.written += len(rows)
            del self._batch[:len(rows)]
            for _ in rows:
                self._queue.task_done()
        self._singly = False

    async def _prune(self) -> None:
        try:
            pruned = await self.store.prune(self.retention_s)
        except Exception as exc:
            log.warning("call records: pruning failed (next try in %g s): %s",
                        self.prune_every_s, exc)
            return
        if pruned:
            log.info("call records: pruned %d older than %g days", pruned,
                     self.retention_s / _DAY_S)
        if self.recordings_dir is None:
            return
        try:
            files = await asyncio.to_thread(prune_recordings, self.recordings_dir,
                                            self.retention_s)
        except OSError as exc:
            log.warning("call recordings: pruning %s failed: %s", self.recordings_dir, exc)
            return
        if files:
            log.info("call recordings: deleted %d older than %g days", files,
                     self.retention_s / _DAY_S)

    async def _failed(self, exc: RecordStoreError, what: str) -> None:
        """Wait before the next attempt; log the outage's start once."""
        self._failures += 1
        loop = asyncio.get_running_loop()
        if self._outage_since is None:
            self._outage_since = loop.time()
            level = logging.WARNING if exc.retryable else logging.ERROR
            log.log(level, "call records: %s failed, retrying until it works (%d record(s) "
                    "kept in memory): %s", what, self.queued, exc)
        delay = (capped_backoff(self.retry_initial_s, 2.0, self.retry_max_s, self._failures)
                 if exc.retryable else self.retry_max_s)
        await asyncio.sleep(delay)

    def _recovered(self) -> None:
        since, self._outage_since = self._outage_since, None
        self._failures = 0
        if since is not None:
            log.info("call records: %s works again after %.1f s (%d record(s) to write)",
                     self.store.description, asyncio.get_running_loop().time() - since,
                     self.queued)


def _store_error(exc: Exception) -> RecordStoreError:
    """``exc`` as a store error (a bug in a store is not retried quickly, but retried)."""
    if isinstance(exc, RecordStoreError):
        return exc
    return RecordStoreError(f"{type(exc).__name__}: {exc}")


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("call records: the writer stopped: nothing more is written",
                  exc_info=task.exception())
