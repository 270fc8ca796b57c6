"""Live call events for the control API's Server-Sent Events (``GET /v1/calls/{id}/events``).

The control process publishes what it learns about a call (the worker's ``call_started``,
``call_event`` and ``call_ended``; a webhook call's agent activity) to :class:`CallFeed`; each
subscriber (one SSE response) has its own bounded queue. A subscriber that does not keep up
loses its oldest events, never blocks the publisher, and is told how many it lost; ``levels``
events (:data:`EPHEMERAL`) go first and are not counted as lost. A subscriber to ``*`` gets
every call's events (the monitor's list). A call's ``ended`` event closes its subscriptions
after delivery. Bounded: at most ``max_subscribers`` at once.

**History.** The feed keeps the last ``history_size`` events of each live call (not the
ephemeral ones), at most ``history_total`` in all and ``history_bytes`` of data as JSON (the
call holding the oldest event gives it up first) and for at most ``history_calls`` calls (the
one that has been quiet longest is forgotten); a call's history is dropped with its
``ended`` (or :meth:`CallFeed.forget`). A new subscription is handed the history of its
call (of every call for ``*``) in order, marked ``replay``, before any live event; ``after``
(the SSE ``Last-Event-ID``) keeps only events newer than that seq, so a reconnecting stream
loses nothing still kept and repeats nothing.
Seqs start at the wall clock in microseconds, so they also grow across control restarts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["ALL_CALLS", "EPHEMERAL", "CallFeed", "FeedEvent", "FeedFull", "Subscription"]

#: Subscribe to this id for the events of every call.
ALL_CALLS: Final = "*"
#: Events that are neither kept in the history nor counted when dropped (audio levels).
EPHEMERAL: Final = frozenset({"levels"})


class FeedFull(Exception):
    """Too many subscribers at once."""


@dataclass(frozen=True)
class FeedEvent:
    """One event: ``event`` names it (SSE ``event:``), ``data`` is its JSON object.

    ``replay`` is true for an event a subscription got from the history (it happened before
    the subscription); ``size`` is its data's size as JSON once kept there.
    """

    seq: int
    call_id: str
    event: str
    data: Mapping[str, Any]
    replay: bool = False
    size: int = field(default=0, compare=False)


@dataclass(eq=False)  # hashed by identity: a set member
class Subscription:
    """One subscriber's queue; iterate it for events until the call ends or it is closed."""

    call_id: str
    size: int
    _events: deque[FeedEvent] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The history handed over at subscription, delivered before ``_events``.
    _replay: deque[FeedEvent] = field(default_factory=deque)
    closed: bool = False
    #: Events dropped because this subscriber did not keep up.
    lost: int = 0
    #: Ephemeral events dropped (not worth a ``lost`` notice).
    skipped: int = 0

    def put(self, event: FeedEvent) -> None:
        """Queue ``event``, dropping the oldest when full (never blocks).

        An ephemeral event is dropped at once when the queue is half full; a full queue
        makes room by dropping its oldest ephemeral event, else its oldest event.
        """
        if event.event in EPHEMERAL and len(self._events) >= self.size // 2:
            self.skipped += 1
            return
        if len(self._events) >= self.size:
            victim = next((e for e in self._events if e.event in EPHEMERAL), None)
            if victim is not None:
                self._events.remove(victim)
                self.skipped += 1
            else:
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
        if self._replay:
            return self._replay.popleft()
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
        return self.closed and not self._events and not self._replay


