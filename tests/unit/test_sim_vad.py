"""Simulator energy VAD on synthetic signals: onsets, padding, silence, threshold, chunking."""

from __future__ import annotations

import random

import numpy as np
import pytest

from gateway.sim.vad import (
    START_FRAMES,
    EnergyVad,
    SpeechStarted,
    SpeechStopped,
    VadSettings,
)

pytestmark = pytest.mark.unit

RATES = [8000, 24000]
TOLERANCE_MS = 20


def signal(
    rate: int, total_ms: int, bursts: list[tuple[int, int]], amplitude: float = 8000
) -> bytes:
    """``total_ms`` of silence with 400 Hz tone bursts over each ``(start_ms, end_ms)``."""
    x = np.zeros(total_ms * rate // 1000)
    for start, end in bursts:
        a, b = start * rate // 1000, end * rate // 1000
        t = np.arange(b - a) / rate
        x[a:b] = amplitude * np.sin(2 * np.pi * 400 * t)
    return x.astype("<i2").tobytes()


Event = SpeechStarted | SpeechStopped


def run(vad: EnergyVad, pcm: bytes, chunk: int | None = None) -> list[Event]:
    if chunk is None:
        return vad.feed(pcm)
    events: list[Event] = []
    for i in range(0, len(pcm), chunk):
        events += vad.feed(pcm[i : i + chunk])
    return events


def speaking(vad: EnergyVad) -> bool:
    return vad.speaking  # a call, so mypy does not narrow the property across reset()


def near(actual: int, expected: int) -> bool:
    return abs(actual - expected) <= TOLERANCE_MS


def one_turn(events: list[Event]) -> tuple[int, int]:
    assert len(events) == 2, events
    start, stop = events
    assert isinstance(start, SpeechStarted) and isinstance(stop, SpeechStopped)
    return start.audio_start_ms, stop.audio_end_ms


def test_settings_map_threshold_to_dbfs() -> None:
    assert VadSettings().level_dbfs == pytest.approx(-40.0)
    assert VadSettings(threshold=0.0).level_dbfs == pytest.approx(-70.0)
    assert VadSettings(threshold=1.0).level_dbfs == pytest.approx(-10.0)
    assert VadSettings(threshold=0.9).level_dbfs > VadSettings(threshold=0.3).level_dbfs


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1.1},
        {"threshold": -0.1},
        {"prefix_padding_ms": -1},
        {"silence_duration_ms": -1},
    ],
)
def test_settings_reject_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VadSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, 11025, -8000])
def test_bad_sample_rate(rate: int) -> None:
    with pytest.raises(ValueError):
        EnergyVad(VadSettings(), rate)


@pytest.mark.parametrize("rate", RATES)
def test_silence_gives_no_events_and_counts_position(rate: int) -> None:
    vad = EnergyVad(VadSettings(), rate)
    assert run(vad, signal(rate, 3000, []), chunk=333) == []
    assert vad.position_ms == 3000
    assert not vad.speaking


@pytest.mark.parametrize("rate", RATES)
def test_tone_burst_onset_and_end_with_defaults(rate: int) -> None:
    vad = EnergyVad(VadSettings(), rate)
    start, end = one_turn(run(vad, signal(rate, 4000, [(1003, 2007)])))
    assert near(start, 1003 - 300)
    assert near(end, 2007 + 500)  # end of speech plus the silence, as the API reports it


@pytest.mark.parametrize("rate", RATES)
def test_events_come_when_enough_audio_arrived(rate: int) -> None:
    vad = EnergyVad(VadSettings(), rate)
    pcm = signal(rate, 4000, [(1000, 2000)])
    per_ms = len(pcm) // 4000
    assert vad.feed(pcm[: 1020 * per_ms]) == []  # two speech frames: not yet started
    started = vad.feed(pcm[1020 * per_ms : 1040 * per_ms])
    assert len(started) == 1 and isinstance(started[0], SpeechStarted)
    assert vad.speaking
    assert vad.feed(pcm[1040 * per_ms : 2400 * per_ms]) == []  # 400 ms of silence: not yet
    stopped = vad.feed(pcm[2400 * per_ms :])
    assert stopped == [SpeechStopped(2500)]
    assert not vad.speaking


@pytest.mark.parametrize("rate", RATES)
def test_threshold_is_honoured(rate: int) -> None:
    quiet = signal(rate, 3000, [(1000, 2000)], amplitude=1000)  # about -33 dBFS
    assert run(EnergyVad(VadSettings(threshold=0.9), rate), quiet) == []
    assert len(run(EnergyVad(VadSettings(threshold=0.3), rate), quiet)) == 2
    assert len(run(EnergyVad(VadSettings(threshold=0.5), rate), quiet)) == 2
    very_quiet = signal(rate, 3000, [(1000, 2000)], amplitude=100)  # about -53 dBFS
    assert run(EnergyVad(VadSettings(threshold=0.5), rate), very_quiet) == []


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("padding", [0, 100, 500])
def test_prefix_padding(rate: int, padding: int) -> None:
    vad = EnergyVad(VadSettings(prefix_padding_ms=padding), rate)
    start, _ = one_turn(run(vad, signal(rate, 3000, [(1200, 1800)])))
    assert near(start, 1200 - padding)


@pytest.mark.parametrize("rate", RATES)
def test_prefix_padding_is_clamped_at_session_start(rate: int) -> None:
    vad = EnergyVad(VadSettings(prefix_padding_ms=300), rate)
    start, _ = one_turn(run(vad, signal(rate, 2000, [(100, 600)])))
    assert start == 0


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("silence", [0, 200, 1000])
def test_silence_duration(rate: int, silence: int) -> None:
    vad = EnergyVad(VadSettings(silence_duration_ms=silence), rate)
    _, end = one_turn(run(vad, signal(rate, 4000, [(1000, 2000)])))
    assert near(end, 2000 + silence)


