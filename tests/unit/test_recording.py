"""Call recordings: the ``recording:`` route field, the stereo merge and the files it writes."""

from __future__ import annotations

import os
import struct
import wave
from pathlib import Path

import pytest

from gateway.calls.recording import (
    SAMPLE_RATE,
    CallRecording,
    check_directory,
    merge_tracks,
    recording_files,
)
from gateway.dialplan import parse_dialplan
from gateway.dialplan.schema import Recording
from gateway.errors import ConfigError, ConfigErrors
from gateway.media.stereo import interleave, split

pytestmark = pytest.mark.unit

PLAN = """
agents:
  a:
    instructions: Hi.
routes:
  - name: r
    agent: a
{extra}
"""


def _pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def _errors(extra: str) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_dialplan(PLAN.format(extra=extra), "plan.yaml")
    return list(info.value.errors)


def test_unequal_tracks_interleave_caller_left_agent_right_padded_with_silence() -> None:
    stereo = interleave(_pcm(1, 2, 3), _pcm(-5))
    assert struct.unpack("<6h", stereo) == (1, -5, 2, 0, 3, 0)
    assert split(stereo) == (_pcm(1, 2, 3), _pcm(-5, 0, 0))
    assert interleave(_pcm(), _pcm(7, 8)) == _pcm(0, 7, 0, 8)
    assert interleave(b"\x01", b"") == b""  # a torn sample is dropped


def _write_mono(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as track:
        track.setnchannels(1)
        track.setsampwidth(2)
        track.setframerate(SAMPLE_RATE)
        track.writeframes(pcm)


def test_merge_writes_one_stereo_wav_and_removes_the_tracks(tmp_path: Path) -> None:
    files = recording_files(str(tmp_path), 7, 0.0, token="abc123")
    assert files.path.name == "19700101T000000Z-leg7-abc123.wav"
    _write_mono(files.caller, _pcm(*([1000] * 8000)))  # 1 s of caller
    _write_mono(files.agent, _pcm(*([-2000] * 4000)))  # 0.5 s of agent
    info = merge_tracks(files)
    assert info == {"path": str(files.path), "format": "wav", "channels": 2,
                    "sample_rate": 8000, "duration_s": 1.0,
                    "bytes": files.path.stat().st_size}
    assert not files.caller.exists() and not files.agent.exists()
    with wave.open(str(files.path), "rb") as out:
        assert (out.getnchannels(), out.getsampwidth(), out.getframerate()) == (2, 2, 8000)
        left, right = split(out.readframes(out.getnframes()))
    assert left == _pcm(*([1000] * 8000))
    assert right == _pcm(*([-2000] * 4000 + [0] * 4000))


def test_merge_of_a_missing_track_fails_and_leaves_no_track(tmp_path: Path) -> None:
    files = recording_files(str(tmp_path), 1, 0.0)
    _write_mono(files.agent, _pcm(1))
    with pytest.raises(OSError):
        merge_tracks(files)
    assert not files.agent.exists()


def test_recording_forms_parse() -> None:
    plan = parse_dialplan(PLAN.format(extra="    recording: true"), "plan.yaml")
    assert plan.routes[0].recording == Recording("wav", None)
    plan = parse_dialplan(PLAN.format(
        extra="    recording: {format: wav, consent: '  This call is recorded. '}"), "p.yaml")
    assert plan.routes[0].recording == Recording("wav", "This call is recorded.")
    plan = parse_dialplan(PLAN.format(extra="    recording: false"), "plan.yaml")
    assert plan.routes[0].recording is None


@pytest.mark.parametrize(("extra", "field", "reason"), [
    ("    recording: {format: ogg}", "routes[0].recording.format", "ogg is not available"),
    ("    recording: {format: mp3}", "routes[0].recording.format", "must be wav"),
    ("    recording: {consent: ''}", None, None),
    ("    recording: {consent: '   '}", "routes[0].recording.consent", "non-empty"),
    ("    recording: {volume: 3}", "routes[0].recording.volume", "unknown field"),
    ("    recording: yes please", "routes[0].recording", "must be true or"),
    ("    relay: true\n    recording: true", "routes[0].recording", "not available on relay"),
])
def test_recording_errors_name_file_line_and_field(extra: str, field: str | None,
                                                   reason: str | None) -> None:
    if field is None:  # an empty consent is no consent
        plan = parse_dialplan(PLAN.format(extra=extra), "plan.yaml")
        assert plan.routes[0].recording == Recording("wav", None)
        return
    errors = _errors(extra)
    line = 8 + extra.count("\n")  # of the recording: line
    assert [(e.source, e.line, e.field) for e in errors] == [("plan.yaml", line, field)]
    assert reason is not None and reason in errors[0].reason


def test_recording_on_a_reject_route_is_an_error() -> None:
    errors = _errors("  - name: deny\n    reject: 403\n    recording: true")
    assert [(e.line, e.field) for e in errors] == [(10, "routes[1].recording")]
    assert "agent routes only" in errors[0].reason


async def test_a_sip_side_that_cannot_record_gives_an_error_not_a_failed_call(
        tmp_path: Path) -> None:
    recording = CallRecording(Recording(), str(tmp_path / "rec"), 3)
    await recording.start(object(), 3)
    assert await recording.finish(leg_ended=True) == {
        "error": "this SIP side cannot record calls"}


async def test_a_leg_that_never_had_media_has_no_recording(tmp_path: Path) -> None:
    asked: list[tuple[int, str, str]] = []

    class Sip:
        def record(self, leg_id: int, caller_path: str, agent_path: str) -> None:
            asked.append((leg_id, caller_path, agent_path))

    recording = CallRecording(Recording(), str(tmp_path / "rec"), 3)
    await recording.start(Sip(), 3)
    assert (tmp_path / "rec").is_dir()
    assert asked == [(3, str(recording.files.caller), str(recording.files.agent))]
    result = await recording.finish(leg_ended=True)
    assert "no media was recorded" in result["error"]


def test_an_unusable_recordings_directory_is_named_in_the_error(tmp_path: Path) -> None:
    assert check_directory(str(tmp_path / "a" / "b")) is None
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    problem = check_directory(str(tmp_path / "file" / "rec"))
    assert problem is not None and problem.startswith(
        f"calls.recordings_dir {tmp_path / 'file' / 'rec'}: cannot create it")


def test_pruning_deletes_only_our_old_recordings(tmp_path: Path) -> None:
    from gateway.calls.recording import prune_recordings, recording_files

    now = 1_800_000_000.0
    old = recording_files(str(tmp_path), 3, now - 10 * 86400, token="abc123")
    new = recording_files(str(tmp_path), 4, now, token="def456")
    theirs = tmp_path / "notes.wav"
    for path in (old.path, old.caller, new.path, theirs):
        path.write_bytes(b"RIFF")
    for path in (old.path, old.caller, theirs):
        os.utime(path, (now - 10 * 86400, now - 10 * 86400))
    os.utime(new.path, (now - 60, now - 60))
    assert prune_recordings(str(tmp_path), 7 * 86400, now=now) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new.path.name, "notes.wav"])
    assert prune_recordings(str(tmp_path / "missing"), 1.0, now=now) == 0
