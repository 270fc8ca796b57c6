"""A real phone call reaches an agent: SIPp and the pjsua2 caller against the running gateway.

Every test runs the gateway as a subprocess on 127.0.0.1 with the local simulator in this
process, and asserts what a caller would notice: SIP status codes, the agent's audio in the RTP
the gateway sent (decoded from a tcpdump capture), silence while the agent is quiet, and what
the simulator received from the gateway.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gateway.media import g711
from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimOptions, SimulatorServer
from tests.sip.gateway import QUIET_AGENT, place_call, run_gateway
from tests.sip.observe import (
    call_record,
    gateway_stream,
    item_audio,
    played_prefix,
    stream_payload,
)
from tests.support.audio import (
    read_wav,
    rms_dbfs,
    silence_pcm16,
    speech_like,
    speech_pcm16,
    write_g711,
    write_wav,
)
from tests.support.capture import Capture
from tests.support.ports import free_udp_port_block
from tests.support.rtp import decode_stream, rtp_streams
from tests.support.sipp import run_sipp_async, start_sipp

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]

GREETING_AGENT = """
agents:
  greeter:
    instructions: You are a test agent that greets callers.
    greeting: Hello and welcome to the test line.
routes:
  - name: all
    agent: greeter
"""


def caller_speech(law: str, tmp_path: Path, *, lead_ms: int = 500, tail_ms: int = 8000) -> Path:
    """A raw G.711 file: silence, one spoken question, then a long silence."""
    pcm = (silence_pcm16(lead_ms) + speech_pcm16("Hello, what is the weather like today?")
           + silence_pcm16(tail_ms))
    return write_g711(tmp_path / f"caller.{law}", pcm, "ulaw" if law == "ulaw" else "alaw")


def appended_audio(session_received: list[dict[str, object]], law: str) -> bytes:
    """Caller audio the simulator received, decoded to PCM16 8 kHz."""
    raw = b"".join(base64.b64decode(str(e["audio"])) for e in session_received
                   if e.get("type") == "input_audio_buffer.append")
    return g711.ulaw_decode(raw) if law == "ulaw" else g711.alaw_decode(raw)


def frames_dbfs(pcm: bytes, frame: int = 320) -> list[float]:
    return [rms_dbfs(pcm[i:i + frame]) for i in range(0, len(pcm) - frame + 1, frame)]


@pytest.mark.smoke
@pytest.mark.parametrize(("scenario", "law", "pt", "port_mode"), [
    ("uac_pcmu", "ulaw", 0, "auto"), ("uac_pcma", "alaw", 8, "auto"),
    # pjsua2's Python AudioMediaPort: the wheel's only port, still selectable on the source
    # build (where "auto" is the native port).
    ("uac_pcmu", "ulaw", 0, "python")])
async def test_caller_is_heard_and_the_agent_answers(tmp_path: Path, scenario: str, law: str,
                                                     pt: int, port_mode: str) -> None:
    audio = caller_speech(law, tmp_path)
    media_port = free_udp_port_block(4)
    async with SimulatorServer() as sim, \
            run_gateway(tmp_path, sim, sip={"media_port": port_mode}) as gw:
        with Capture(tmp_path / "rtp.pcap", f"udp and port {media_port}") as cap:
            result = await run_sipp_async(scenario, gw.target, log_dir=tmp_path,
                                          media_port=media_port, hold_ms=9000,
                                          keys={"audio_file": str(audio)}, timeout_s=40)
        assert result.ok, result.describe()
        await gw.wait_log("call record:")
        assert result.final_statuses() == [200]
        session = sim.sessions[0]
        fmt = "audio/pcmu" if law == "ulaw" else "audio/pcma"
        update = next(e for e in session.received if e["type"] == "session.update")
        assert update["session"]["audio"]["input"]["format"] == {"type": fmt}
        assert update["session"]["audio"]["output"]["format"] == {"type": fmt}
        # What the caller said reached the model: speech, loud, where it was spoken.
        heard = appended_audio(session.received, law)
        # In 40 ms appends (calls.append_chunk_ms).
        appends = [base64.b64decode(str(e["audio"])) for e in session.received
                   if e.get("type") == "input_audio_buffer.append"]
        assert {len(a) for a in appends} == {320}
        if port_mode == "auto":
            # The native port is sample-exact: G.711 decoded by pjmedia and encoded again in
            # C gives back what SIPp sent (as samples: μ-law's two codes of zero, 0x7F and
            # 0xFF, both come back as 0xFF). Frame by frame: on a loaded host pjmedia's
            # jitter buffer may drop or conceal a 20 ms frame of a burst (twice in about 35
            # runs), which broke a check on the whole 2 s as one run. Not asserted on the
            # Python port, whose frame callbacks wait for the GIL on the clock thread and can
            # lose frames under load (seen in CI).
            spoken = audio.read_bytes()[4000:4000 + 8000 * 2]  # 2 s from the start of speech
            decode = g711.ulaw_decode if law == "ulaw" else g711.alaw_decode
            voiced = [(i, f) for i in range(0, len(spoken), 160)
                      if rms_dbfs(f := decode(spoken[i:i + 160])) > -50]
            missing = [i // 160 for i, f in voiced if f not in heard]
            assert len(voiced) >= 50 and len(missing) <= 2, \
                f"{len(missing)} of {len(voiced)} voiced frames not found verbatim: {missing}"
        assert speech_like(heard[8000:8000 + 16000 * 2])
        assert rms_dbfs(heard[8000:8000 + 16000 * 2]) > -35
        assert "input_audio_buffer.speech_started" in session.sent_types()
        assert "response.done" in session.sent_types()
    all_streams = rtp_streams(cap.packets())
    streams = [s for s in all_streams if s.dport == media_port and s.packets[0].rtp.pt == pt]
    assert len(streams) == 1
    # The record counts every packet SIPp sent until its BYE: read as the stream went
    # (a reading after DISCONNECTED fails, and pjsip logged it as a warning).
    (from_caller,) = [s for s in all_streams if s.sport == media_port]
    rx = call_record(gw.log())["rtp"]["rx_packets"]
    assert len(from_caller.packets) - 3 <= rx <= len(from_caller.packets), \
        (rx, len(from_caller.packets))
    assert "get_stream_stat" not in gw.log()
    back = decode_stream(streams[0])
    levels = frames_dbfs(back)
    # While the caller asks (the agent is silent) the gateway sends digital silence...
    assert max(levels[:100]) < -60
    # ...then the agent's spoken answer comes back: at least a second of loud audio.
    assert sum(1 for db in levels if db > -30) >= 50
    assert speech_like(back[16000 * 3:])


@pytest.mark.smoke
async def test_late_offer_call_gets_the_greeting(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(6000))
    media_port = free_udp_port_block(4)
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, GREETING_AGENT) as gw:
        with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap:
            result = await run_sipp_async("uac_late_offer", gw.target, log_dir=tmp_path,
                                          media_port=media_port, hold_ms=4000,
                                          keys={"audio_file": str(audio)}, timeout_s=30)
        assert result.ok, result.describe()
    back = decode_stream(rtp_streams(cap.packets())[0])
    assert sum(1 for db in frames_dbfs(back) if db > -30) >= 25
    assert speech_like(back)


async def test_cancel_before_answer_gets_487_and_no_session(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        sim.fail_next_connects(3, status=503)  # the agent is slow to come up: the call rings
        result = await run_sipp_async("uac_cancel", gw.target, log_dir=tmp_path, timeout_s=20)
        assert result.ok, result.describe()
        assert result.final_statuses() == [487]
        await gw.wait_log("call ended: caller cancelled")
        assert not sim.sessions


async def test_caller_bye_closes_the_realtime_session(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(3000))
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        result = await run_sipp_async("uac_caller_bye", gw.target, log_dir=tmp_path,
                                      keys={"audio_file": str(audio)}, timeout_s=20)
        assert result.ok, result.describe()
        session = await sim.wait_for_session(0)
        assert await session.wait_closed(timeout=5) == 1000
        await gw.wait_log("call ended: caller hung up")


async def test_no_common_codec_gets_488(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        result = await run_sipp_async("uac_no_codec", gw.target, log_dir=tmp_path,
                                      timeout_s=15)
        assert result.ok, result.describe()
        assert result.final_statuses() == [488]
        assert not sim.sessions


@pytest.mark.smoke
async def test_over_capacity_gets_503_with_retry_after(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(8000))
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, sip={"max_calls": 1}) as gw:
        with start_sipp("uac_pcmu", gw.target, log_dir=tmp_path, hold_ms=6000,
                        keys={"audio_file": str(audio)}, timeout_s=30) as first:
            await sim.wait_for_session(0, timeout=10)
            second = await run_sipp_async("uac_busy_retry_after", gw.target, log_dir=tmp_path,
                                          timeout_s=15)
            assert second.ok, second.describe()
            refusal = second.received(method="INVITE", status=503)[0]
            assert refusal.header("Retry-After") is not None
            assert first.result(timeout_s=20).ok


ROUTING = """
agents:
  a:
    instructions: Test agent.
