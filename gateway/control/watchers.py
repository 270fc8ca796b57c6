"""Tells the SIP workers whose audio levels the monitor watches (``watch_levels``, docs/ipc.md).

:class:`CallFeed` calls :meth:`LevelWatchers.changed` whenever an event stream opens or closes;
one owned task (``control:watch-levels``) then broadcasts the feed's current watched set to every
worker, coalescing bursts (at most one change waits: the latest), and only when it differs
from what was last sent. A worker that comes up is sent the current set by the caller
(:meth:`LevelWatchers.message`). With no stream open the workers sample nothing: levels cost
nothing while nobody watches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.control.feed import CallFeed
from gateway.errors import GatewayError
from gateway.ipc.messages import ControlMessage, WatchLevels

__all__ = ["LevelWatchers"]

log = logging.getLogger("gateway.control")

Broadcast = Callable[[ControlMessage], Awaitable[object]]


class LevelWatchers:
    """Keeps the workers' watched sets equal to the feed's (module docstring)."""

    def __init__(self) -> None:
        self.feed: CallFeed | None = None
        self.broadcast: Broadcast | None = None
        self._sent = WatchLevels(all_calls=False)
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def message(self) -> WatchLevels:
        """The watched set now, as a message."""
        if self.feed is None:
            return WatchLevels(all_calls=False)
        every, calls = self.feed.watched()
        return WatchLevels(all_calls=every, call_ids=() if every else tuple(sorted(calls)))

    def changed(self) -> None:
        """The feed's subscriptions changed (sync: called from the feed)."""
        if self.broadcast is None:
            return
        if self._task is not None:
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="control:watch-levels")

    async def _run(self) -> None:
        try:
            while True:
                self._again = False
                msg = self.message()
                if msg != self._sent and self.broadcast is not None:
                    try:
                        await self.broadcast(msg)
                        self._sent = msg
                    except (OSError, GatewayError) as exc:
                        log.warning("watch_levels not sent to the workers: %s", exc)
                if not self._again:
                    return
        finally:
            self._task = None

    async def close(self) -> None:
        """Stop sending (shutdown)."""
        self.broadcast = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait((self._task,))
