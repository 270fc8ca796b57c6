"""gateway.media.playout: what the caller hears, and where barge-in truncates."""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from gateway.media.formats import PCM16_8K_FRAME_BYTES, SILENCE_PCM16_8K_FRAME
from gateway.media.playout import PlayedState, PlayoutBuffer, PlayoutStats
from tests.conftest import scaled

pytestmark = pytest.mark.unit

FRAME = PCM16_8K_FRAME_BYTES
BYTES_PER_MS = 16


def audio(ms: int, fill: int = 0x11) -> bytes:
    """``ms`` of PCM16 8 kHz audio that never looks like silence."""
    return bytes([fill]) * (ms * BYTES_PER_MS)


def push_in_chunks(buf: PlayoutBuffer, item_id: str, data: bytes, seed: int = 0) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = 2 * rng.randrange(1, 700)  # whole samples, sizes unrelated to frames
        buf.push(item_id, 0, data[pos : pos + size])
        pos += size


def idle(buf: PlayoutBuffer) -> bool:
    # A function, not the property, so that mypy does not narrow it between asserts.
    return buf.is_idle


def expecting(buf: PlayoutBuffer) -> bool:
    return buf.expecting_audio


def pop(buf: PlayoutBuffer, n: int) -> list[bytes]:
    return [buf.pop_frame() for _ in range(n)]


def test_empty_buffer_pops_silence_and_counts_it_as_idle() -> None:
    buf = PlayoutBuffer()
    frames = pop(buf, 3)
    assert frames == [SILENCE_PCM16_8K_FRAME] * 3
    assert idle(buf)
    assert buf.current() is None
    assert buf.flush() is None
    assert buf.stats == PlayoutStats(
        frames_played=0,
        silence_frames_idle=3,
        silence_frames_underrun=0,
        frames_dropped=0,
        frames_flushed=0,
        late_bytes_discarded=0,
    )


def test_played_ms_is_exact_across_items() -> None:
    buf = PlayoutBuffer()
    push_in_chunks(buf, "item_a", audio(1010, 0x11), seed=1)  # 50.5 frames
    buf.mark_done("item_a")
    push_in_chunks(buf, "item_b", audio(500, 0x22), seed=2)
    buf.mark_done("item_b")
    assert buf.buffered_ms == 1020 + 500  # A's half frame was padded to a whole one

    pop(buf, 10)
    assert buf.current() == PlayedState("item_a", 0, played_ms=200, received_ms=1010)
    frames = pop(buf, 41)
    # The 51st frame is A's last 10 ms followed by 10 ms of padding silence.
    assert frames[-1] == audio(10, 0x11) + bytes(160)
    # A is played out (and counted as 1010 ms, not 1020); the next frame belongs to B.
    assert buf.current() == PlayedState("item_b", 0, played_ms=0, received_ms=500)
    pop(buf, 7)
    assert buf.current() == PlayedState("item_b", 0, played_ms=140, received_ms=500)
    assert buf.stats.frames_played == 58
    assert buf.stats.silence_frames_idle == 0
    assert buf.stats.silence_frames_underrun == 0


def test_flush_mid_item_reports_played_ms_and_silences_the_next_pop() -> None:
    buf = PlayoutBuffer()
    push_in_chunks(buf, "item_x", audio(3000), seed=3)
    buf.mark_done("item_x")
    assert not idle(buf)
    pop(buf, 37)

    state = buf.flush()

    assert state is not None
    assert (state.item_id, state.content_index, state.received_ms) == ("item_x", 0, 3000)
    assert abs(state.played_ms - 37 * 20) <= 20
    assert state.audio_end_ms == state.played_ms
    assert buf.pop_frame() == SILENCE_PCM16_8K_FRAME
    assert idle(buf)
    assert buf.buffered_ms == 0
    stats = buf.stats
    assert stats.frames_flushed == 150 - 37
    assert stats.silence_frames_idle == 1


def test_flush_while_item_still_streaming_discards_late_audio() -> None:
    buf = PlayoutBuffer()
    buf.push("item_x", 0, audio(200))
    buf.push("item_x", 0, audio(5))  # partial frame, waiting for more
    pop(buf, 4)

    state = buf.flush()

    assert state == PlayedState("item_x", 0, played_ms=80, received_ms=205)
    # Deltas already in flight for the interrupted item must not reach the caller.
    buf.push("item_x", 0, audio(400))
    buf.mark_done("item_x")
    assert pop(buf, 3) == [SILENCE_PCM16_8K_FRAME] * 3
    assert buf.stats.late_bytes_discarded == 400 * BYTES_PER_MS
    # The next response plays normally.
    buf.push("item_y", 0, audio(40, 0x33))
    assert pop(buf, 2) == [audio(20, 0x33)] * 2


