"""Client of the OpenAI Realtime API (GA), split along the I/O boundary.

:mod:`~gateway.realtime.events` holds the typed client and server events and the session
object, :mod:`~gateway.realtime.protocol` converts them to and from JSON text, and
:mod:`~gateway.realtime.retry` decides about retries; all three are pure. Only
:mod:`~gateway.realtime.client` touches the network (and imports ``websockets``), so this
package file imports nothing from it: ``from gateway.realtime.client import RealtimeClient``.
"""
