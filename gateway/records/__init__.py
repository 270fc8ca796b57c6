"""Call records in a database, written by the control process alone (issue 11).

:mod:`~gateway.records.schema` (migrations), :mod:`~gateway.records.model` (rows, merging a
call's parts) and :mod:`~gateway.records.queries` (the SQL both stores run) are pure;
:mod:`~gateway.records.store` is the store interface and picks the adapter,
:mod:`~gateway.records.sqlite` (the default, a file) or :mod:`~gateway.records.postgres`
(several hosts); :mod:`~gateway.records.writer` is the control process's one writer;
:mod:`~gateway.records.cli` is ``gateway calls``. This file imports nothing, so the pure
modules stay importable without the database libraries. ``docs/control.md``, "Call records",
is the reference.
"""