def test_flush_with_an_underrun_mid_item_reports_that_item() -> None:
    buf = PlayoutBuffer()
    buf.push("item_x", 0, audio(60))
    frames = pop(buf, 5)
    assert frames[3:] == [SILENCE_PCM16_8K_FRAME] * 2
    assert buf.stats.silence_frames_underrun == 2  # waiting for the rest of the item
    assert buf.flush() == PlayedState("item_x", 0, played_ms=60, received_ms=60)


def test_flush_before_the_first_whole_frame_reports_zero_played() -> None:
    buf = PlayoutBuffer()
    buf.push("item_x", 0, audio(10))
    assert buf.flush() == PlayedState("item_x", 0, played_ms=0, received_ms=10)


def test_flush_after_an_item_played_out_reports_nothing() -> None:
    buf = PlayoutBuffer()
    buf.push("item_x", 0, audio(40))
    buf.mark_done("item_x")
    pop(buf, 3)
    assert buf.flush() is None


def test_partial_frame_waits_for_more_audio_until_done() -> None:
    buf = PlayoutBuffer()
    buf.push("item_a", 0, audio(15, 0x11))
    assert buf.pop_frame() == SILENCE_PCM16_8K_FRAME
    buf.push("item_a", 0, audio(15, 0x22))
    assert buf.pop_frame() == audio(15, 0x11) + audio(5, 0x22)
    assert buf.pop_frame() == SILENCE_PCM16_8K_FRAME  # 10 ms pending, item not done
    buf.mark_done("item_a")
    assert buf.pop_frame() == audio(10, 0x22) + bytes(160)
    assert buf.flush() is None
    assert buf.stats.frames_played == 2


def test_new_item_pads_the_previous_items_partial_frame() -> None:
    buf = PlayoutBuffer()
    buf.push("item_a", 0, audio(30, 0x11))
    buf.push("item_b", 0, audio(40, 0x22))
    frames = pop(buf, 4)
    assert frames == [
        audio(20, 0x11),
        audio(10, 0x11) + bytes(160),
        audio(20, 0x22),
        audio(20, 0x22),
    ]
    assert buf.current() == PlayedState("item_b", 0, played_ms=40, received_ms=40)
    buf.mark_done("item_a")
    buf.mark_done("item_b")
    assert idle(buf)


def test_content_parts_are_tracked_separately() -> None:
    buf = PlayoutBuffer()
    buf.push("item_a", 0, audio(40))
    buf.push("item_a", 1, audio(60))
    pop(buf, 3)
    assert buf.current() == PlayedState("item_a", 1, played_ms=20, received_ms=60)
    buf.mark_done("item_a")  # closes both parts
    pop(buf, 2)
    assert idle(buf)


def test_overflow_drops_the_newest_audio_and_counts_it() -> None:
    buf = PlayoutBuffer(capacity_ms=200)
    assert buf.capacity_ms == 200
    buf.push("item_a", 0, audio(300, 0x11))
    assert buf.buffered_ms == 200
    assert buf.stats.frames_dropped == 5
    pop(buf, 2)
    # Room freed up, but the rest of the overflowed item is dropped too: no gap mid-sentence.
    buf.push("item_a", 0, audio(100, 0x11))
    assert buf.buffered_ms == 160
    assert buf.stats.frames_dropped == 10
    buf.mark_done("item_a")
    # The next item is queued normally.
    buf.push("item_b", 0, audio(40, 0x22))
    frames = pop(buf, 10)
    assert frames[:8] == [audio(20, 0x11)] * 8  # the oldest audio, in order, was kept
    assert frames[8:] == [audio(20, 0x22)] * 2
    buf.mark_done("item_b")
    assert buf.flush() is None  # B played out completely and is the last item
    assert buf.stats.frames_dropped == 10


def test_overflowed_item_is_reported_after_it_plays_out() -> None:
    buf = PlayoutBuffer(capacity_ms=100)
    buf.push("item_a", 0, audio(160))
    buf.mark_done("item_a")
    pop(buf, 6)
    assert idle(buf)
    assert buf.flush() == PlayedState("item_a", 0, played_ms=100, received_ms=160)


