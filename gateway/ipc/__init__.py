"""Messages between the control process and the SIP worker processes: framing, types, channel.

:mod:`~gateway.ipc.framing` and :mod:`~gateway.ipc.messages` are pure (standard library only);
:mod:`~gateway.ipc.channel` is the asyncio adapter over a Unix socket. ``docs/ipc.md`` is the
protocol reference.
"""
