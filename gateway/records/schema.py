"""The call-record tables, as versioned migrations per SQL dialect (SQLite, PostgreSQL).

A database holds two tables. ``schema_version`` has one row per migration applied (its
version, description and when); the highest version is the database's. ``calls`` has one row
per call: the columns that lists and filters need, indexed, and ``record``, the whole call
record as one JSON document (:mod:`gateway.records.model` builds both). A migration is applied
once, in a transaction, in version order; a database newer than the code is refused, so an
older gateway never writes rows a newer one would misread. Versions are never edited once
shipped: a change to the tables is a new migration appended to both tuples. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

__all__ = [
    "COLUMNS", "POSTGRES", "SQLITE", "Dialect", "Migration", "SchemaError", "pending",
    "version_table_sql",
]

Dialect: TypeAlias = Literal["sqlite", "postgresql"]

#: The ``calls`` columns a :class:`~gateway.records.model.CallRow` fills, in table order
#: (``id``, ``instance`` and ``record`` are the store's).
COLUMNS: Final[tuple[str, ...]] = (
    "call_id", "kind", "direction", "state", "offered_at", "answered_at", "ended_at",
    "route", "agent", "from_user", "to_user", "sip_call_id", "openai_call_id", "end_reason",
    "outcome", "sip_status", "worker_id",
)
#: Columns indexed for lists and filters (``end_reason`` is free text: not indexed).
_INDEXED: Final = tuple(c for c in COLUMNS if c != "end_reason")


class SchemaError(Exception):
    """A database's schema version cannot be used by this code (newer, or a gap)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: the statements that take version ``version - 1`` to it."""

    version: int
    description: str
    statements: tuple[str, ...]


def _calls_table(dialect: Dialect) -> tuple[str, ...]:
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    ident = ("INTEGER PRIMARY KEY" if dialect == "sqlite"
             else "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    document = "TEXT" if dialect == "sqlite" else "JSONB"
    table = f"""CREATE TABLE calls (
        id {ident},
        instance TEXT NOT NULL,
        call_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('bridged', 'relayed', 'direct')),
        direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
        state TEXT NOT NULL CHECK (state IN ('live', 'ended', 'unknown')),
        offered_at {real} NOT NULL,
        answered_at {real},
        ended_at {real},
        route TEXT,
        agent TEXT,
        from_user TEXT,
        to_user TEXT,
        sip_call_id TEXT,
        openai_call_id TEXT,
        end_reason TEXT,
        outcome TEXT,
        sip_status INTEGER,
        worker_id TEXT,
        record {document} NOT NULL
    )"""
    # Call ids repeat over time (a restarted worker counts from 1 again), so a call's row is
    # found by call id and instance, newest first.
    indexes = [
        "CREATE INDEX calls_instance_call_id ON calls (instance, call_id, offered_at)",
        "CREATE INDEX calls_instance_state ON calls (instance, state)",
    ]
    indexes += [f"CREATE INDEX calls_{c} ON calls ({c})" for c in _INDEXED if c != "call_id"]
    return (table, *indexes)


#: SQLite's migrations, oldest first.
SQLITE: Final[tuple[Migration, ...]] = (
    Migration(1, "calls table", _calls_table("sqlite")),
)
#: PostgreSQL's migrations, oldest first (the same versions as :data:`SQLITE`).
POSTGRES: Final[tuple[Migration, ...]] = (
    Migration(1, "calls table", _calls_table("postgresql")),
)


def version_table_sql(dialect: Dialect) -> str:
    """The ``schema_version`` table, created before any migration runs."""
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    return ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
            f"description TEXT NOT NULL, applied_at {real} NOT NULL)")


def pending(current: int, migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """The migrations a database at version ``current`` (0: empty) still needs, in order.

    Raises:
        SchemaError: ``current`` is newer than the last migration, or the migrations do
            not number 1, 2, 3, ... without a gap.
    """
    for index, migration in enumerate(migrations, start=1):
        if migration.version != index:
            raise SchemaError(f"migration {migration.version} out of order (expected {index})")
    latest = len(migrations)
    if current > latest:
        raise SchemaError(f"the database's schema is version {current}, newer than this "
                          f"gateway's {latest}: upgrade the gateway")
    return tuple(migrations[current:])