def test_drained_signal_after_the_last_frame_of_the_last_item() -> None:
    calls: list[str] = []
    buf = PlayoutBuffer(on_drained=lambda: calls.append(threading.current_thread().name))
    assert idle(buf)
    buf.push("item_a", 0, audio(60))
    assert not idle(buf)
    buf.mark_done("item_a")
    pop(buf, 2)
    assert calls == []
    assert not idle(buf)
    pop(buf, 1)  # the last frame leaves the buffer
    assert calls == [threading.current_thread().name]
    assert idle(buf)
    pop(buf, 2)
    assert len(calls) == 1  # once per busy -> idle transition
    assert buf.stats.silence_frames_idle == 2


def test_drained_signal_from_mark_done_after_an_underrun() -> None:
    calls: list[None] = []
    buf = PlayoutBuffer(on_drained=lambda: calls.append(None))
    buf.push("item_a", 0, audio(20))
    pop(buf, 3)
    assert calls == []  # not done: more audio may come
    assert buf.stats.silence_frames_underrun == 2
    buf.mark_done("item_a")
    assert calls == [None]
    assert idle(buf)


def test_drained_signal_on_flush() -> None:
    calls: list[None] = []
    buf = PlayoutBuffer(on_drained=lambda: calls.append(None))
    buf.flush()
    assert calls == []  # already idle
    buf.push("item_a", 0, audio(100))
    buf.flush()
    assert calls == [None]


def test_failing_drained_callback_never_reaches_the_clock_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    buf = PlayoutBuffer(on_drained=boom)
    buf.push("item_a", 0, audio(20))
    buf.mark_done("item_a")
    with caplog.at_level(logging.ERROR, logger="gateway.media.playout"):
        assert buf.pop_frame() == audio(20)
    assert "on_drained" in caplog.text


def test_mark_done_of_unknown_item_is_ignored() -> None:
    buf = PlayoutBuffer()
    buf.mark_done("nope")
    assert idle(buf)


def test_audio_after_mark_done_is_discarded() -> None:
    buf = PlayoutBuffer()
    buf.push("item_a", 0, audio(20))
    buf.mark_done("item_a")
    buf.push("item_a", 0, audio(20))
    assert buf.buffered_ms == 20
    assert buf.stats.late_bytes_discarded == 20 * BYTES_PER_MS


def test_invalid_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="capacity_ms"):
        PlayoutBuffer(capacity_ms=10)
    with pytest.raises(ValueError, match="even length"):
        PlayoutBuffer().push("item_a", 0, b"\x01\x02\x03")


def test_producer_and_consumer_threads_lose_and_duplicate_nothing() -> None:
    rng = random.Random(4)
    # Two items of non-zero bytes, so padding and silence (zeros) are recognisable.
    items = {
        "item_a": bytes(rng.randrange(1, 256) for _ in range(1000 * FRAME + 100)),
        "item_b": bytes(rng.randrange(1, 256) for _ in range(500 * FRAME + 38)),
    }
    expected_frames = 1001 + 501
    buf = PlayoutBuffer()
    received: list[bytes] = []
    failures: list[BaseException] = []
    deadline = time.monotonic() + scaled(20)

    start = threading.Barrier(2, timeout=scaled(10))

    def produce() -> None:
        try:
            start.wait()
            for index, (item_id, data) in enumerate(items.items()):
                chunks = random.Random(index)
                pos = 0
                while pos < len(data):
                    size = 2 * chunks.randrange(1, 700)
                    buf.push(item_id, 0, data[pos : pos + size])
                    pos += size
                    time.sleep(0)  # interleave with the consumer as much as possible
                buf.mark_done(item_id)
        except BaseException as exc:  # reported to the test thread below
            failures.append(exc)

    def consume() -> None:
        try:
            start.wait()
            while len(received) < expected_frames and time.monotonic() < deadline:
                frame = buf.pop_frame()
                if len(frame) != FRAME:
                    raise AssertionError(f"frame of {len(frame)} bytes")
                if frame == SILENCE_PCM16_8K_FRAME:
                    time.sleep(0)  # let the producer run, like a clock tick would
                else:
                    received.append(frame)
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=produce, name="producer"),
        threading.Thread(target=consume, name="consumer"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=scaled(30))
        assert not thread.is_alive()

    assert failures == []
    assert len(received) == expected_frames
    played = b"".join(received)
    a_len, b_len = len(items["item_a"]), len(items["item_b"])
    a_frames = 1001 * FRAME
    assert played[:a_len] == items["item_a"]
    assert played[a_len:a_frames] == bytes(a_frames - a_len)
    assert played[a_frames : a_frames + b_len] == items["item_b"]
    assert played[a_frames + b_len :] == bytes(len(played) - a_frames - b_len)
    assert buf.stats.frames_played == expected_frames
    assert buf.stats.frames_dropped == 0
    assert idle(buf)


