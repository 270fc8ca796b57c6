"""The Realtime client over real local WebSockets, against the Realtime API simulator."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from typing import Any

import pytest

from gateway.errors import RealtimeError
from gateway.media.g711 import ulaw_decode
from gateway.realtime import events as ev
from gateway.realtime.client import (
    RealtimeClient,
    RealtimeClosed,
    RealtimeConnectError,
    RealtimeConnectOptions,
)
from gateway.realtime.events import (
    AudioConfig,
    AudioFormat,
    AudioInputConfig,
    AudioOutputConfig,
    ServerVad,
    SessionConfig,
    StreamEvent,
)
from gateway.realtime.protocol import to_wire
from gateway.realtime.retry import RetryPolicy
from gateway.sim.server import SimulatorServer
from tests.conftest import scaled

pytestmark = pytest.mark.component

API_KEY = "sk-test-0123456789abcdef"
FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay_s=0.01, max_delay_s=0.05, jitter=0.5)
PHONE = SessionConfig(
    instructions="You are a phone agent. Be brief.",
    audio=AudioConfig(
        input=AudioInputConfig(format=AudioFormat.pcmu(), turn_detection=None),
        output=AudioOutputConfig(format=AudioFormat.pcmu(), voice="marin"),
    ),
)
SILENCE_40MS = b"\xff" * 320  # μ-law silence, 40 ms at 8 kHz


def options(sim: SimulatorServer, **overrides: Any) -> RealtimeConnectOptions:
    values: dict[str, Any] = {
        "url": sim.ws_url,
        "model": "gpt-realtime-2.1",
        "api_key": API_KEY,
        "retry": FAST_RETRY,
    }
    values.update(overrides)
    return RealtimeConnectOptions(**values)


async def next_of(client: RealtimeClient, cls: type[Any], seconds: float = 10.0) -> Any:
    """The next event of type ``cls``, skipping others."""
    async with asyncio.timeout(scaled(seconds)):
        while True:
            event = await client.recv()
            if isinstance(event, cls):
                return event


async def collect_until(
    client: RealtimeClient, cls: type[Any], seconds: float = 15.0
) -> list[StreamEvent]:
    """Every event up to and including the first of type ``cls``."""
    seen: list[StreamEvent] = []
    async with asyncio.timeout(scaled(seconds)):
        async for event in client:
            seen.append(event)
            if isinstance(event, cls):
                return seen
    raise AssertionError(f"stream ended before {cls.__name__}")


async def wait_appends(conn: Any, count: int) -> None:
    """Wait until the simulator session has received ``count`` audio appends."""
    async with asyncio.timeout(scaled(5)):
        while sum(e["type"] == "input_audio_buffer.append" for e in conn.received) < count:
            await conn.wait_for_received(
                "input_audio_buffer.append", after=len(conn.received), timeout=scaled(5)
            )


# --------------------------------------------------------------------------- options


def test_connect_url_and_headers() -> None:
    by_model = RealtimeConnectOptions(model="gpt-realtime-2.1", api_key=API_KEY)
    assert by_model.connect_url() == "wss://api.openai.com/v1/realtime?model=gpt-realtime-2.1"
    assert by_model.connect_headers() == [("Authorization", f"Bearer {API_KEY}")]
    by_call = RealtimeConnectOptions(
        url="wss://example.test/openai/realtime?api-version=2025-08-28",
        call_id="rtc_abc",
        headers={"api-key": "azure-secret"},
    )
    assert by_call.connect_url() == (
        "wss://example.test/openai/realtime?api-version=2025-08-28&call_id=rtc_abc"
    )
    assert by_call.connect_headers() == [("api-key", "azure-secret")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"model": "m", "call_id": "c"},
        {"model": ""},
        {"model": "m", "url": "https://api.openai.com/v1/realtime"},
        {"model": "m", "headers": {"OpenAI-Beta": "realtime=v1"}},
        {"model": "m", "send_queue_size": 0},
        {"model": "m", "open_timeout_s": 0},
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RealtimeConnectOptions(**kwargs)


def test_options_repr_hides_secrets() -> None:
    opts = RealtimeConnectOptions(
        url="wss://example.test/v1/realtime?api-key=query-secret",
        model="m",
        api_key=API_KEY,
        headers={"api-key": "header-secret"},
    )
    text = repr(opts)
    for secret in (API_KEY, "header-secret", "query-secret"):
        assert secret not in text
    assert "api-key" in text and "example.test" in text


# --------------------------------------------------------------------------- connecting


async def test_connects_by_model_with_bearer_and_no_beta_header(
    simulator: SimulatorServer,
) -> None:
    async with RealtimeClient(options(simulator), name="call:t1") as client:
        created = await next_of(client, ev.SessionCreated)
        assert created.session["model"] == "gpt-realtime-2.1"
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert {"call:t1:rt-send", "call:t1:rt-recv"} <= names
    conn = simulator.sessions[0]
    assert conn.query == {"model": "gpt-realtime-2.1"}
    assert not any(k.lower() == "openai-beta" for k in conn.headers)
    assert conn.sent[0]["type"] == "session.created"


async def test_custom_api_key_header_without_bearer(simulator: SimulatorServer) -> None:
    opts = options(simulator, api_key=None, headers={"api-key": "azure-style"})
    async with RealtimeClient(opts, name="call:azure") as client:
        await next_of(client, ev.SessionCreated)
    assert len(simulator.sessions) == 1


async def test_session_update_round_trip(simulator: SimulatorServer) -> None:
    async with RealtimeClient(options(simulator), name="call:t2") as client:
        await client.send(ev.SessionUpdate(PHONE, event_id="evt_cfg"))
        updated = await next_of(client, ev.SessionUpdated)
        assert client.effective_session == PHONE
    session = updated.session
    assert session["type"] == "realtime"
    assert session["instructions"] == PHONE.instructions
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["output"]["voice"] == "marin"
    received = simulator.sessions[0].received
    assert received[0] == json.loads(json.dumps(to_wire(ev.SessionUpdate(PHONE, "evt_cfg"))))


async def test_audio_append_reaches_the_server(simulator: SimulatorServer) -> None:
    chunk = bytes(range(256)) + SILENCE_40MS[:64]
    async with RealtimeClient(options(simulator), name="call:t3") as client:
        await client.send(ev.SessionUpdate(PHONE))
        assert client.send_audio(chunk)
        conn = await simulator.wait_for_session(0)
        appended = await conn.wait_for_received(
            "input_audio_buffer.append", timeout=scaled(5)
        )
        assert client.stats.audio_chunks_sent == 1
    assert base64.b64decode(appended["audio"]) == chunk
    types = [e["type"] for e in conn.received]
    assert types == ["session.update", "input_audio_buffer.append"]


async def test_response_audio_arrives_and_is_speech(simulator: SimulatorServer) -> None:
    async with RealtimeClient(options(simulator), name="call:t4") as client:
        await client.send(ev.SessionUpdate(PHONE))
        await next_of(client, ev.SessionUpdated)
        await client.send(ev.ResponseCreate())
        events = await collect_until(client, ev.ResponseDone)
    deltas = [e for e in events if isinstance(e, ev.ResponseOutputAudioDelta)]
    assert deltas, "no audio came back"
    done = events[-1]
    assert isinstance(done, ev.ResponseDone) and done.response.status == "completed"
    assert {d.response_id for d in deltas} == {done.response.id}
    pcm = ulaw_decode(b"".join(d.audio() for d in deltas))
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    assert len(samples) / 8000 > 0.5  # more than half a second of speech
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    assert rms > 300, f"returned audio is near silence (rms {rms:.0f})"


async def test_clean_close_ends_iteration(simulator: SimulatorServer) -> None:
    client = RealtimeClient(options(simulator), name="call:t5")
    async with client:
        await next_of(client, ev.SessionCreated)

        async def drain() -> list[StreamEvent]:
            return [event async for event in client]

        reader = asyncio.create_task(drain(), name="test:drain")
        await client.close()
        async with asyncio.timeout(scaled(5)):
            rest = await reader
        assert all(not isinstance(e, ev.Reconnected) for e in rest)
    assert not client.is_open
    conn = simulator.sessions[0]
    assert await conn.wait_closed(scaled(5)) == 1000
    with pytest.raises(RealtimeClosed) as info:
        await client.recv()
    assert info.value.close_code == 1000
    with pytest.raises(RealtimeClosed):
        await client.send(ev.ResponseCreate())
    assert client.send_audio(SILENCE_40MS) is False


# --------------------------------------------------------------------------- failures


async def test_401_is_not_retried(simulator: SimulatorServer) -> None:
    opts = options(simulator, api_key=None)
    with pytest.raises(RealtimeConnectError) as info:
        async with RealtimeClient(opts, name="call:t6"):
            pass
    assert info.value.http_status == 401
    assert info.value.retryable is False
    assert simulator.connect_attempts == 1
    assert simulator.sessions == []


async def test_503_is_retried_then_connects(simulator: SimulatorServer) -> None:
    simulator.fail_next_connects(2, status=503)
    async with RealtimeClient(options(simulator), name="call:t7") as client:
        await next_of(client, ev.SessionCreated)
    assert simulator.connect_attempts == 3
    assert len(simulator.sessions) == 1


async def test_retries_stop_after_max_attempts(simulator: SimulatorServer) -> None:
    simulator.fail_next_connects(10, status=503)
    with pytest.raises(RealtimeConnectError) as info:
        async with RealtimeClient(options(simulator), name="call:t8"):
            pass
    assert info.value.http_status == 503
    assert info.value.retryable is True
    assert simulator.connect_attempts == FAST_RETRY.max_attempts


async def test_refused_connection_is_retried_then_reported() -> None:
    # A port nobody listens on: bind one, learn its number, close it.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    opts = RealtimeConnectOptions(
        url=f"ws://127.0.0.1:{port}/v1/realtime", model="m", api_key=API_KEY, retry=FAST_RETRY
    )
    with pytest.raises(RealtimeConnectError) as info:
        async with RealtimeClient(opts, name="call:t9"):
            pass
    assert info.value.retryable is True
    assert info.value.http_status is None
    assert API_KEY not in str(info.value)


async def test_handshake_timeout_is_retried_then_reported() -> None:
    handlers: list[asyncio.Task[Any]] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        await reader.read()  # never answer the upgrade; returns when the client gives up
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    opts = RealtimeConnectOptions(
        url=f"ws://127.0.0.1:{port}/v1/realtime",
        model="m",
        api_key=API_KEY,
        open_timeout_s=0.1,
        retry=RetryPolicy(max_attempts=2, initial_delay_s=0.01, max_delay_s=0.01),
    )
    try:
        with pytest.raises(RealtimeConnectError) as info:
            async with RealtimeClient(opts, name="call:t9b"):
                pass
    finally:
        server.close()
        async with asyncio.timeout(scaled(5)):
            await asyncio.gather(*handlers)
            await server.wait_closed()
    assert info.value.retryable is True
    assert "timed out" in str(info.value)
    assert len(handlers) == 2


async def test_abnormal_close_raises_from_the_iterator(simulator: SimulatorServer) -> None:
    async with RealtimeClient(options(simulator), name="call:t10") as client:
        await next_of(client, ev.SessionCreated)
        await simulator.close_all(code=1011, reason="Simulated server failure.")
        with pytest.raises(RealtimeClosed) as info:
            await collect_until(client, ev.Reconnected)
    error = info.value
    assert isinstance(error, RealtimeError)
    assert (error.close_code, error.retryable) == (1011, True)
    assert error.close_reason == "Simulated server failure."
    assert API_KEY not in str(error)


async def test_policy_violation_is_not_reconnected(simulator: SimulatorServer) -> None:
    opts = options(simulator, reconnect=True)
    async with RealtimeClient(opts, name="call:t11") as client:
        await next_of(client, ev.SessionCreated)
        await simulator.close_all(code=1008, reason="Policy violation.")
        with pytest.raises(RealtimeClosed) as info:
            await collect_until(client, ev.Reconnected)
    assert (info.value.close_code, info.value.retryable) == (1008, False)
    assert len(simulator.sessions) == 1
    assert client.stats.reconnects == 0


async def test_undecodable_server_events_are_counted_and_skipped(
    simulator: SimulatorServer,
) -> None:
    async with RealtimeClient(options(simulator), name="call:t12") as client:
        await next_of(client, ev.SessionCreated)
        conn = simulator.sessions[0]
        conn.send([{"type": "response.done", "event_id": "event_bad"}])
        conn.send([{"type": "some.future_event", "event_id": "event_new", "x": 1}])
        unknown = await next_of(client, ev.UnknownServerEvent)
        assert unknown.type == "some.future_event"
        assert client.stats.protocol_errors == 1


# --------------------------------------------------------------------------- reconnect


async def test_reconnect_resends_session_before_audio(simulator: SimulatorServer) -> None:
    second = SessionConfig(
        audio=AudioConfig(input=AudioInputConfig(turn_detection=ServerVad(threshold=0.6)))
    )
    opts = options(simulator, reconnect=True)
    async with RealtimeClient(opts, name="call:t13") as client:
        await client.send(ev.SessionUpdate(PHONE))
        await next_of(client, ev.SessionUpdated)
        await client.send(ev.SessionUpdate(second))
        await next_of(client, ev.SessionUpdated)
        await simulator.close_all(code=1011, reason="Simulated server failure.")
        queued = [client.send_audio(bytes([i]) * 320) for i in range(5)]
        reconnected = await next_of(client, ev.Reconnected)
        created = await next_of(client, ev.SessionCreated)
        conn = await simulator.wait_for_session(1)
        await wait_appends(conn, 5)
        assert client.stats.reconnects == 1
    assert queued == [True] * 5
    assert (reconnected.attempt, reconnected.close_code) == (1, 1011)
    assert created.session["id"] != simulator.sessions[0].sent[0]["session"]["id"]
    received = conn.received
    assert received[0]["type"] == "session.update"
    effective = PHONE.merged(second)
    assert received[0]["session"] == effective.to_wire()
    assert received[0]["session"]["audio"]["input"]["turn_detection"]["threshold"] == 0.6
    assert received[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    appends = [e for e in received if e["type"] == "input_audio_buffer.append"]
    assert [base64.b64decode(e["audio"])[0] for e in appends] == [0, 1, 2, 3, 4]
    assert conn.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}


async def test_reconnect_gives_up_when_the_server_stays_down(
    simulator: SimulatorServer,
) -> None:
    opts = options(simulator, reconnect=True)
    async with RealtimeClient(opts, name="call:t14") as client:
        await next_of(client, ev.SessionCreated)
        simulator.fail_next_connects(10, status=503)
        await simulator.close_all(code=1012, reason="Service restart.")
        with pytest.raises(RealtimeConnectError) as info:
            await collect_until(client, ev.Reconnected)
    assert info.value.http_status == 503
    assert simulator.connect_attempts == 1 + FAST_RETRY.max_attempts


async def test_reconnect_after_tcp_abort(simulator: SimulatorServer) -> None:
    opts = options(simulator, reconnect=True)
    async with RealtimeClient(opts, name="call:t15") as client:
        await next_of(client, ev.SessionCreated)
        await simulator.close_all(abort=True)
        reconnected = await next_of(client, ev.Reconnected)
        await next_of(client, ev.SessionCreated)
    assert reconnected.close_code == 1006
    assert len(simulator.sessions) == 2


# --------------------------------------------------------------------------- overflow


async def test_send_audio_writes_at_once_and_keeps_order_behind_queued_events(
    simulator: SimulatorServer,
) -> None:
    opts = options(simulator, send_queue_size=4)
    async with RealtimeClient(opts, name="call:t15") as client:
        # An open connection with nothing queued: each chunk is written before send_audio
        # returns (the hot path), so ten in a row need no room in a 4-event outbox.
        accepted = [client.send_audio(bytes([i]) * 160) for i in range(10)]
        assert accepted == [True] * 10
        assert client.stats.audio_chunks_sent == 10
        assert client.stats.audio_chunks_dropped == 0
        # A control event still in the outbox: audio queues behind it, never overtakes it.
        await client.send(ev.InputAudioBufferClear())
        assert client.send_audio(bytes([10]) * 160)
        conn = await simulator.wait_for_session(0)
        await wait_appends(conn, 11)
    types = [e["type"] for e in conn.received]
    assert types == ["input_audio_buffer.append"] * 10 + [
        "input_audio_buffer.clear", "input_audio_buffer.append"]
    audio = [base64.b64decode(e["audio"])[0] for e in conn.received if "audio" in e]
    assert audio == list(range(11))


async def test_send_audio_drops_and_counts_when_the_connection_stalls() -> None:
    """A server that stops reading: TCP fills, the transport pauses writing, the hot path
    stops, the outbox fills, and then audio is refused and counted instead of waiting."""
    from websockets.asyncio.server import ServerConnection, serve

    stop = asyncio.Event()

    async def never_read(conn: ServerConnection) -> None:
        await stop.wait()
        conn.transport.abort()  # end the test quickly: no closing handshake behind 4 MB

    # max_queue=1: the server stops reading its socket once one message waits for it.
    async with serve(never_read, "127.0.0.1", 0, max_queue=1) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        opts = RealtimeConnectOptions(url=f"ws://127.0.0.1:{port}/v1/realtime", model="m",
                                      send_queue_size=4, ping_interval_s=None,
                                      close_timeout_s=1)
        chunk = b"\xff" * 65536
        try:
            async with RealtimeClient(opts, name="call:t16") as client:
                results = []
                for _ in range(2000):  # 2000 x 87 KiB of text: far more than loopback buffers
                    results.append(client.send_audio(chunk))
                    if results[-1] is False:
                        break
                    await asyncio.sleep(0)
                sent = client.stats.audio_chunks_sent
                dropped = client.stats.audio_chunks_dropped
                refused_again = client.send_audio(chunk)
                stop.set()  # the server drops the connection: no closing handshake to wait for
        finally:
            stop.set()
    assert results[-1] is False, "the connection never pushed back"
    queued = len(results) - 1 - sent
    # Queued once writes had to wait: the one rt-send holds while it waits, and the 4 of the
    # outbox; then the next chunk is refused and counted, and so is the one after it.
    assert (queued, dropped, refused_again) == (5, 1, False), (sent, queued, dropped)


async def test_control_events_wait_for_room(simulator: SimulatorServer) -> None:
    opts = options(simulator, send_queue_size=2)
    async with RealtimeClient(opts, name="call:t17") as client:
        for i in range(2):
            assert client.send_audio(bytes([i]) * 160)
        # The appends were written at once; the clear goes out after them, in order.
        await asyncio.wait_for(client.send(ev.InputAudioBufferClear()), scaled(5))
        conn = await simulator.wait_for_session(0)
        cleared = await conn.wait_for_received("input_audio_buffer.clear", timeout=scaled(5))
    assert cleared == {"type": "input_audio_buffer.clear"}
    assert [e["type"] for e in conn.received] == [
        "input_audio_buffer.append",
        "input_audio_buffer.append",
        "input_audio_buffer.clear",
    ]
    assert client.stats.audio_chunks_dropped == 0


async def test_client_cannot_be_used_before_entering() -> None:
    client = RealtimeClient(
        RealtimeConnectOptions(url="ws://127.0.0.1:9/v1/realtime", model="m"), name="call:x"
    )
    with pytest.raises(RuntimeError):
        client.send_audio(SILENCE_40MS)
    with pytest.raises(RuntimeError):
        await client.recv()


def test_every_wss_connect_shares_one_verifying_tls_context() -> None:
    import ssl

    from gateway.realtime.client import tls_context

    context = tls_context()
    assert context is tls_context()  # loaded once per process, not once per call
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