routes:
  - name: busy
    match: {to: "486"}
    reject: {code: 486, reason: Busy Here}
  - name: moved
    match: {to: "302"}
    refer: "sip:elsewhere@127.0.0.1:5999"
  - name: agent
    match: {to: "100"}
    agent: a
"""


@pytest.mark.parametrize(("user", "status"), [("486", 486), ("302", 302), ("999", 404)])
async def test_dialplan_outcomes(tmp_path: Path, user: str, status: int) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, ROUTING) as gw:
        result = await run_sipp_async("uac_expect_status", gw.target, log_dir=tmp_path,
                                      service=user, keys={"expected_status": str(status)},
                                      timeout_s=15)
        assert result.ok, result.describe()
        assert result.final_statuses() == [status]
        if status == 302:
            moved = result.received(method="INVITE", status=302)[0]
            assert moved.header("Contact") == "<sip:elsewhere@127.0.0.1:5999>"
        assert not sim.sessions


async def test_source_outside_the_trunk_allow_list_gets_403(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(
            tmp_path, sim, sip={"trunk_allow": ["10.0.0.0/8"]}) as gw:
        result = await run_sipp_async("uac_expect_status", gw.target, log_dir=tmp_path,
                                      keys={"expected_status": "403"}, timeout_s=15)
        assert result.ok, result.describe()
        assert result.final_statuses() == [403]


async def test_realtime_down_refuses_the_call_with_503(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        sim.fail_next_connects(100, status=503)
        result = await run_sipp_async("uac_expect_status", gw.target, log_dir=tmp_path,
                                      keys={"expected_status": "503"}, timeout_s=40)
        assert result.ok, result.describe()
        await gw.wait_log("Realtime session unavailable")


# --- the pjsua2 caller: audio content both ways -------------------------------------------


@pytest.mark.smoke
async def test_round_trip_audio_with_the_pjsua2_caller(tmp_path: Path) -> None:
    play = tmp_path / "question.wav"
    write_wav(play, silence_pcm16(500) + speech_pcm16("Can you tell me the opening hours?")
              + silence_pcm16(7000))
    record = tmp_path / "reply.wav"
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        report = await place_call(gw, tmp_path, play=play, record=record, duration_s=8)
        session = sim.sessions[0]
    assert report["status"] == 200 and report["codec"] == "PCMU"
    # What the caller played reached the simulator as speech.
    heard = appended_audio(session.received, "ulaw")
    assert speech_like(heard[:16000 * 3]) and rms_dbfs(heard[:16000 * 3]) > -35
    # What the simulator said reached the caller's recording as speech, after the question.
    said = [e for e in session.sent if e["type"] == "response.output_audio_transcript.done"]
    assert said, "the simulated agent never answered"
    pcm, rate = read_wav(record)
    assert rate == 8000
    levels = frames_dbfs(pcm)
    assert max(levels[:75]) < -60  # the agent was silent while the caller spoke
    assert sum(1 for db in levels if db > -30) >= 50
    assert speech_like(pcm[16000 * 3:])


HANGUP_SCENARIOS = """
scenarios:
  hangup:
    match: {instructions: "(?i)say goodbye"}
    turns:
      - - say: "Goodbye."
        - hangup
