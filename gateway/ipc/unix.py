"""Unix socket ends of the control/worker channel: the control process listens, workers connect.

:func:`serve_unix` listens on a path and hands every accepted connection, as a
:data:`~gateway.ipc.channel.ControlChannel`, to a handler running in its own named task that
the returned :class:`IpcServer` owns: closing the server cancels and awaits every handler and
closes its channel. :func:`connect_unix` opens a worker's
:data:`~gateway.ipc.channel.WorkerChannel`. The socket is made owner-only: whoever can connect
can ask the control process to run the dialplan's tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeAlias

from gateway.ipc.channel import ControlChannel, WorkerChannel, control_channel, worker_channel

__all__ = ["Handler", "IpcServer", "connect_unix", "serve_unix"]

log = logging.getLogger(__name__)


async def connect_unix(path: str | os.PathLike[str], *, name: str, **options: Any) -> WorkerChannel:
    """Connect a worker to the control process's socket at ``path``.

    Raises:
        OSError: Nothing listens at ``path``.
    """
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    return worker_channel(reader, writer, name=name, **options)


#: What serve_unix runs for each accepted connection.
Handler: TypeAlias = Callable[[ControlChannel], Awaitable[None]]


class IpcServer:
    """A listening Unix socket of the control process; see :func:`serve_unix`."""

    def __init__(
        self, path: str, handler: Handler, name: str, options: Mapping[str, Any]
    ) -> None:
        self.path = path
        self._handler = handler
        self._name = name
        self._options = dict(options)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._closing = False

    async def _start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, self.path)
        # Whoever can connect can run the dialplan's tools: owner only. Put the socket in a
        # private directory too, since the mode is set just after bind.
        os.chmod(self.path, 0o600)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.transport.abort()
            return
        name = f"{self._name}:conn-{next(self._numbers)}"
        task = asyncio.create_task(self._serve(reader, writer, name), name=f"{name}:handler")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str
    ) -> None:
        channel = control_channel(reader, writer, name=name, **self._options)
        try:
            await self._handler(channel)
        except Exception:  # one failing connection must not take the server down
            log.exception("%s: IPC connection handler failed", name)
        finally:
            await channel.close()

    @property
    def connections(self) -> int:
        """Connections being handled now."""
        return len(self._tasks)

    async def close(self) -> None:
        """Stop listening, cancel every handler (each closes its channel) and remove the socket.

        Idempotent.
        """
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def serve_unix(
    path: str | os.PathLike[str], handler: Handler, *, name: str = "ipc", **options: Any
) -> IpcServer:
    """Listen at ``path``; each connection becomes a :data:`ControlChannel` for ``handler``.

    Every connection runs ``handler(channel)`` in its own task (``{name}:conn-{n}:handler``);
    the channel is closed when the handler returns or fails (logged). A stale socket file at
    ``path`` is replaced. ``options`` are :class:`IpcChannel` keyword arguments.

    Raises:
        OSError: The socket cannot be created at ``path``.
    """
    server = IpcServer(os.fspath(path), handler, name, options)
    await server._start()
    return server
