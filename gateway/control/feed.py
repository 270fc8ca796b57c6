"""Live call events for the control API's Server-Sent Events (``GET /v1/calls/{id}/events``).

The control process publishes what it learns about a call (the worker's ``call_started``,
``call_event`` and ``call_ended``; a webhook call's agent activity) to :class:`CallFeed`; each
subscriber (one SSE response) has its own bounded queue. A subscriber that does not keep up
loses its oldest events, never blocks the publisher, and is told how many it lost. A
subscriber to ``*`` gets every call's events (the monitor's list). A call's ``ended`` event
closes its subscriptions after delivery. Bounded: at most ``max_subscribers`` at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["ALL_CALLS", "CallFeed", "FeedEvent", "FeedFull", "Subscription"]

#: Subscribe to this id for the events of every call.
ALL_CALLS: Final = "*"


class FeedFull(Exception):
    """Too many subscribers at once."""


@dataclass(frozen=True)
class FeedEvent:
    """One event: ``event`` names it (SSE ``event:``), ``data`` is its JSON object."""

    seq: int
    call_id: str
    event: str
    data: Mapping[str, Any]


@dataclass(eq=False)  # hashed by identity: a set member
class Subscription:
    """One subscriber's queue; iterate it for events until the call ends or it is closed."""

    call_id: str
    size: int
    _events: deque[FeedEvent] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    #: Events dropped because this subscriber did not keep up.
    lost: int = 0

    def put(self, event: FeedEvent) -> None:
        """Queue ``event``, dropping the oldest when full (never blocks)."""
        if len(self._events) >= self.size:
            self._events.popleft()
            self.lost += 1
        self._events.append(event)
        self._wake.set()

    def close(self) -> None:
        """No more events will come."""
        self.closed = True
        self._wake.set()

    async def next(self, timeout_s: float) -> FeedEvent | None:
        """The next event, or ``None`` after ``timeout_s`` without one (or when closed)."""
        if not self._events and not self.closed:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout_s)
            except TimeoutError:
                return None
        return self._events.popleft() if self._events else None

    @property
    def done(self) -> bool:
        """Closed and drained."""
        return self.closed and not self._events


class CallFeed:
    """Fans call events out to subscribers (module docstring)."""

    def __init__(self, *, max_subscribers: int = 256, queue_size: int = 512) -> None:
        self._max = max_subscribers
        self._queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = {}
        self._seq = itertools.count(1)

    @property
    def subscribers(self) -> int:
        """Subscriptions open now."""
        return sum(len(s) for s in self._subs.values())

    def publish(self, call_id: str, event: str, data: Mapping[str, Any]) -> None:
        """Deliver an event of ``call_id`` to its subscribers and to ``*``'s."""
        if not self._subs:
            return
        item = FeedEvent(next(self._seq), call_id, event, data)
        for key in (call_id, ALL_CALLS):
            for sub in self._subs.get(key, ()):
                sub.put(item)
        if event == "ended":
            for sub in self._subs.pop(call_id, set()):
                sub.close()

    def subscribe(self, call_id: str) -> Subscription:
        """A new subscription to ``call_id`` (or :data:`ALL_CALLS`).

        Raises:
            FeedFull: ``max_subscribers`` are open.
        """
        if self.subscribers >= self._max:
            raise FeedFull(f"{self._max} event streams are open")
        sub = Subscription(call_id, self._queue_size)
        self._subs.setdefault(call_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub`` (its stream ended)."""
        sub.close()
        subs = self._subs.get(sub.call_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.call_id]

    async def stream(self, sub: Subscription, heartbeat_s: float) -> AsyncIterator[
            FeedEvent | None]:
        """``sub``'s events, with ``None`` after ``heartbeat_s`` of silence; ends when done."""
        try:
            while not sub.done:
                yield await sub.next(heartbeat_s)
        finally:
            self.unsubscribe(sub)
