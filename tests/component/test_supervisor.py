"""The worker supervisor with real child processes (fake workers speaking the IPC protocol).

Every test checks by pid, at the end, that no process it caused to be started is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.control.backoff import RestartPolicy
from gateway.control.supervisor import (
    FromWorker,
    Supervisor,
    SupervisorError,
    SupervisorEvent,
    WorkerDown,
    WorkerSpec,
    WorkerStarted,
    WorkerUnavailable,
    WorkerUp,
    ipc_socket_path,
)
from gateway.ipc.channel import ChannelClosed
from gateway.ipc.messages import (
    PROTOCOL_VERSION,
    CallEnded,
    CommandResult,
    Hangup,
    Hello,
    Load,
    Welcome,
)
from gateway.ipc.unix import connect_unix
from tests.conftest import scaled

pytestmark = [pytest.mark.component, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
FAST = RestartPolicy(initial_delay_s=0.2, max_delay_s=1.0, stable_after_s=60.0, jitter=0.0)
E = TypeVar("E", bound=SupervisorEvent)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short and private: Unix socket paths are limited to ~107 bytes.
    with tempfile.TemporaryDirectory(prefix="sup-") as directory:
        os.chmod(directory, 0o700)
        yield Path(directory)


def fake(run_dir: Path, worker_id: str, mode: str = "normal", *extra: str) -> WorkerSpec:
    argv = [sys.executable, "-m", "tests.fixtures.workers.fake_worker", "--id", worker_id,
            "--ipc", str(ipc_socket_path(run_dir)), "--mode", mode, *extra]
    return WorkerSpec(worker_id, argv, cwd=ROOT, log_path=run_dir / f"{worker_id}.log")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def poll(predicate: Callable[[], bool], seconds: float) -> None:
    """Wait until ``predicate()``; for state with no event to wait on (/proc, a paused reader)."""
    async with asyncio.timeout(scaled(seconds)):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def wait_gone(pids: set[int], seconds: float = 3.0) -> None:
    """Processes not our children (a worker's helpers) are reaped by init: allow a moment."""
    with contextlib.suppress(TimeoutError):
        await poll(lambda: not any(alive(p) for p in pids), seconds)
    assert not {p for p in pids if alive(p)}, "processes left behind"


@dataclass
class Recorder:
    """Consumes a supervisor's events, with the loop time each arrived."""

    supervisor: Supervisor
    events: list[tuple[float, SupervisorEvent]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reading: asyncio.Event = field(default_factory=asyncio.Event)

    async def consume(self) -> None:
        loop = asyncio.get_running_loop()
        await self.reading.wait()
        async for event in self.supervisor.events():
            self.events.append((loop.time(), event))
            self.changed.set()

    def of(self, kind: type[E], worker_id: str | None = None) -> list[E]:
        return [e for _, e in self.events if isinstance(e, kind)
                and (worker_id is None or e.worker_id == worker_id)]

    def timed(self, kind: type[E], worker_id: str) -> list[tuple[float, E]]:
        return [(t, e) for t, e in self.events if isinstance(e, kind) and e.worker_id == worker_id]

    def pids(self) -> set[int]:
        return {e.pid for e in self.of(WorkerStarted)}

    async def wait_for(self, predicate: Callable[[Recorder], bool], seconds: float = 10.0) -> None:
        async with asyncio.timeout(scaled(seconds)):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

    async def next(self, kind: type[E], worker_id: str, *, after: int = 0,
                   seconds: float = 10.0) -> E:
        """The ``after``-th (0-based) event of ``kind`` for ``worker_id``, waiting for it."""
        await self.wait_for(lambda r: len(r.of(kind, worker_id)) > after, seconds)
        return self.of(kind, worker_id)[after]


@asynccontextmanager
async def supervised(specs: list[WorkerSpec], run_dir: Path, *, reading: bool = True,
                     **options: Any) -> AsyncIterator[tuple[Supervisor, Recorder]]:
    options.setdefault("policy", FAST)
    options.setdefault("term_grace_s", 1.0)
    supervisor = Supervisor(specs, run_dir=run_dir, settings_digest="abc123", **options)
    recorder = Recorder(supervisor)
    if reading:
        recorder.reading.set()
    consumer = asyncio.create_task(recorder.consume(), name="test:supervisor-events")
    try:
        await supervisor.start()
        yield supervisor, recorder
    finally:
        recorder.reading.set()
        await supervisor.stop(grace_s=2.0)
        async with asyncio.timeout(scaled(5)):
            await consumer  # the stream ends once the supervisor has stopped
        assert supervisor.state == "stopped"
        assert not ipc_socket_path(run_dir).exists()
        await wait_gone(recorder.pids())
        # One WorkerDown for every process started, nothing after the end.
        downs = [e.pid for e in recorder.of(WorkerDown) if e.pid is not None]
        assert sorted(downs) == sorted(recorder.pids())


def log_of(run_dir: Path, worker_id: str) -> str:
    path = run_dir / f"{worker_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


async def test_three_workers_say_hello_and_stop_cleanly(run_dir: Path) -> None:
    specs = [fake(run_dir, f"w{n}") for n in (1, 2, 3)]
    async with supervised(specs, run_dir) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        for worker_id in ("w1", "w2", "w3"):
            started = await recorder.next(WorkerStarted, worker_id)
            up = await recorder.next(WorkerUp, worker_id)
            assert up.pid == started.pid == up.hello.pid
            assert (up.hello.worker_id, up.hello.capacity) == (worker_id, 3)
            info = supervisor.info(worker_id)
            assert (info.pid, info.connected, info.restarts) == (started.pid, True, 0)
            load = await recorder.next(FromWorker, worker_id)
            assert load.message == Load(active=0, capacity=3)
        assert supervisor.refused == 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        await supervisor.stop(grace_s=5.0)
        assert loop.time() - began < scaled(5.0)
        for worker_id in ("w1", "w2", "w3"):
            down = await recorder.next(WorkerDown, worker_id)
            assert (down.reason, down.expected, down.restart_in_s) == (
                "exited with status 0", True, None)
            assert supervisor.info(worker_id).pid is None


async def test_sigkill_is_reported_and_the_worker_restarted_after_backoff(run_dir: Path) -> None:
    specs = [fake(run_dir, f"w{n}") for n in (1, 2, 3)]
    async with supervised(specs, run_dir) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        victim = supervisor.info("w2").pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        down = await recorder.next(WorkerDown, "w2")
        assert (down.pid, down.reason, down.expected) == (victim, "killed by SIGKILL", False)
        assert down.restart_in_s == pytest.approx(0.2)
        up = await recorder.next(WorkerUp, "w2", after=1, seconds=20)
        assert up.pid != victim and not alive(victim)
        (t_down, _), = recorder.timed(WorkerDown, "w2")
        t_start, started = recorder.timed(WorkerStarted, "w2")[1]
        assert started.restarts == 1 and started.pid == up.pid
        assert t_start - t_down >= 0.2 - 0.02
        assert supervisor.info("w2").restarts == 1
        assert supervisor.info("w1").restarts == supervisor.info("w3").restarts == 0
        assert not recorder.of(WorkerDown, "w1") and not recorder.of(WorkerDown, "w3")
        await supervisor.wait_ready(scaled(5))


async def test_a_crash_loop_backs_off_with_growing_delays(run_dir: Path) -> None:
    policy = RestartPolicy(initial_delay_s=0.1, multiplier=2.0, max_delay_s=0.8, jitter=0.5)
    specs = [fake(run_dir, "w1", "crash"), fake(run_dir, "w2")]
    async with supervised(specs, run_dir, policy=policy, rand=lambda: 0.5) as (
            supervisor, recorder):
        # A worker that never came up is given up on by start-up (it keeps being restarted).
        with pytest.raises(SupervisorError, match="worker w1 failed to start 2 times: "
                                                  "exited with status 1"):
            await supervisor.wait_ready(scaled(1.5))
        await recorder.wait_for(lambda r: len(r.of(WorkerStarted, "w1")) >= 6, seconds=30)
        downs = recorder.timed(WorkerDown, "w1")[:5]
        starts = recorder.timed(WorkerStarted, "w1")[1:6]
        # jitter 0.5 with rand 0.5 takes a quarter off each backoff
        expected = [0.075, 0.15, 0.3, 0.6, 0.6]
        assert [d.restart_in_s for _, d in downs] == pytest.approx(expected)
        assert all(d.reason == "exited with status 1" and not d.expected for _, d in downs)
        gaps = [t_start - t_down for (t_down, _), (t_start, _) in zip(downs, starts, strict=True)]
        for gap, delay in zip(gaps, expected, strict=True):
            assert delay - 0.02 <= gap <= delay + scaled(2.0)
        assert gaps[3] > 2 * gaps[0]
        assert [s.restarts for _, s in starts] == [1, 2, 3, 4, 5]
        assert "crashing at start" in log_of(run_dir, "w1")
        # The healthy worker beside it is untouched.
        assert supervisor.info("w2").connected and not recorder.of(WorkerDown, "w2")


async def test_no_restart_once_stopping(run_dir: Path) -> None:
    slow = RestartPolicy(initial_delay_s=20.0, max_delay_s=20.0, jitter=0.0)
    async with supervised([fake(run_dir, "w1", "crash")], run_dir, policy=slow) as (
            supervisor, recorder):
        down = await recorder.next(WorkerDown, "w1", seconds=20)
        assert down.restart_in_s == 20.0
        loop = asyncio.get_running_loop()
        began = loop.time()
        await supervisor.stop(grace_s=1.0)
        assert loop.time() - began < scaled(1.0)  # the pending restart is simply dropped
        assert len(recorder.of(WorkerStarted)) == 1


async def test_workers_spawned_as_the_stop_begins_are_stopped_not_restarted(
        run_dir: Path) -> None:
    specs = [fake(run_dir, f"w{n}") for n in (1, 2)]
    async with supervised(specs, run_dir) as (supervisor, recorder):
        await recorder.wait_for(lambda r: len(r.of(WorkerStarted)) == 2)
        await supervisor.stop(grace_s=2.0)  # before any of them could say hello
        for worker_id in ("w1", "w2"):
            down = await recorder.next(WorkerDown, worker_id)
            assert down.expected and down.restart_in_s is None
        assert len(recorder.of(WorkerStarted)) == 2


async def test_stop_ends_workers_that_ignore_shutdown(run_dir: Path) -> None:
    specs = [fake(run_dir, "w1"), fake(run_dir, "w2", "ignore-shutdown"),
             fake(run_dir, "w3", "hang")]
    async with supervised(specs, run_dir, term_grace_s=0.5) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await supervisor.stop(grace_s=1.0)
        elapsed = loop.time() - began
        assert 1.0 <= elapsed < 1.0 + 0.5 + scaled(2.0)
        reasons = {e.worker_id: e.reason for e in recorder.of(WorkerDown)}
        assert reasons == {"w1": "exited with status 0", "w2": "killed by SIGTERM",
                           "w3": "killed by SIGKILL"}
        assert all(e.expected for e in recorder.of(WorkerDown))


async def test_a_second_stop_shortens_the_grace(run_dir: Path) -> None:
    async with supervised([fake(run_dir, "w1", "ignore-shutdown")], run_dir) as (
            supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        loop = asyncio.get_running_loop()
        began = loop.time()
        first = asyncio.create_task(supervisor.stop(grace_s=30.0), name="test:first-stop")
        await asyncio.sleep(0.2)
        await supervisor.stop(grace_s=0.0)
        await first
        assert loop.time() - began < scaled(3.0)
        assert (await recorder.next(WorkerDown, "w1")).reason == "killed by SIGTERM"


async def test_a_cancelled_stop_still_kills_and_reaps_every_worker(run_dir: Path) -> None:
    specs = [fake(run_dir, "w1", "hang"), fake(run_dir, "w2", "ignore-shutdown")]
    async with supervised(specs, run_dir, term_grace_s=10.0) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        pids = {pid for w in ("w1", "w2") if (pid := supervisor.info(w).pid) is not None}
        loop = asyncio.get_running_loop()
        began = loop.time()
        stopping = asyncio.create_task(supervisor.stop(grace_s=30.0), name="test:stop")
        await asyncio.sleep(0.2)
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        assert loop.time() - began < scaled(3.0)
        assert supervisor.state == "stopped"
        assert not any(alive(pid) for pid in pids)
        reasons = {e.worker_id: e.reason for e in recorder.of(WorkerDown)}
        assert reasons == {"w1": "killed by SIGKILL", "w2": "killed by SIGKILL"}


async def test_drain_waits_for_the_calls_to_end(run_dir: Path) -> None:
    specs = [fake(run_dir, f"w{n}", "normal", "--call", "--call-s", "1.0") for n in (1, 2)]
    async with supervised(specs, run_dir) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await supervisor.drain(deadline_s=10.0, grace_s=5.0)
        assert 1.0 <= loop.time() - began < scaled(5.0)
        assert supervisor.state == "stopped"
        for worker_id in ("w1", "w2"):
            messages = [e.message for e in recorder.of(FromWorker, worker_id)]
            assert Load(active=1, capacity=3, draining=True) in messages
            assert messages[-1] == CallEnded(call_id=f"{worker_id}-1", reason="drained")
            down = await recorder.next(WorkerDown, worker_id)
            assert (down.reason, down.expected, down.restart_in_s) == (
                "exited with status 0", True, None)
        assert len(recorder.of(WorkerStarted)) == 2


async def test_drain_stops_what_outlives_its_deadline(run_dir: Path) -> None:
    specs = [fake(run_dir, "w1", "hang", "--call")]  # ignores Drain, Shutdown and SIGTERM
    async with supervised(specs, run_dir, term_grace_s=0.3) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await supervisor.drain(deadline_s=0.5, grace_s=0.5)
        elapsed = loop.time() - began
        # deadline + grace, then stop(grace): Shutdown, grace, SIGTERM, term grace, SIGKILL
        assert 0.5 + 0.5 + 0.5 + 0.3 - 0.05 <= elapsed < scaled(5.0)
        down = await recorder.next(WorkerDown, "w1")
        assert (down.reason, down.expected) == ("killed by SIGKILL", True)


async def test_messages_before_a_crash_come_before_its_worker_down(run_dir: Path) -> None:
    specs = [fake(run_dir, "w1", "exit-after", "--call", "--after-s", "0.3")]
    async with supervised(specs, run_dir) as (_supervisor, recorder):
        down = await recorder.next(WorkerDown, "w1", seconds=20)
        assert down.reason == "exited with status 2"
        kinds = [type(e).__name__ if not isinstance(e, FromWorker) else e.message.type
                 for _, e in recorder.events if e.worker_id == "w1"][:7]
        assert kinds == ["WorkerStarted", "WorkerUp", "load", "call_offered", "call_started",
                         "call_ended", "WorkerDown"]


async def test_a_slow_consumer_still_gets_a_dead_workers_messages_first(
        run_dir: Path) -> None:
    specs = [fake(run_dir, "w1", "exit-after", "--call", "--after-s", "0.3")]
    # Room for two events: the worker's messages wait in its connection while nobody reads.
    async with supervised(specs, run_dir, reading=False, event_queue_size=2) as (
            supervisor, recorder):
        await poll(lambda: supervisor.info("w1").pid is not None, 20)
        pid = supervisor.info("w1").pid
        assert pid is not None
        await poll(lambda: not alive(pid) and supervisor.info("w1").pid is None, 20)
        await asyncio.sleep(0.3)  # room for a WorkerDown to jump the queue, were it allowed to
        recorder.reading.set()
        await recorder.next(WorkerDown, "w1", seconds=20)
        kinds = [type(e).__name__ if not isinstance(e, FromWorker) else e.message.type
                 for _, e in recorder.events if e.worker_id == "w1"][:7]
        assert kinds == ["WorkerStarted", "WorkerUp", "load", "call_offered", "call_started",
                         "call_ended", "WorkerDown"]
        assert supervisor.dropped == 0


async def test_a_worker_that_closes_ipc_but_lives_is_killed_and_restarted(
        run_dir: Path) -> None:
    async with supervised([fake(run_dir, "w1", "close-ipc")], run_dir,
                          ipc_loss_grace_s=0.3, term_grace_s=0.5) as (_supervisor, recorder):
        first = await recorder.next(WorkerStarted, "w1", seconds=20)
        down = await recorder.next(WorkerDown, "w1", seconds=20)
        assert down.pid == first.pid
        assert down.reason == "IPC connection lost: peer closed the connection"
        assert down.restart_in_s is not None and not down.expected
        assert not alive(first.pid)
        await recorder.next(WorkerUp, "w1", after=1, seconds=20)


async def test_a_worker_that_never_says_hello_is_killed(run_dir: Path) -> None:
    async with supervised([fake(run_dir, "w1", "no-hello")], run_dir, hello_timeout_s=0.5,
                          term_grace_s=0.5) as (_supervisor, recorder):
        down = await recorder.next(WorkerDown, "w1", seconds=20)
        assert down.reason == "no hello within 0.5 s"
        assert down.restart_in_s is not None


async def test_a_worker_that_cannot_start_is_retried(run_dir: Path) -> None:
    spec = WorkerSpec("w1", [str(run_dir / "no-such-program")])
    async with supervised([spec], run_dir) as (supervisor, recorder):
        first = await recorder.next(WorkerDown, "w1")
        second = await recorder.next(WorkerDown, "w1", after=1)
        assert first.pid is None and first.reason.startswith("could not start: No such file")
        assert (first.restart_in_s, second.restart_in_s) == (0.2, 0.4)
        assert not recorder.of(WorkerStarted)
        assert supervisor.info("w1").restarts >= 1


async def test_forged_hellos_are_refused_and_leave_the_worker_alone(
        run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.control.supervisor")
    # w2 runs but never connects: a forger could try to pass for it.
    specs = [fake(run_dir, "w1"), fake(run_dir, "w2", "no-hello")]
    async with supervised(specs, run_dir, hello_timeout_s=3.0) as (supervisor, recorder):
        await recorder.next(WorkerUp, "w1", seconds=20)
        real = supervisor.info("w1").pid
        assert real is not None and supervisor.info("w2").pid is not None

        async def refused(first: Hello | Load | None) -> None:
            channel = await connect_unix(ipc_socket_path(run_dir), name="forger")
            async with channel:
                if first is not None:
                    await channel.send(first)
                with pytest.raises(ChannelClosed):
                    async with asyncio.timeout(scaled(5)):
                        reply = await channel.recv()
                        assert not isinstance(reply, Welcome)

        def hello(worker_id: str, pid: int) -> Hello:
            return Hello(worker_id=worker_id, pid=pid, protocol=PROTOCOL_VERSION, binding="forged",
                         capacity=1, sip_host="127.0.0.1", sip_port=5999)

        await refused(hello("w2", os.getpid()))
        assert not supervisor.info("w2").connected
        w2 = supervisor.info("w2").pid
        assert w2 is not None
        await refused(replace(hello("w2", w2), protocol=PROTOCOL_VERSION + 1))
        await refused(hello("w9", real))
        await refused(hello("w1", real))
        await refused(Load(active=0, capacity=1))
        await refused(None)
        assert supervisor.refused == 6
        reasons = [r.getMessage().split(": ", 2)[-1] for r in caplog.records
                   if "refused an IPC connection" in r.getMessage()]
        assert reasons == ["pid is not that of the process started for this worker",
                           "IPC message 'hello': field 'protocol' version "
                           f"{PROTOCOL_VERSION + 1} is not "
                           f"supported (this side speaks {PROTOCOL_VERSION})", "no such worker",
                           "this worker is already connected",
                           "first message was 'load', not 'hello'",
                           "no first message within 3 s"]
        assert supervisor.info("w1").connected
        assert not recorder.of(WorkerDown, "w1") and len(recorder.of(WorkerUp, "w1")) == 1


async def test_send_and_broadcast_reach_connected_workers(run_dir: Path) -> None:
    specs = [fake(run_dir, "w1"), fake(run_dir, "w2")]
    async with supervised(specs, run_dir) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        await supervisor.send("w1", Hangup(request_id=1, call_id="c1", reason="test"))
        sent = await supervisor.broadcast(Hangup(request_id=2, call_id="c2", reason="test"))
        assert sorted(sent) == ["w1", "w2"]

        def results(worker_id: str) -> list[int]:
            return [e.message.request_id for e in recorder.of(FromWorker, worker_id)
                    if isinstance(e.message, CommandResult)]

        await recorder.wait_for(lambda r: results("w1") == [1, 2] and results("w2") == [2])
        with pytest.raises(WorkerUnavailable):
            await supervisor.send("w9", Hangup(request_id=3, call_id="c3", reason="test"))


async def test_helpers_a_worker_forked_die_with_it(run_dir: Path) -> None:
    pid_file = run_dir / "helper.pid"
    specs = [fake(run_dir, "w1", "normal", "--child-pid-file", str(pid_file))]
    async with supervised(specs, run_dir) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        helper = int(pid_file.read_text())
        assert alive(helper)
        worker = supervisor.info("w1").pid
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        await recorder.next(WorkerDown, "w1")
        await wait_gone({helper})
        await recorder.next(WorkerUp, "w1", after=1, seconds=20)
        second = int(pid_file.read_text())
        assert second != helper and alive(second)
        await supervisor.stop(grace_s=2.0)
        await wait_gone({second})


def test_specs_and_options_are_checked(run_dir: Path) -> None:
    with pytest.raises(ValueError):
        WorkerSpec("bad id", ["x"])
    with pytest.raises(ValueError):
        WorkerSpec("w1", [])
    spec = WorkerSpec("w1", ["x"])
    with pytest.raises(ValueError):
        Supervisor([spec, spec], run_dir=run_dir, settings_digest="ab")
    with pytest.raises(ValueError):
        Supervisor([spec], run_dir=run_dir, settings_digest="NOT HEX")
    with pytest.raises(ValueError):
        Supervisor([spec], run_dir=run_dir / ("x" * 120), settings_digest="ab")
