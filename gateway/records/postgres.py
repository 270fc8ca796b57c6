"""The PostgreSQL store, for control processes on several hosts sharing one database.

One psycopg async connection per store is enough: each control process has one writer, and
an asyncio lock keeps its operations (each a whole transaction) one at a time on it. A lost
connection (the server restarted, the network dropped, a statement ran past its timeout) is
closed and the error is retryable; the next operation connects again. Migrations run under a
transaction-scoped advisory lock, so two hosts starting together do not both apply one. Each
host writes as its own instance, and marks ``unknown`` only its own rows at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.types.json import Jsonb

from gateway.records import schema
from gateway.records.model import CallRow, fold, mark_unknown, row_from_document
from gateway.records.queries import Cursor, Queries
from gateway.records.store import Document, Documents, RecordStoreError, migrations_due

__all__ = ["PostgresStore"]

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

_Q: Final = Queries("%s")
#: ``pg_advisory_xact_lock`` key of the migrations (any constant; "gwrecord" in ASCII).
_MIGRATION_LOCK: Final = 0x6777_7265_636F_7264


class PostgresStore:
    """Call records in a PostgreSQL database (see the module docstring).

    Args:
        url: ``postgresql://USER@HOST:PORT/DB`` (any libpq URL), without the password.
        password: The password (``records.password``); empty for none.
        readonly: For readers: never migrate nor mark rows.
        instance: The name this store's rows are written under.
        connect_timeout_s: Bound on connecting.
        operation_timeout_s: Bound on one operation (a transaction, connecting included).
        migrations: The schema's migrations (tests pass more to exercise an upgrade).
        clock: Unix time, for pruning and the migrations' ``applied_at``.
    """

    def __init__(self, url: str, *, password: str = "", readonly: bool = False,
                 instance: str = "localhost", connect_timeout_s: float = 10.0,
                 operation_timeout_s: float = 30.0,
                 migrations: Sequence[schema.Migration] = schema.POSTGRES,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.readonly = readonly
        self.instance = instance
        self.connect_timeout_s = connect_timeout_s
        self.operation_timeout_s = operation_timeout_s
        self.migrations = tuple(migrations)
        self._password = password
        self._clock = clock
        self._conn: Conn | None = None
        self._lock = asyncio.Lock()

    @property
    def description(self) -> str:
        """The URL, without a password if it had one."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}@{host}"))

    # RecordStore -------------------------------------------------------------------------

    async def open(self) -> int:
        """Connect, migrate, mark this instance's live rows ``unknown``."""
        return await self._do("open", self._open)

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            await self._drop()

    async def write(self, rows: Sequence[CallRow]) -> None:
        """Fold the rows into their calls in one transaction."""
        batch = tuple(rows)
        if batch:
            await self._do("write", lambda conn: self._write(conn, batch))

    async def get(self, call_id: str) -> Document | None:
        """The newest record with this call id."""
        return await self._do("get", lambda conn: self._get(conn, call_id))

    async def list(self, *, limit: int = 50, before: Cursor | None = None,
                   kind: str | None = None, state: str | None = None,
                   route: str | None = None, documents: bool = False) -> Documents:
        """Records newest first (see :meth:`RecordStore.list`)."""
        listing = _Q.listing(limit=limit, before=before, kind=kind, state=state, route=route,
                             documents=documents)
        return await self._do("list", lambda conn: self._list(conn, listing.sql,
                                                                listing.params, documents))

    async def prune(self, older_than_s: float) -> int:
        """Delete records older than ``older_than_s``."""
        return await self._do("prune", lambda conn: self._prune(conn, older_than_s))

    # Connection ----------------------------------------------------------------------------

    async def _do(self, what: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._lock:
            try:
                async with asyncio.timeout(self.operation_timeout_s):
                    return await fn(await self._connection())
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError,
                    TimeoutError) as exc:
                await self._drop()
                raise RecordStoreError(f"{self.description}: {what}: {_reason(exc)}",
                                       retryable=True) from exc
            except psycopg.Error as exc:
                raise RecordStoreError(f"{self.description}: {what}: {_reason(exc)}") from exc
            except asyncio.CancelledError:
                await self._drop()  # a transaction may be half done: start afresh
                raise

    async def _connection(self) -> Conn:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        await self._drop()
        self._conn = await psycopg.AsyncConnection.connect(
            self.url, password=self._password or None, autocommit=True,
            connect_timeout=max(2, round(self.connect_timeout_s)),
            application_name="gateway-records")
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    # Operations ----------------------------------------------------------------------------

    async def _open(self, conn: Conn) -> int:
        async with conn.transaction(), conn.cursor() as cur:
            if self.readonly:
                await cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
                found = await cur.fetchone()
                if found is None or not found[0]:
                    raise RecordStoreError(f"no call records yet: {self.description} has no "
                                           "schema (the control process creates it)")
            else:
                await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                await cur.execute(schema.version_table_sql("postgresql"))
            await cur.execute(_Q.version)
            found = await cur.fetchone()
            current = int(found[0]) if found is not None else 0
            todo = migrations_due(current, self.migrations, readonly=self.readonly,
                                  description=self.description)
            if self.readonly:
                return 0
            for migration in todo:
                for statement in migration.statements:
                    await cur.execute(statement)
                await cur.execute(_Q.applied, (migration.version, migration.description,
                                               self._clock()))
            await cur.execute(_Q.live + " FOR UPDATE", (self.instance,))
            live = _rows(await cur.fetchall())
            for row in live:
                await self._store(cur, mark_unknown(row))
            return len(live)

    async def _write(self, conn: Conn, rows: Sequence[CallRow]) -> None:
        async with conn.transaction(), conn.cursor() as cur:
            for row in rows:
                await cur.execute(_Q.candidates, (self.instance, row.call_id))
                await self._store(cur, fold(_rows(await cur.fetchall()), row))

    async def _store(self, cur: psycopg.AsyncCursor[Any], row: CallRow) -> None:
        values = tuple(row.columns().values())
        if row.id is None:
            await cur.execute(_Q.insert, (self.instance, *values, Jsonb(row.document)))
        else:
            await cur.execute(_Q.update, (*values, Jsonb(row.document), row.id))

    async def _get(self, conn: Conn, call_id: str) -> Document | None:
        async with conn.cursor() as cur:
            await cur.execute(_Q.get, (call_id,))
            found = await cur.fetchone()
        if found is None:
            return None
        row_id, instance, document = found
        return {**document, "id": row_id, "instance": instance}

    async def _list(self, conn: Conn, sql: str, params: tuple[Any, ...],
                    documents: bool) -> Documents:
        async with conn.cursor() as cur:
            await cur.execute(sql, params)
            names = [d.name for d in cur.description or ()]
            found = await cur.fetchall()
        if documents:
            return [{**document, "id": row_id, "instance": instance}
                    for row_id, instance, document in found]
        return [dict(zip(names, values, strict=True)) for values in found]

    async def _prune(self, conn: Conn, older_than_s: float) -> int:
        cutoff = self._clock() - older_than_s
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(_Q.prune, (cutoff, cutoff))
            return cur.rowcount


def _rows(found: Sequence[Any]) -> list[CallRow]:
    """Stored rows back from ``(id, record)`` pairs; an unreadable document is passed over."""
    rows = []
    for row_id, document in found:
        try:
            rows.append(row_from_document(document, row_id))
        except (ValueError, TypeError, AttributeError):
            continue
    return rows


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