class CallFeed:
    """Fans call events out to subscribers and keeps live calls' history (module docstring).

    ``on_watch`` is called (with no argument) whenever a subscription starts or stops: the
    set of watched calls may have changed.
    """

    def __init__(self, *, max_subscribers: int = 256, queue_size: int = 512,
                 history_size: int = 500, history_total: int = 20_000,
                 history_calls: int = 1024, history_bytes: int = 16 * 1024 * 1024,
                 first_seq: int | None = None,
                 on_watch: Callable[[], None] | None = None) -> None:
        self._max = max_subscribers
        self._queue_size = queue_size
        self._history_size = history_size
        self._history_total = history_total
        self._history_calls = history_calls
        self._history_bytes = history_bytes
        self._subs: dict[str, set[Subscription]] = {}
        # Insertion order is last-publish order (moved to the end on each event).
        self._history: dict[str, deque[FeedEvent]] = {}
        self._kept = 0
        self._bytes = 0
        start = time.time_ns() // 1000 if first_seq is None else first_seq
        self._seq = itertools.count(start)
        self._on_watch = on_watch

    @property
    def subscribers(self) -> int:
        """Subscriptions open now."""
        return sum(len(s) for s in self._subs.values())

    @property
    def kept(self) -> int:
        """Events held in the history now, over all calls."""
        return self._kept

    @property
    def kept_bytes(self) -> int:
        """Their data's size as JSON."""
        return self._bytes

    def history(self, call_id: str) -> list[FeedEvent]:
        """The events kept for ``call_id``, oldest first."""
        return list(self._history.get(call_id, ()))

    def watched(self) -> tuple[bool, frozenset[str]]:
        """Whether someone watches every call, and the single calls watched."""
        return ALL_CALLS in self._subs, frozenset(k for k in self._subs if k != ALL_CALLS)

    def publish(self, call_id: str, event: str, data: Mapping[str, Any]) -> None:
        """Deliver an event of ``call_id`` to its subscribers and to ``*``'s; keep it."""
        ephemeral = event in EPHEMERAL
        if ephemeral and not self._subs:
            return
        item = FeedEvent(next(self._seq), call_id, event, data)
        if event == "ended":
            self.forget(call_id)
        elif not ephemeral:
            self._keep(item)
        for key in (call_id, ALL_CALLS):
            for sub in self._subs.get(key, ()):
                sub.put(item)
        if event == "ended":
            subs = self._subs.pop(call_id, set())
            for sub in subs:
                sub.close()
            if subs:
                self._watch_changed()

    def forget(self, call_id: str) -> None:
        """Drop the history of ``call_id`` (it ended)."""
        kept = self._history.pop(call_id, None)
        if kept is not None:
            self._kept -= len(kept)
            self._bytes -= sum(e.size for e in kept)

    def _keep(self, item: FeedEvent) -> None:
        item = dataclasses.replace(item, size=len(json.dumps(item.data, default=str)))
        kept = self._history.pop(item.call_id, None)
        if kept is None:
            kept = deque()
            if len(self._history) >= self._history_calls:
                self.forget(next(iter(self._history)))
        self._history[item.call_id] = kept  # now the most recently active call
        kept.append(item)
        self._kept += 1
        self._bytes += item.size
        if len(kept) > self._history_size:
            self._bytes -= kept.popleft().size
            self._kept -= 1
        while self._kept > self._history_total or self._bytes > self._history_bytes:
            oldest = min(self._history.values(), key=lambda d: d[0].seq if d else 1 << 62)
            self._bytes -= oldest.popleft().size
            self._kept -= 1

    def subscribe(self, call_id: str, *, after: int | None = None) -> Subscription:
        """A new subscription to ``call_id`` (or :data:`ALL_CALLS`), its history queued first.

        Args:
            call_id: The call, or :data:`ALL_CALLS`.
            after: Replay only history events with a greater seq (a reconnect's
                ``Last-Event-ID``); ``None`` replays all that is kept.

        Raises:
            FeedFull: ``max_subscribers`` are open.
        """
        if self.subscribers >= self._max:
            raise FeedFull(f"{self._max} event streams are open")
        sub = Subscription(call_id, self._queue_size)
        if call_id == ALL_CALLS:
            kept = sorted((e for d in self._history.values() for e in d), key=lambda e: e.seq)
        else:
            kept = list(self._history.get(call_id, ()))
        sub._replay.extend(dataclasses.replace(e, replay=True) for e in kept
                           if after is None or e.seq > after)
        self._subs.setdefault(call_id, set()).add(sub)
        self._watch_changed()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub`` (its stream ended)."""
        sub.close()
        subs = self._subs.get(sub.call_id)
        if subs is not None and sub in subs:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.call_id]
            self._watch_changed()

    def close(self) -> None:
        """End every subscription (shutdown): their streams finish what is queued and end."""
        for subs in self._subs.values():
            for sub in subs:
                sub.close()

    def _watch_changed(self) -> None:
        if self._on_watch is not None:
            self._on_watch()

    async def stream(self, sub: Subscription, heartbeat_s: float) -> AsyncIterator[
            FeedEvent | None]:
        """``sub``'s events, with ``None`` after ``heartbeat_s`` of silence; ends when done."""
        try:
            while not sub.done:
                yield await sub.next(heartbeat_s)
        finally:
            self.unsubscribe(sub)
