"""A call leg's recording on the conference bridge: two mono WAV recorders (sip thread only).

pjsua2's ``AudioMediaRecorder`` is a bridge port writing what it receives to a WAV file at
the bridge's clock (8 kHz, PCM16, mono). One is fed by the caller's port (the call's audio
media: what the caller says), the other by the port that plays the agent to the caller (the
Python :class:`~gateway.sip.legs.MediaPort` or the native port), so the bridge clocks both and
they stay sample-aligned. Slots are connected with ``pjsua_conf_connect`` through ctypes
because the native port is only a slot number to pjsua2. A recorder's WAV header is written
when it is destroyed, so :meth:`LegRecording.stop` must run before anyone reads the files; the
SIP user agent calls it when the leg's port goes, before it reports the leg ended. Nothing
here raises into pjsua2: a recording that fails says why in :attr:`LegRecording.error`, and the
call goes on.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from typing import Any

from gateway.sip._pj import error_text, native, pj

log = logging.getLogger("gateway.sip")


@functools.cache
def _conf_connect() -> Any:
    """``pjsua_conf_connect(source, sink)`` of the loaded binding, its signature declared."""
    connect = native().pjsua_conf_connect
    connect.argtypes = [ctypes.c_int, ctypes.c_int]
    connect.restype = ctypes.c_int
    return connect


class LegRecording:
    """Where one leg's two tracks go, and the recorders while they run (sip thread)."""

    def __init__(self, caller_path: str, agent_path: str) -> None:
        self.caller_path = caller_path
        self.agent_path = agent_path
        self.error: str | None = None
        self._recorders: list[Any] = []
        self.started = False

    def attach(self, caller_slot: int, agent_slot: int) -> None:
        """Start both recorders on the first call with media up (idempotent; never raises)."""
        if self.started or self.error is not None:
            return
        self.started = True
        try:
            connect = _conf_connect()
            for path, slot in ((self.caller_path, caller_slot), (self.agent_path, agent_slot)):
                recorder = pj.AudioMediaRecorder()
                recorder.createRecorder(path)
                self._recorders.append(recorder)
                status = connect(slot, recorder.getPortId())
                if status != 0:
                    raise OSError(f"pjsua_conf_connect({slot}) failed (pj status {status})")
        except Exception as exc:  # pjsua2.Error, OSError
            self.error = f"recording not started: {error_text(exc)}"
            log.warning("%s", self.error)
            self.stop()

    def stop(self) -> None:
        """Destroy the recorders, which closes their files (idempotent; never raises)."""
        recorders, self._recorders = self._recorders, []
        for recorder in recorders:
            try:
                pj.AudioMediaRecorder.__swig_destroy__(recorder)
            except Exception as exc:
                self.error = self.error or f"recording not closed: {error_text(exc)}"