def test_flushes_racing_the_clock_thread_keep_the_books_straight() -> None:
    buf = PlayoutBuffer(capacity_ms=400)
    stop = threading.Event()
    failures: list[BaseException] = []
    popped: list[int] = [0]

    def consume() -> None:
        try:
            while not stop.is_set():
                if len(buf.pop_frame()) != FRAME:
                    raise AssertionError("short frame")
                popped[0] += 1
                time.sleep(0)
        except BaseException as exc:
            failures.append(exc)

    consumer = threading.Thread(target=consume, name="consumer")
    consumer.start()
    states: list[PlayedState] = []
    try:
        for n in range(300):
            item_id = f"item_{n}"
            buf.push(item_id, 0, audio(130))
            time.sleep(0)
            buf.push(item_id, 0, audio(70))
            if n % 3:
                buf.mark_done(item_id)
            time.sleep(0)
            state = buf.flush()
            if state is not None:
                states.append(state)
    finally:
        stop.set()
        consumer.join(timeout=scaled(10))
    assert not consumer.is_alive()
    assert failures == []
    assert states
    for state in states:
        assert 0 <= state.played_ms <= state.received_ms <= 200
        assert state.played_ms % 20 == 0 or state.played_ms == state.received_ms
    stats = buf.stats
    assert (
        stats.frames_played + stats.silence_frames_idle + stats.silence_frames_underrun
        == (popped[0])
    )
    assert idle(buf)


# Batch consumers (the native media port): take now, confirm when played --------------------


def test_taken_frames_are_in_flight_until_confirmed_played() -> None:
    drained: list[int] = []
    buf = PlayoutBuffer(on_drained=lambda: drained.append(1))
    data = audio(100, 0x21)  # five frames
    buf.push("item_a", 0, data)
    buf.mark_done("item_a")
    frames = buf.take_frames(3)
    assert b"".join(frames) == data[: 3 * FRAME]
    assert buf.frames_in_flight == 3
    assert buf.buffered_ms == 40
    # Taken is not played: the caller heard nothing yet.
    assert buf.current() == PlayedState("item_a", 0, played_ms=0, received_ms=100)
    buf.confirm_played(2)
    assert buf.current() == PlayedState("item_a", 0, played_ms=40, received_ms=100)
    assert buf.frames_in_flight == 1
    assert b"".join(buf.take_frames(10)) == data[3 * FRAME :]
    assert not idle(buf)
    buf.confirm_played(4)
    assert idle(buf)
    assert drained == [1]
    assert buf.stats.frames_played == 5
    assert buf.current() is None


def test_barge_in_truncates_at_the_frames_confirmed_not_the_frames_taken() -> None:
    buf = PlayoutBuffer()
    buf.push("item_a", 0, audio(200))
    buf.take_frames(5)
    buf.confirm_played(2)  # the port played 2 of the 5 in its ring; its ring is then cleared
    state = buf.flush()
    assert state == PlayedState("item_a", 0, played_ms=40, received_ms=200)
    assert buf.stats.frames_flushed == 8  # 3 in flight + 5 still queued
    assert buf.frames_in_flight == 0
    assert idle(buf)


def test_expecting_audio_is_true_while_an_item_is_open_or_audio_is_queued() -> None:
    buf = PlayoutBuffer()
    assert not expecting(buf)
    buf.push("item_a", 0, audio(30))  # one whole frame and a partial one
    assert expecting(buf)
    buf.take_frames(5)
    assert expecting(buf)  # still open: more audio may come
    buf.mark_done("item_a")  # pads and queues the partial frame
    assert expecting(buf)
    buf.take_frames(5)
    assert not expecting(buf)  # done and nothing queued: silence now is idle
    assert not idle(buf)  # but two frames are still in flight
    buf.confirm_played(2)
    assert idle(buf)


def test_take_frames_of_two_items_credits_each_its_own_frames() -> None:
    buf = PlayoutBuffer()
    buf.push("item_a", 0, audio(40, 0x31))
    buf.mark_done("item_a")
    buf.push("item_b", 0, audio(60, 0x32))
    frames = buf.take_frames(4)
    assert [f[0] for f in frames] == [0x31, 0x31, 0x32, 0x32]
    buf.confirm_played(3)
    assert buf.current() == PlayedState("item_b", 0, played_ms=20, received_ms=60)