"""


async def test_agent_session_ending_sends_bye(tmp_path: Path) -> None:
    dialplan = QUIET_AGENT.replace("Answer briefly.", "Say goodbye and hang up.")
    play = tmp_path / "q.wav"
    write_wav(play, silence_pcm16(300) + speech_pcm16("Thanks, that is all.")
              + silence_pcm16(5000))
    async with SimulatorServer(scenarios=parse_scenarios(HANGUP_SCENARIOS)) as sim, \
            run_gateway(tmp_path, sim, dialplan) as gw:
        report = await place_call(gw, tmp_path, play=play, duration_s=20)
        await gw.wait_log("call ended: Realtime session closed")
    assert report["ended_by"] == "remote"
    assert report["ended_at"] - report["answered_at"] < 15


async def test_maximum_call_duration_hangs_up(tmp_path: Path) -> None:
    dialplan = QUIET_AGENT.replace("Answer briefly.\n",
                                   "Answer briefly.\n    max_duration_s: 2\n")
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, dialplan) as gw:
        report = await place_call(gw, tmp_path, duration_s=15)
        await gw.wait_log("maximum call duration 2 s reached")
    assert report["ended_by"] == "remote"
    assert 1.5 < report["ended_at"] - report["answered_at"] < 6


async def test_transcode_mode_uses_pcm_24k(tmp_path: Path) -> None:
    dialplan = QUIET_AGENT.replace("Answer briefly.\n", "Answer briefly.\n    media: transcode\n")
    play = tmp_path / "q.wav"
    write_wav(play, silence_pcm16(500) + speech_pcm16("What time is it?") + silence_pcm16(6000))
    record = tmp_path / "reply.wav"
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, dialplan) as gw:
        report = await place_call(gw, tmp_path, play=play, record=record, duration_s=7)
        session = sim.sessions[0]
    assert report["status"] == 200
    update = next(e for e in session.received if e["type"] == "session.update")
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    appended = b"".join(base64.b64decode(str(e["audio"])) for e in session.received
                        if e["type"] == "input_audio_buffer.append")
    assert speech_like(appended[:48000 * 3], rate=24000)
    pcm, _ = read_wav(record)
    assert sum(1 for db in frames_dbfs(pcm) if db > -30) >= 40
    assert speech_like(pcm[16000 * 2:])


# --- barge-in ---------------------------------------------------------------------------

LONG_GREETING = """
agents:
  talker:
    instructions: You are a test agent with a long greeting.
    greeting: >-
      Welcome to the test line. This greeting is deliberately long so that the caller has
      plenty of time to interrupt it while the agent is still talking about nothing at all.
