"""The gateway's native media port (``gwmedia.c``) through ctypes: no Python per audio frame.

With pjsua2's ``AudioMediaPort`` the conference clock thread runs two Python callbacks per
call every 20 ms; with this port it runs C only, and the event loop exchanges audio with the
port's two rings once per pump tick (:class:`NativeChannel`). ctypes releases the GIL for the
duration of each foreign call, so the clock thread never waits for Python.

The library is built by ``scripts/build-pjsua2.sh`` next to the source build's ``_pjsua2``
module, whose pjsua symbols it uses; the PyPI wheel has no such library, so on the wheel (or
when ``sip.media_port: python``) calls use the Python port. :func:`load` says which and why.

Agent audio flows playout buffer -> native ring -> bridge. The loop keeps the ring
:data:`TX_LEAD_FRAMES` ahead of the clock, so a late loop tick does not starve the caller, and
playback tracking stays exact: frames taken from the playout buffer are in flight until the
port's played-frames counter passes them (:meth:`PlayoutBuffer.confirm_played`), and a
barge-in clears the ring first, then credits what was played, then flushes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.media.bridge import MediaBridge
from gateway.media.channel import MediaChannel
from gateway.media.playout import PlayedState, PlayoutBuffer, PlayoutStats
from gateway.sip._pj import pj

__all__ = ["TX_LEAD_FRAMES", "NativeChannel", "NativeMedia", "NativePort", "load"]

log = logging.getLogger("gateway.sip")

LIBRARY_NAME = "libgwmedia.so"
ABI_VERSION = 3
_FRAME_BYTES = 320
#: Agent audio kept in the native ring ahead of the clock (200 ms): a pump tick may come this
#: late before the caller hears a gap. It adds no latency (the ring starts empty, the first
#: frame plays on the next clock tick); it only bounds how far ahead the loop writes.
TX_LEAD_FRAMES = 10
#: Ring sizes in frames: 1 s of caller audio (oldest dropped beyond), 0.5 s of agent audio.
RX_RING_FRAMES = 50
TX_RING_FRAMES = 25
_COUNTERS = 6
#: ``rx_codec`` of ``gw_port_exchange``: caller audio as stored, or G.711 encoded in C.
RX_CODECS = {"PCM16": 0, "PCMU": 1, "PCMA": 2}
_RX_FRAMES, _RX_DROPPED, _TX_FRAMES, _TX_UNDERRUN, _TX_IDLE, _TX_CLEARED = range(_COUNTERS)


class NativeMedia:
    """The loaded ``libgwmedia.so`` with its function signatures declared."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        vp, u32, i32 = ctypes.c_void_p, ctypes.c_uint, ctypes.c_int
        u32p, u64p = ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint64)
        self._sig(lib.gw_abi_version, i32)
        self._sig(lib.gw_port_create, vp, ctypes.c_char_p, u32, u32, ctypes.POINTER(i32))
        self._sig(lib.gw_port_slot, i32, vp)
        self._sig(lib.gw_port_connect, i32, vp, i32)
        self._sig(lib.gw_port_detach, None, vp)
        self._sig(lib.gw_port_release, None, vp)
        self._sig(lib.gw_port_exchange, u32, vp, ctypes.c_char_p, u32, i32, u32,
                  ctypes.c_char_p, u32, i32, u64p, u32p, u32p)
        self._sig(lib.gw_port_tx_clear, u32, vp)
        self._sig(lib.gw_port_counters, u32, vp, u64p, u32)
        self._sig(lib.gw_g711_encode, u32, i32, ctypes.c_char_p, u32, ctypes.c_char_p)
        version = lib.gw_abi_version()
        if version != ABI_VERSION:
            raise OSError(f"{path}: ABI version {version}, expected {ABI_VERSION} (rebuild it: "
                          "bash scripts/dev.sh setup)")
        self.lib = lib
        self.path = path

    @staticmethod
    def _sig(fn: Any, restype: type | None, *argtypes: type) -> None:
        fn.restype = restype
        fn.argtypes = list(argtypes)

    def g711_encode(self, codec: str, pcm16: bytes) -> bytes:
        """The port's G.711 encoder on its own: little-endian PCM16 to ``PCMU``/``PCMA``."""
        out = ctypes.create_string_buffer(len(pcm16) // 2)
        n = self.lib.gw_g711_encode(RX_CODECS[codec], pcm16, len(pcm16), out)
        return out.raw[:n]

    def create_port(self, name: str) -> NativePort:
        """A new port on the conference bridge (sip thread).

        Raises:
            OSError: pjsua refused the port (e.g. no free bridge slot).
        """
        status = ctypes.c_int(0)
        handle = self.lib.gw_port_create(name.encode(), RX_RING_FRAMES, TX_RING_FRAMES,
                                         ctypes.byref(status))
        if not handle:
            raise OSError(f"native media port not created (pj status {status.value})")
        return NativePort(self, handle)


@dataclass(frozen=True, slots=True)
class PortCounters:
    """What a native port counted since it was created."""

    rx_frames: int
    rx_dropped: int
    tx_frames: int
    tx_underrun: int
    tx_idle: int
    tx_cleared: int


class NativePort:
    """One port: the SIP thread connects and detaches it, the loop exchanges audio with it.

    Python's reference to the C state is dropped when this object is garbage collected, so
    the loop may still exchange with a port the SIP thread detached (it just stays silent).
    """

    def __init__(self, media: NativeMedia, handle: int) -> None:
        self._lib = media.lib
        self._handle = ctypes.c_void_p(handle)
        self._rx_buf = ctypes.create_string_buffer(RX_RING_FRAMES * _FRAME_BYTES)
        self._counters = (ctypes.c_uint64 * _COUNTERS)()
        self._accepted = ctypes.c_uint(0)
        self._queued = ctypes.c_uint(0)
        #: Agent frames in the ring after the last exchange.
        self.tx_queued = 0
        #: Agent frames played since the port was created, as of the last exchange.
        self.tx_played = 0
        self.detached = False
        weakref.finalize(self, media.lib.gw_port_release, self._handle)

    @property
    def slot(self) -> int:
        """The port's conference bridge slot."""
        return int(self._lib.gw_port_slot(self._handle))

    def connect(self, call_slot: int) -> None:
        """Connect to a call's audio both ways (sip thread).

        Raises:
            OSError: pjsua refused the connection.
        """
        status = self._lib.gw_port_connect(self._handle, call_slot)
        if status != 0:
            raise OSError(f"native media port not connected to slot {call_slot} "
                          f"(pj status {status})")

    def detach(self) -> None:
        """Take the port off the bridge (sip thread; idempotent)."""
        if not self.detached:
            self.detached = True
            self._lib.gw_port_detach(self._handle)

    def exchange(self, agent_audio: bytes, busy: bool, *, read: bool = True,
                 codec: str = "PCM16", unit_frames: int = 1) -> bytes:
        """One foreign call: queue ``agent_audio``, set busy, take the caller audio stored.

        Caller audio comes out in whole units of ``unit_frames`` 20 ms frames (the rest stays
        for the next exchange), as PCM16 or, for ``codec`` ``PCMU``/``PCMA``, G.711 encoded
        in C. Updates :attr:`tx_queued` and :attr:`tx_played`. The ring never lacks room for
        what the channel writes (it writes at most :data:`TX_LEAD_FRAMES`).
        """
        buf, counters = self._rx_buf, self._counters
        n = self._lib.gw_port_exchange(
            self._handle, buf, len(buf) if read else 0, RX_CODECS[codec], unit_frames,
            agent_audio, len(agent_audio), 1 if busy else 0, counters,
            ctypes.byref(self._accepted), ctypes.byref(self._queued))
        self.tx_queued = self._queued.value
        self.tx_played = counters[_TX_FRAMES]
        return ctypes.string_at(buf, n) if n else b""

    def tx_clear(self) -> int:
        """Drop every queued agent frame; returns how many."""
        return int(self._lib.gw_port_tx_clear(self._handle))

    def counters(self) -> PortCounters:
        """A snapshot of the port's counters."""
        c = self._counters
        self._lib.gw_port_counters(self._handle, c, _COUNTERS)
        self.tx_played = c[_TX_FRAMES]
        return PortCounters(c[_RX_FRAMES], c[_RX_DROPPED], c[_TX_FRAMES], c[_TX_UNDERRUN],
                            c[_TX_IDLE], c[_TX_CLEARED])

    @property
    def rx_counts(self) -> tuple[int, int]:
        """Caller frames stored and dropped, as of the last exchange."""
        return self._counters[_RX_FRAMES], self._counters[_RX_DROPPED]


class NativeChannel(MediaChannel):
    """A :class:`MediaChannel` whose clock side is a native port (loop side unchanged)."""

    def __init__(self, media: NativeMedia, playout: PlayoutBuffer) -> None:
        super().__init__(playout)
        self._media = media
        self.port: NativePort | None = None
        self._confirmed = 0  # the port's played-frames count already credited to the playout

    # SIP thread --------------------------------------------------------------------------

    def new_port(self, name: str) -> NativePort:
        """A port for a new leg of this call, which from now on carries its audio (sip thread).

        A call changes legs when a caller's REFER was allowed: the conversation moves to the
        leg to the transfer target, with a port of its own, while the old leg's port goes with
        the old leg. Frames still in the old port's ring are counted as played.
        """
        port = self._media.create_port(name)
        old, self.port = self.port, port
        if old is not None:
            self.playout.confirm_played(self.playout.frames_in_flight)
        self._confirmed = 0
        return port

    # Loop side ---------------------------------------------------------------------------

    def tick(self) -> list[bytes]:
        """Exchange audio with the port: caller frames out, agent frames in."""
        port = self.port
        if port is None:
            return []
        data = self._exchange(port, read=True)
        if not data:
            return []
        return [data[i:i + _FRAME_BYTES] for i in range(0, len(data), _FRAME_BYTES)]

    drain_caller_frames = tick  # the port's ring is the only place caller frames are

    def caller_chunks(self, bridge: MediaBridge) -> list[bytes]:
        """The caller audio of this tick as ``bridge``'s API chunks.

        G.711 to the API: the port encodes and cuts the chunks in C (one foreign call, no
        per-sample Python). Transcoding, and audio the bridge still holds, take the frames.
        """
        codec = bridge.native_codec
        port = self.port
        if codec is None or port is None or bridge.pending_bytes:
            return super().caller_chunks(bridge)
        size = bridge.chunk_frames * _FRAME_BYTES // 2  # G.711: a byte per sample
        data = self._exchange(port, read=True, codec=codec, unit_frames=bridge.chunk_frames)
        if not data:
            return []
        return [data[i:i + size] for i in range(0, len(data), size)] if len(data) > size \
            else [data]

    def feed(self) -> None:
        """Top the port's ring up from the playout buffer now (after agent audio arrived)."""
        if self.port is not None:
            self._exchange(self.port, read=False)

    def _exchange(self, port: NativePort, *, read: bool, codec: str = "PCM16",
                  unit_frames: int = 1) -> bytes:
        playout = self.playout
        # The ring's fill level is as of the last exchange (it has only drained since), so
        # this never overfills it; it settles a tick's worth of frames below the lead.
        room = TX_LEAD_FRAMES - port.tx_queued
        frames = playout.take_frames(room) if room > 0 and not port.detached else []
        data = port.exchange(b"".join(frames) if frames else b"", playout.expecting_audio,
                             read=read, codec=codec, unit_frames=unit_frames)
        self.rx_frames, self.rx_dropped = port.rx_counts
        self._confirm(port.tx_played)
        return data

    def flush_playout(self) -> PlayedState | None:
        """Barge-in: clear the port's ring, credit what it played, then flush the buffer."""
        port = self.port
        if port is not None:
            port.tx_clear()
            self._confirm(port.counters().tx_frames)
        return self.playout.flush()

    def playout_stats(self) -> PlayoutStats:
        """The playout buffer's counters with the silence the port played."""
        stats = self.playout.stats
        if self.port is None:
            return stats
        c = self.port.counters()
        return PlayoutStats(
            frames_played=stats.frames_played,
            silence_frames_idle=c.tx_idle,
            silence_frames_underrun=c.tx_underrun,
            frames_dropped=stats.frames_dropped,
            frames_flushed=stats.frames_flushed,
            late_bytes_discarded=stats.late_bytes_discarded,
        )

    def _confirm(self, played_total: int) -> None:
        played = played_total - self._confirmed
        if played > 0:
            self._confirmed = played_total
            self.playout.confirm_played(played)


def library_path() -> Path:
    """Where the build puts ``libgwmedia.so``: next to the loaded ``_pjsua2`` module."""
    from pjsua2 import _pjsua2  # the module pj was imported from (gateway.sip._pj)

    return Path(os.path.dirname(_pjsua2.__file__)) / LIBRARY_NAME


def load(mode: str) -> tuple[NativeMedia | None, str]:
    """The native media library for ``sip.media_port`` = ``mode``, and why (for the log).

    ``auto``: native when the library is there and loads, else the Python port. ``native``:
    the library or an :class:`OSError`. ``python``: never native.

    Raises:
        OSError: ``mode`` is ``native`` and the library is missing or does not load.
    """
    if mode == "python":
        return None, "Python media port (sip.media_port: python)"
    assert pj is not None
    path = library_path()
    if not path.exists():
        reason = (f"no {LIBRARY_NAME} beside this pjsua2 binding (the PyPI wheel has none; "
                  "the source build makes it: bash scripts/dev.sh setup)")
        if mode == "native":
            raise OSError(f"sip.media_port is native but there is {reason}")
        return None, f"Python media port: {reason}"
    try:
        media = NativeMedia(path)
    except (OSError, AttributeError) as exc:
        if mode == "native":
            raise OSError(f"sip.media_port is native but {path} does not load: {exc}") from exc
        log.warning("native media port not used: %s does not load: %s", path, exc)
        return None, f"Python media port: {path} does not load"
    return media, f"native media port ({path})"
