"""A call on a ``recording:`` route leaves a stereo WAV: the caller left, the agent right.

The real gateway, the pjsua2 test caller and the simulator on 127.0.0.1: the caller is silent
while the agent says the consent line and its greeting, then plays a 1 kHz tone; the file the
call record names must have the tone on the left only and the agent's speech on the right, and
the consent line must have been asked for before the greeting.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import wave
from pathlib import Path
from typing import Any

import pytest

from gateway.media.stereo import split
from gateway.sim.server import SimulatorServer
from tests.sip.gateway import Gateway, control_get, place_call, run_gateway, wait_until
from tests.support.audio import (
    dominant_frequency,
    rms_dbfs,
    silence_pcm16,
    speech_like,
    tone_pcm16,
    write_wav,
)

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]

CONSENT = "This call is recorded for quality."
GREETING = "Hello and welcome to the recorded line."
RECORDED = f"""
agents:
  greeter:
    instructions: You are a test agent that greets callers.
    greeting: {GREETING}
routes:
  - name: recorded
    agent: greeter
    recording:
      format: wav
      consent: {CONSENT}
"""

_SECOND = 16000  # bytes of one second of PCM16 at 8 kHz


def _record(log: str) -> dict[str, Any]:
    match = re.search(r"call record: (\{.*\})", log)
    assert match, "no call record in the gateway's log"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def _stored_recording(gw: Gateway) -> dict[str, Any] | None:
    try:
        call = control_get(gw, "/v1/calls/w1:1")["call"]
    except OSError:  # not ended yet (404) or not up
        return None
    record = call.get("record") or {}
    recording: dict[str, Any] | None = record.get("recording")
    return recording


def _read_recording(path: Path) -> tuple[list[str], int, tuple[int, int, int],
                                         tuple[bytes, bytes]]:
    """Files beside it, its size, (channels, width, rate) and its left and right tracks."""
    with wave.open(str(path), "rb") as wav:
        shape = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
        tracks = split(wav.readframes(wav.getnframes()))
    return [p.name for p in path.parent.iterdir()], path.stat().st_size, shape, tracks


@pytest.mark.parametrize("media_port", ["native", "python"])
async def test_a_recorded_call_is_a_stereo_wav_caller_left_agent_right(
        tmp_path: Path, media_port: str) -> None:
    play = tmp_path / "caller.wav"
    write_wav(play, silence_pcm16(5000) + tone_pcm16(1000, 2500, amplitude=0.3)
              + silence_pcm16(1000))
    recordings = tmp_path / "recordings"
    async with SimulatorServer() as sim, run_gateway(
            tmp_path, sim, RECORDED, calls={"recordings_dir": str(recordings)},
            sip={"media_port": media_port}) as gw:
        report = await place_call(gw, tmp_path, play=play, duration_s=9)
        await gw.wait_log("call record: ", timeout_s=15)
        record = _record(gw.log())
        stored = await asyncio.to_thread(wait_until, lambda: _stored_recording(gw), 10.0,
                                         "the recording in the control API's call record")
        session = sim.sessions[0]
    assert report["status"] == 200
    asked = [str((e.get("response") or {}).get("instructions", ""))
             for e in session.received if e["type"] == "response.create"]
    assert len(asked) >= 2 and CONSENT in asked[0] and GREETING in asked[1]
    recording = record["recording"]
    assert stored == recording
    assert recording["format"] == "wav" and recording["channels"] == 2
    assert recording["sample_rate"] == 8000 and 7.0 < recording["duration_s"] < 12.0
    path = Path(recording["path"])
    assert path.parent == recordings
    names, size, shape, (left, right) = _read_recording(path)
    assert names == [path.name]  # the two mono tracks are gone
    assert size == recording["bytes"] and shape == (2, 2, 8000)
    # The first 4 s: the caller is silent, the agent speaks (consent, then greeting).
    assert rms_dbfs(left[:4 * _SECOND]) < -50
    assert rms_dbfs(right[:4 * _SECOND]) > -35 and speech_like(right[:4 * _SECOND])
    # 5.5-7 s: the caller's tone, on the left only.
    tone = left[int(5.5 * _SECOND):7 * _SECOND]
    assert rms_dbfs(tone) > -20 and abs(dominant_frequency(tone) - 1000) < 30
    assert abs(dominant_frequency(right[int(5.5 * _SECOND):7 * _SECOND]) - 1000) > 30 \
        or rms_dbfs(right[int(5.5 * _SECOND):7 * _SECOND]) < -50


async def test_a_recordings_directory_that_cannot_be_made_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the directory should be")
    (tmp_path / "dialplan.yaml").write_text(RECORDED)
    config = tmp_path / "gateway.yaml"
    config.write_text("sip:\n  transports: [{type: udp, host: 127.0.0.1, port: 0}]\n"
                      "dialplan: dialplan.yaml\ncalls: {recordings_dir: taken/recordings}\n"
                      "records: {enabled: false}\n")
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "gateway"), "run", "-c", str(config),
        "--run-seconds", "10", cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    text = err.decode()
    assert proc.returncode == 1, text[-2000:]
    assert f"calls.recordings_dir {tmp_path / 'taken' / 'recordings'}: cannot create it" in text
    assert "Traceback" not in text
