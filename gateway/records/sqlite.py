"""The SQLite store: one file, one connection, owned by one thread.

sqlite3 calls block, so the connection lives in a dedicated thread (``records-sqlite``) that
runs one job at a time from a bounded queue; the event loop only awaits each job's future.
At most :data:`MAX_JOBS` jobs wait: a caller beyond that waits its turn on a semaphore (held
until its job has run, even if the caller was cancelled meanwhile), so the queue never
overflows and the loop never blocks. The file is in WAL mode with ``synchronous=NORMAL``: a
commit survives the process dying (a power cut may lose the last ones), readers such as
``gateway calls`` never block the writer, and the busy timeout rides out a reader's or a
backup's short lock. Busy, locked, full, I/O and can't-open errors are retryable
(:class:`~gateway.records.store.RecordStoreError`); others are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Final, TypeVar

from gateway.records import schema
from gateway.records.model import CallRow, fold, mark_unknown, row_from_document
from gateway.records.queries import Cursor, Queries
from gateway.records.store import Document, Documents, RecordStoreError, migrations_due

__all__ = ["MAX_JOBS", "SqliteStore"]

T = TypeVar("T")

#: Jobs waiting for the thread at most (one writer and a reader or two need far fewer).
MAX_JOBS: Final = 16
_Q: Final = Queries("?")
#: Primary result codes worth retrying: busy, locked, no memory, read-only, I/O error,
#: full, can't open, lock protocol.
_RETRYABLE: Final = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class SqliteStore:
    """Call records in an SQLite file (see the module docstring).

    Args:
        path: The database file; its directory is created when the store opens.
        readonly: For readers: the file must exist and is opened read-only.
        instance: The name this store's rows are written under.
        busy_timeout_s: How long a statement waits for another connection's lock.
        migrations: The schema's migrations (tests pass more to exercise an upgrade).
        clock: Unix time, for pruning and the migrations' ``applied_at``.
    """

    def __init__(self, path: str | PathLike[str], *, readonly: bool = False,
                 instance: str = "localhost", busy_timeout_s: float = 5.0,
                 migrations: Sequence[schema.Migration] = schema.SQLITE,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.instance = instance
        self.busy_timeout_s = busy_timeout_s
        self.migrations = tuple(migrations)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None  # used by the thread only
        # One more than the slots: close's end-of-jobs marker always fits.
        self._jobs: queue.Queue[_Job | None] = queue.Queue(MAX_JOBS + 1)
        self._slots = asyncio.Semaphore(MAX_JOBS)
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def description(self) -> str:
        """``sqlite:PATH``."""
        return f"sqlite:{self.path}"

    # RecordStore -------------------------------------------------------------------------

    async def open(self) -> int:
        """Open the file, migrate it, mark this instance's live rows ``unknown``."""
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(target=self._main, name="records-sqlite",
                                            daemon=True)
            self._thread.start()
        return await self._run(self._open)

    async def close(self) -> None:
        """Close the connection and end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._closing = True
        try:
            await self._run(self._disconnect)
        finally:
            self._thread = None
            self._jobs.put_nowait(None)
            # The thread has run its last job: it only has to see the marker and return.
            thread.join(1.0)

    async def write(self, rows: Sequence[CallRow]) -> None:
        """Fold the rows into their calls in one transaction."""
        batch = tuple(rows)
        if batch:
            await self._run(lambda: self._write(batch))

    async def get(self, call_id: str) -> Document | None:
        """The newest record with this call id."""
        return await self._run(lambda: self._get(call_id))

    async def list(self, *, limit: int = 50, before: Cursor | None = None,
                   kind: str | None = None, state: str | None = None,
                   route: str | None = None, documents: bool = False) -> Documents:
        """Records newest first (see :meth:`RecordStore.list`)."""
        listing = _Q.listing(limit=limit, before=before, kind=kind, state=state, route=route,
                             documents=documents)
        return await self._run(lambda: self._list(listing.sql, listing.params, documents))

    async def prune(self, older_than_s: float) -> int:
        """Delete records older than ``older_than_s``."""
        return await self._run(lambda: self._prune(older_than_s))

    # The loop's side -----------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._thread is None:
            raise RecordStoreError(f"{self.description}: not open")
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        try:
            self._jobs.put_nowait((fn, future, loop))
        except BaseException:
            self._slots.release()
            raise
        return await future

    def _settle(self, future: asyncio.Future[Any], ok: bool, value: Any) -> None:
        self._slots.release()
        if future.done():  # its caller was cancelled
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    # The thread's side ---------------------------------------------------------------------

    def _main(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, loop = job
            try:
                value, ok = fn(), True
            except sqlite3.Error as exc:
                value, ok = self._error(exc), False
            except Exception as exc:
                value, ok = exc, False
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._settle, future, ok, value)
        self._disconnect()

    def _error(self, exc: sqlite3.Error) -> RecordStoreError:
        code = getattr(exc, "sqlite_errorcode", None)
        retryable = isinstance(code, int) and code & 0xFF in _RETRYABLE
        error = RecordStoreError(f"{self.description}: {exc}", retryable=retryable)
        error.__cause__ = exc
        return error

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self._closing:
            raise RecordStoreError(f"{self.description}: closed")
        if self.readonly:
            if not self.path.is_file():
                raise RecordStoreError(f"no call records yet: {self.path} does not exist "
                                       "(the control process creates it)")
            conn = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True,
                                   timeout=self.busy_timeout_s, isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s,
                                   isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            if not self.readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise RecordStoreError(f"{self.description}: WAL mode refused ({mode})")
                conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        conn.execute("BEGIN" if self.readonly else "BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _open(self) -> int:
        with self._transaction() as conn:
            has_versions = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone() is not None
            current = conn.execute(_Q.version).fetchone()[0] if has_versions else 0
            todo = migrations_due(current, self.migrations, readonly=self.readonly,
                                  description=self.description)
            if self.readonly:
                return 0
            conn.execute(schema.version_table_sql("sqlite"))
            for migration in todo:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(_Q.applied, (migration.version, migration.description,
                                          self._clock()))
            live = _rows(conn.execute(_Q.live, (self.instance,)).fetchall())
            for row in live:
                self._store(conn, mark_unknown(row))
            return len(live)

    def _write(self, rows: Sequence[CallRow]) -> None:
        with self._transaction() as conn:
            for row in rows:
                found = conn.execute(_Q.candidates, (self.instance, row.call_id)).fetchall()
                self._store(conn, fold(_rows(found), row))

    def _store(self, conn: sqlite3.Connection, row: CallRow) -> None:
        text = json.dumps(row.document, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
        values = tuple(row.columns().values())
        if row.id is None:
            conn.execute(_Q.insert, (self.instance, *values, text))
        else:
            conn.execute(_Q.update, (*values, text, row.id))

    def _get(self, call_id: str) -> Document | None:
        with self._transaction() as conn:
            found = conn.execute(_Q.get, (call_id,)).fetchone()
        if found is None:
            return None
        row_id, instance, text = found
        return {**json.loads(text), "id": row_id, "instance": instance}

    def _list(self, sql: str, params: tuple[Any, ...], documents: bool) -> Documents:
        with self._transaction() as conn:
            cursor = conn.execute(sql, params)
            names = [d[0] for d in cursor.description]
            found = cursor.fetchall()
        if documents:
            return [{**json.loads(text), "id": row_id, "instance": instance}
                    for row_id, instance, text in found]
        return [dict(zip(names, values, strict=True)) for values in found]

    def _prune(self, older_than_s: float) -> int:
        cutoff = self._clock() - older_than_s
        with self._transaction() as conn:
            return conn.execute(_Q.prune, (cutoff, cutoff)).rowcount


def _rows(found: list[tuple[int, str]]) -> list[CallRow]:
    """Stored rows back from ``(id, record)`` pairs; an unreadable document is passed over."""
    rows = []
    for row_id, text in found:
        try:
            rows.append(row_from_document(json.loads(text), row_id))
        except ValueError:
            continue
    return rows