routes:
  - name: all
    agent: talker
"""


@pytest.mark.smoke
@pytest.mark.parametrize("port_mode", ["auto", "python"])
async def test_barge_in_stops_the_agent_and_truncates_at_what_was_heard(
        tmp_path: Path, port_mode: str) -> None:
    play = tmp_path / "interrupt.wav"
    write_wav(play, silence_pcm16(2500) + speech_pcm16("Sorry, can I stop you there?")
              + silence_pcm16(4000))
    record = tmp_path / "heard.wav"
    async with SimulatorServer(options=SimOptions(speed=4.0)) as sim, \
            run_gateway(tmp_path, sim, LONG_GREETING, sip={"media_port": port_mode}) as gw:
        with Capture(tmp_path / "rtp.pcap", gw.rtp_filter) as cap:
            await place_call(gw, tmp_path, play=play, record=record, duration_s=6)
        session = sim.sessions[0]
    sent = session.sent
    started = next(i for i, e in enumerate(sent)
                   if e["type"] == "input_audio_buffer.speech_started")
    t_speech_started = session.sent_at[started]
    greeting_item = next(e["item_id"] for e in sent if e["type"] == "response.output_audio.delta")
    item = item_audio(session, greeting_item)
    truncate = next(e for e in session.received if e["type"] == "conversation.item.truncate")
    assert truncate["item_id"] == greeting_item
    # What went out on the wire: the gateway's RTP to the caller, in order; how much of the
    # greeting it carried, byte for byte.
    stream = gateway_stream(cap.packets(), gw)
    payload = stream_payload(stream)
    start, played = played_prefix(item, payload)
    played_ms = played / 8
    assert played_ms < len(item) / 8 - 500, "the greeting was not interrupted"
    # The truncate says exactly what the caller heard (±20 ms)...
    assert abs(truncate["audio_end_ms"] - played_ms) <= 20
    # ...and the agent went quiet within one frame of speech_started on the wire.
    last_packet = stream.packets[(start + played - 1) // 160]
    assert last_packet.at - t_speech_started <= 0.020 + 0.005
    after = g711.ulaw_decode(payload[start + played:start + played + 8000])
    assert max(frames_dbfs(after)) < -60
    # The caller's recording shows the same: the greeting starts, then a silence begins
    # well before the greeting would have ended.
    pcm, _ = read_wav(record)
    levels = frames_dbfs(pcm)
    first = next(i for i, db in enumerate(levels) if db > -30)
    would_end = first + len(item) // 160
    quiet_from = next(i for i in range(first, len(levels) - 15)
                      if max(levels[i:i + 15]) < -60)
    assert quiet_from < would_end - 25
