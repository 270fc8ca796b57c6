"""The control process: supervises the SIP workers and serves the gateway's HTTP side.

:mod:`~gateway.control.supervisor` runs the workers (restart policy in
:mod:`~gateway.control.backoff`). :mod:`~gateway.control.directory` (workers and live calls,
fed by IPC messages), :mod:`~gateway.control.outcomes` and :mod:`~gateway.control.readiness`
are pure; :mod:`~gateway.control.metrics` renders them with ``prometheus-client``;
:mod:`~gateway.control.http` is the aiohttp application (health, readiness, metrics, calls
API) with its start and stop. This file imports nothing, so the pure modules stay importable
without those libraries. ``docs/control.md`` is the reference.
"""
