"""A bridged call's stereo recording, loop side: ask the SIP side for it, then merge the tracks.

For a route with ``recording:``, the session asks the SIP adapter (before answering) to record
the leg into two mono WAV tracks (:mod:`gateway.sip.recorder`); once the leg has ended, the
recorders are closed and :meth:`CallRecording.finish` merges the tracks into one stereo WAV,
caller left and agent right (:mod:`gateway.media.stereo`), in a worker thread so the event
loop never waits on the disk. Files are named by UTC time and call id (never by a number),
``20261201T231500Z-leg7-3fa2c1.wav`` in ``calls.recordings_dir``. What happened goes into the
call record's ``recording``: the file, or ``{"error": ...}``. A recording that fails never
breaks the call.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from gateway.dialplan.schema import Recording
from gateway.media.stereo import SAMPLE_WIDTH, interleave

#: The conference bridge's clock rate: the rate of both tracks and of the stereo file.
SAMPLE_RATE: Final = 8000
#: How long the tracks may take to close after the leg ended: pjmedia's bridge removes a
#: port on its clock thread, so a recorder's file is final a tick or two after its destroy.
CLOSE_WAIT_S: Final = 2.0
_CLOSE_POLL_S: Final = 0.05


@runtime_checkable
class SupportsRecording(Protocol):
    """A SIP side that can record a leg (the real user agent; test fakes may not)."""

    def record(self, leg_id: int, caller_path: str, agent_path: str) -> None:
        """Record the leg's caller and agent sides into two mono WAV files."""


@dataclass(frozen=True)
class RecordingFiles:
    """The stereo file and the two mono tracks it is made of."""

    path: Path
    caller: Path
    agent: Path


def recording_files(directory: str, leg_id: int, started_at: float,
                    token: str | None = None) -> RecordingFiles:
    """Names for one call's recording in ``directory`` (time, call id and a random part)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_at))
    base = f"{stamp}-leg{leg_id}-{token or secrets.token_hex(3)}"
    folder = Path(directory)
    return RecordingFiles(folder / f"{base}.wav", folder / f".{base}.caller.wav",
                          folder / f".{base}.agent.wav")


#: What :func:`recording_files` names: stereo files and the hidden tracks they are made of.
_OURS: Final = re.compile(r"^\.?\d{8}T\d{6}Z-leg\d+-[0-9a-f]+(\.caller|\.agent)?\.wav$")


def prune_recordings(directory: str, older_than_s: float, now: float | None = None) -> int:
    """Delete the recordings in ``directory`` last written more than ``older_than_s`` ago.

    Only files named as :func:`recording_files` names them are touched (nothing else an
    operator keeps there); the count deleted is returned (blocking; a missing directory has
    none).
    """
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not _OURS.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def check_directory(directory: str) -> str | None:
    """Make the recordings directory; why it cannot hold recordings, or ``None`` (blocking)."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"calls.recordings_dir {directory}: cannot create it: {exc.strerror or exc}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"calls.recordings_dir {directory}: not writable by this user"
    return None


#: Frames of each track read, interleaved and written at a time (1 s): a long call's
#: recording is merged in bounded memory.
_MERGE_FRAMES: Final = SAMPLE_RATE


def _open_track(path: Path) -> wave.Wave_read:
    track = wave.open(str(path), "rb")
    if (track.getnchannels(), track.getsampwidth(), track.getframerate()) != \
            (1, SAMPLE_WIDTH, SAMPLE_RATE):
        track.close()
        raise ValueError(f"{path.name}: not mono 16-bit {SAMPLE_RATE} Hz")
    return track


def track_closed(path: Path) -> bool:
    """Whether the WAV at ``path`` is final: its RIFF size covers the whole file (blocking)."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return len(head) == 8 and head[:4] == b"RIFF" and \
        int.from_bytes(head[4:], "little") == size - 8


def merge_tracks(files: RecordingFiles) -> dict[str, Any]:
    """Write the stereo file from the two tracks, remove them, describe it (blocking).

    Raises:
        OSError: A track is missing or the file cannot be written.
        ValueError: A track is not mono PCM16 at :data:`SAMPLE_RATE` (``wave.Error`` too).
    """
    frames = 0
    try:
        with _open_track(files.caller) as caller, _open_track(files.agent) as agent, \
                wave.open(str(files.path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(SAMPLE_WIDTH)
            out.setframerate(SAMPLE_RATE)
            while True:
                left, right = caller.readframes(_MERGE_FRAMES), agent.readframes(_MERGE_FRAMES)
                if not left and not right:
                    break
                chunk = interleave(left, right)  # the shorter track padded with silence
                out.writeframes(chunk)
                frames += len(chunk) // (2 * SAMPLE_WIDTH)
    except BaseException:
        files.path.unlink(missing_ok=True)  # no half-written recording is left behind
        raise
    finally:
        for track in (files.caller, files.agent):
            track.unlink(missing_ok=True)
    return {"path": str(files.path), "format": "wav", "channels": 2,
            "sample_rate": SAMPLE_RATE, "duration_s": round(frames / SAMPLE_RATE, 3),
            "bytes": files.path.stat().st_size}


class CallRecording:
    """One call's recording from request to file (loop thread)."""

    def __init__(self, recording: Recording, directory: str, leg_id: int) -> None:
        self.recording = recording
        self.files = recording_files(directory, leg_id, time.time())
        self._requested = False
        self.error: str | None = None

    @property
    def consent(self) -> str | None:
        """The line the agent says first, or ``None``."""
        return self.recording.consent

    async def start(self, sip: object, leg_id: int) -> None:
        """Make the directory and ask ``sip`` to record the leg (before answering)."""
        if not isinstance(sip, SupportsRecording):
            self.error = "this SIP side cannot record calls"
            return
        self.error = await asyncio.to_thread(check_directory, str(self.files.path.parent))
        if self.error is not None:
            return
        sip.record(leg_id, str(self.files.caller), str(self.files.agent))
        self._requested = True

    async def finish(self, *, leg_ended: bool) -> dict[str, Any]:
        """The record's ``recording``: the merged file, or why there is none."""
        if self.error is not None:
            return {"error": self.error}
        if not self._requested:
            return {"error": "the call ended before its media was recorded"}
        if not leg_ended:  # the recorders may still be open: the tracks are not final
            return {"error": "the SIP leg did not end in time; recording tracks left at "
                             f"{self.files.caller.parent}"}
        if not await asyncio.to_thread(self.files.caller.exists):
            return {"error": "no media was recorded (the call's audio never started)"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_WAIT_S
        while not all([await asyncio.to_thread(track_closed, t)
                       for t in (self.files.caller, self.files.agent)]):
            if loop.time() > deadline:
                break  # merged as it is: reading it says what is wrong
            await asyncio.sleep(_CLOSE_POLL_S)
        try:
            return await asyncio.to_thread(merge_tracks, self.files)
        except (OSError, ValueError, wave.Error) as exc:
            return {"error": f"recording not saved: {exc}"}
