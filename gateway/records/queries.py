"""The SQL both stores run, written once with the dialect's placeholder (``?`` or ``%s``).

Rows are listed newest first by ``(offered_at, id)``; a page continues after a
:data:`Cursor`, the ``(offered_at, id)`` of the last row of the page before, so rows offered
in the same instant are neither skipped nor repeated. A call's stored parts are found by
instance and call id, newest first (:data:`CANDIDATES` of them). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from gateway.records.schema import COLUMNS

__all__ = ["CANDIDATES", "Cursor", "Listing", "Queries"]

#: ``(offered_at, id)`` of the last row already listed.
Cursor: TypeAlias = tuple[float, int]
#: Rows with the same call id looked at when a part comes in (call ids repeat over time).
CANDIDATES: Final = 8


@dataclass(frozen=True, slots=True)
class Listing:
    """A ``list`` query: its SQL and parameters."""

    sql: str
    params: tuple[Any, ...]


class Queries:
    """The statements, with ``ph`` as the placeholder."""

    def __init__(self, ph: str) -> None:
        self.ph = ph
        cols = ", ".join(COLUMNS)
        marks = ", ".join([ph] * (len(COLUMNS) + 2))
        self.candidates = (f"SELECT id, record FROM calls WHERE instance = {ph} AND call_id = "
                           f"{ph} ORDER BY offered_at DESC, id DESC LIMIT {CANDIDATES}")
        self.insert = f"INSERT INTO calls (instance, {cols}, record) VALUES ({marks})"
        sets = ", ".join(f"{c} = {ph}" for c in COLUMNS)
        self.update = f"UPDATE calls SET {sets}, record = {ph} WHERE id = {ph}"
        self.live = f"SELECT id, record FROM calls WHERE instance = {ph} AND state = 'live'"
        self.get = (f"SELECT id, instance, record FROM calls WHERE call_id = {ph} "
                    "ORDER BY offered_at DESC, id DESC LIMIT 1")
        self.prune = (f"DELETE FROM calls WHERE state <> 'live' AND (ended_at < {ph} OR "
                      f"(ended_at IS NULL AND offered_at < {ph}))")
        self.version = "SELECT COALESCE(MAX(version), 0) FROM schema_version"
        self.applied = (f"INSERT INTO schema_version (version, description, applied_at) "
                        f"VALUES ({ph}, {ph}, {ph})")

    def listing(self, *, limit: int, before: Cursor | None, kind: str | None,
                state: str | None, route: str | None, documents: bool) -> Listing:
        """Rows newest first, filtered, at most ``limit``: their columns or documents."""
        ph = self.ph
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("kind", kind), ("state", state), ("route", route)):
            if value is not None:
                where.append(f"{column} = {ph}")
                params.append(value)
        if before is not None:
            where.append(f"(offered_at < {ph} OR (offered_at = {ph} AND id < {ph}))")
            params += [before[0], before[0], before[1]]
        what = "record" if documents else ", ".join(COLUMNS)
        sql = f"SELECT id, instance, {what} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY offered_at DESC, id DESC LIMIT {ph}"
        return Listing(sql, (*params, max(0, limit)))
