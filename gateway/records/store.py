"""The call-record store: one interface, two adapters, chosen by ``records.database``.

:class:`RecordStore` is what the writer and ``gateway calls`` use. :func:`open_store` picks
the adapter: a ``postgresql://`` or ``postgres://`` URL is PostgreSQL
(:mod:`gateway.records.postgres`, the password from ``records.password``), anything else an
SQLite file (:mod:`gateway.records.sqlite`; a relative name is beside the config file). A
store writes one instance's calls: the instance (the host name by default) tells the rows of
the control processes of several hosts sharing one PostgreSQL database apart, so a restart
marks ``unknown`` only its own calls left live. Failures are :class:`RecordStoreError`;
``retryable`` says whether the database may come back (unreachable, locked, full) or the
request itself is wrong (a schema newer than this code, a bad row).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

from gateway.config import Settings, records_database
from gateway.errors import GatewayError
from gateway.records import schema
from gateway.records.model import CallRow
from gateway.records.queries import Cursor

__all__ = ["Cursor", "Document", "Documents", "RecordStore", "RecordStoreError",
           "default_instance", "is_postgres_url", "open_store"]

#: A record as read back: its columns or whole document, with the store's ``id`` and
#: ``instance``.
Document: TypeAlias = dict[str, Any]
Documents: TypeAlias = list[Document]


class RecordStoreError(GatewayError):
    """The call-record database failed or refused a request.

    Attributes:
        retryable: Whether trying again later may succeed (the database is unreachable,
            locked or full), as opposed to a request that will always fail.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class RecordStore(Protocol):
    """Where call records live. One writer per instance; any number of readers."""

    @property
    def description(self) -> str:
        """The database for logs and errors (a file, or a URL without password)."""

    async def open(self) -> int:
        """Connect and migrate; mark this instance's rows still ``live`` as ``unknown``.

        A read-only store only checks that the schema is the one this code reads.

        Returns:
            How many rows were marked ``unknown``.

        Raises:
            RecordStoreError: The database cannot be reached or used.
        """

    async def close(self) -> None:
        """Disconnect (idempotent)."""

    async def write(self, rows: Sequence[CallRow]) -> None:
        """Fold each row into the call it belongs to, in one transaction (all or nothing).

        Raises:
            RecordStoreError: Nothing was written.
        """

    async def get(self, call_id: str) -> Document | None:
        """The newest record with this call id: its whole document, or ``None``."""

    async def list(self, *, limit: int = 50, before: Cursor | None = None,
                   kind: str | None = None, state: str | None = None,
                   route: str | None = None, documents: bool = False) -> Documents:
        """Records newest first: their columns, or with ``documents`` their documents.

        Args:
            limit: At most this many.
            before: Continue after this ``(offered_at, id)`` (the last row of a page).
            kind: Only this kind (``bridged``, ``relayed``, ``direct``).
            state: Only this state (``live``, ``ended``, ``unknown``).
            route: Only this route.
            documents: Return whole documents instead of the columns.
        """

    async def prune(self, older_than_s: float) -> int:
        """Delete records that ended (or were offered, if never ended) that long ago.

        Live rows are kept. Returns how many were deleted.
        """


def default_instance() -> str:
    """This host's name: the instance a store writes as unless told otherwise."""
    return socket.gethostname() or "localhost"


def is_postgres_url(database: str) -> bool:
    """Whether ``records.database`` names a PostgreSQL server."""
    return database.startswith(("postgresql://", "postgres://"))


def open_store(settings: Settings, *, readonly: bool = False,
               instance: str | None = None) -> RecordStore:
    """The store ``records.database`` names (not yet opened: call :meth:`RecordStore.open`).

    Args:
        settings: The gateway's settings.
        readonly: For readers (``gateway calls``): never migrate nor mark rows, and an
            SQLite file that does not exist is an error instead of being created.
        instance: The name rows are written under; default :func:`default_instance`.
    """
    database = records_database(settings)
    name = instance or default_instance()
    if is_postgres_url(database):
        from gateway.records.postgres import PostgresStore

        return PostgresStore(database, password=settings.records.password.value,
                             readonly=readonly, instance=name)
    from gateway.records.sqlite import SqliteStore

    return SqliteStore(database, readonly=readonly, instance=name)


def migrations_due(current: int, migrations: Sequence[schema.Migration], *, readonly: bool,
                   description: str) -> tuple[schema.Migration, ...]:
    """What a store at schema version ``current`` must apply (none when ``readonly``).

    Raises:
        RecordStoreError: The schema is newer than the code, or a read-only store finds
            migrations due (the gateway, not a reader, migrates).
    """
    try:
        todo = schema.pending(current, migrations)
    except schema.SchemaError as exc:
        raise RecordStoreError(f"{description}: {exc}") from None
    if readonly:
        if todo:
            raise RecordStoreError(
                f"{description}: schema version {current}, this gateway reads "
                f"{len(migrations)}: start the gateway once to migrate it")
        return ()
    return todo