@pytest.mark.parametrize("rate", RATES)
def test_pause_shorter_than_silence_duration_keeps_one_turn(rate: int) -> None:
    pcm = signal(rate, 4000, [(1000, 1500), (1800, 2300)])
    start, end = one_turn(run(EnergyVad(VadSettings(silence_duration_ms=500), rate), pcm))
    assert near(start, 700) and near(end, 2800)


@pytest.mark.parametrize("rate", RATES)
def test_longer_pause_splits_turns_and_padding_stays_in_the_new_buffer(rate: int) -> None:
    pcm = signal(rate, 4000, [(1000, 1500), (1800, 2300)])
    events = run(EnergyVad(VadSettings(silence_duration_ms=200), rate), pcm)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * 2
    first_stop, second_start = events[1], events[2]
    assert isinstance(first_stop, SpeechStopped) and isinstance(second_start, SpeechStarted)
    assert near(first_stop.audio_end_ms, 1700)
    # 300 ms of padding would reach back to 1500 ms, inside the previous turn's audio.
    assert second_start.audio_start_ms == first_stop.audio_end_ms


@pytest.mark.parametrize("rate", RATES)
def test_syllable_like_bursts_form_one_turn(rate: int) -> None:
    bursts = [(1000 + i * 180, 1000 + i * 180 + 120) for i in range(10)]
    start, end = one_turn(run(EnergyVad(VadSettings(), rate), signal(rate, 4000, bursts)))
    assert near(start, 700)
    assert near(end, bursts[-1][1] + 500)


@pytest.mark.parametrize("rate", RATES)
def test_short_click_does_not_start_speech(rate: int) -> None:
    click_ms = (START_FRAMES - 1) * 10
    assert run(EnergyVad(VadSettings(), rate), signal(rate, 2000, [(1000, 1000 + click_ms)])) == []
    assert len(run(EnergyVad(VadSettings(), rate), signal(rate, 2000, [(1000, 1040)]))) == 2


@pytest.mark.parametrize("rate", RATES)
def test_arbitrary_chunking_gives_identical_events(rate: int) -> None:
    pcm = signal(rate, 6000, [(500, 1400), (1500, 1600), (2500, 3100), (4000, 4100)])
    whole = run(EnergyVad(VadSettings(silence_duration_ms=300), rate), pcm)
    assert len(whole) == 6
    for chunk in (1, 3, 160, 320, 479, 961, 4801):
        assert run(EnergyVad(VadSettings(silence_duration_ms=300), rate), pcm, chunk) == whole
    rng = random.Random(7)
    vad = EnergyVad(VadSettings(silence_duration_ms=300), rate)
    events: list[Event] = []
    i = 0
    while i < len(pcm):
        n = rng.randint(1, 2000)
        events += vad.feed(pcm[i : i + n])
        i += n
    assert events == whole
    assert vad.position_ms == 6000


def test_both_rates_give_the_same_events() -> None:
    bursts = [(700, 1650), (2900, 3333)]
    results = [run(EnergyVad(VadSettings(), r), signal(r, 5000, bursts)) for r in RATES]
    assert results[0] == results[1]


@pytest.mark.parametrize("rate", RATES)
def test_reset_drops_turn_keeps_session_time(rate: int) -> None:
    vad = EnergyVad(VadSettings(), rate)
    pcm = signal(rate, 5000, [(1000, 2000), (3000, 3500)])
    per_ms = len(pcm) // 5000
    events = vad.feed(pcm[: 1500 * per_ms + 7])
    assert len(events) == 1 and speaking(vad)
    vad.reset()
    assert not speaking(vad)
    # The rest of the first burst restarts a turn, but its padding stops at the reset point.
    events = vad.feed(pcm[1500 * per_ms + 7 :])
    assert vad.position_ms == 5000
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * 2
    assert isinstance(events[0], SpeechStarted)
    assert 1500 <= events[0].audio_start_ms <= 1500 + TOLERANCE_MS
    assert isinstance(events[2], SpeechStarted) and near(events[2].audio_start_ms, 2700)
    assert isinstance(events[3], SpeechStopped) and near(events[3].audio_end_ms, 4000)


def test_semantic_eagerness_maps_to_silence_timeouts() -> None:
    pcm = signal(24000, 5000, [(1000, 2000)])
    ends = {}
    for eagerness in ("low", "medium", "high", "auto"):
        vad = EnergyVad.semantic(eagerness, 24000)
        ends[eagerness] = one_turn(run(vad, pcm))[1]
    assert ends["high"] < ends["medium"] == ends["auto"] < ends["low"]
    assert near(ends["high"], 2400) and near(ends["medium"], 2700) and near(ends["low"], 3200)
    with pytest.raises(ValueError):
        EnergyVad.semantic("eager", 24000)


def test_for_turn_detection() -> None:
    assert EnergyVad.for_turn_detection(None, 8000) is None
    td = {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 100}
    vad = EnergyVad.for_turn_detection({**td, "silence_duration_ms": 250}, 8000)
    assert vad is not None and vad.sample_rate == 8000
    assert vad.settings == VadSettings(
        threshold=0.7, prefix_padding_ms=100, silence_duration_ms=250
    )
    semantic = EnergyVad.for_turn_detection({"type": "semantic_vad", "eagerness": "high"}, 24000)
    assert semantic is not None and semantic.settings.silence_duration_ms == 400
