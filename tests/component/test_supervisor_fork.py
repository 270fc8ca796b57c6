"""Workers forked from the preloaded parent (``start="fork"``), with real processes.

The fake workers of ``test_supervisor.py``, forked by :mod:`gateway.control.zygote` from a
parent that preloaded their module: a forked worker must look to the supervisor (pid, exit
status, restarts, group kill) and to itself (argv, streams, signals, session, death signal)
exactly like an exec'd one; the preloaded parent dying must take its workers with it and be
recovered from; one that cannot preload leaves exec; a killed control process leaves nothing.
Every test checks by pid, at the end, that no process it caused to be started is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.control import zygote
from gateway.control.supervisor import (
    WorkerDown,
    WorkerSpec,
    WorkerStarted,
    WorkerUp,
    ipc_socket_path,
)
from tests.component.test_supervisor import ROOT, alive, log_of, poll, supervised, wait_gone
from tests.conftest import scaled

pytestmark = [pytest.mark.component, pytest.mark.timeout(60)]

MODULE = "tests.fixtures.workers.fake_worker"
PRELOAD = (MODULE,)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sfk-") as directory:
        os.chmod(directory, 0o700)
        yield Path(directory)


def fake(run_dir: Path, worker_id: str, mode: str = "normal", *extra: str,
         start: str = "fork", env: dict[str, str] | None = None,
         cwd: Path | None = ROOT) -> WorkerSpec:
    argv = [sys.executable, "-m", MODULE, "--id", worker_id, "--ipc",
            str(ipc_socket_path(run_dir)), "--mode", mode, *extra]
    return WorkerSpec(worker_id, argv, env=env, cwd=cwd, log_path=run_dir / f"{worker_id}.log",
                      start="fork" if start == "fork" else "exec")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def proc_file(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


async def gone(pid: int, seconds: float = 5.0) -> None:
    await poll(lambda: not alive(pid), seconds)


async def test_forked_workers_come_from_one_single_threaded_preloaded_parent(
        run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.control.zygote")
    specs = [fake(run_dir, f"w{n}") for n in (1, 2, 3)]
    async with supervised(specs, run_dir, preload=PRELOAD) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        pids = [await recorder.next(WorkerUp, w) for w in ("w1", "w2", "w3")]
        parents = {parent_of(up.pid) for up in pids}
        assert len(parents) == 1
        parent = parents.pop()
        assert parent != os.getpid() and parent_of(parent) == os.getpid()
        assert threads_of(parent) == 1
        assert b"OPENBLAS_NUM_THREADS=1" in proc_file(parent, "environ")
        for up in pids:
            assert up.hello.pid == up.pid == supervisor.info(up.worker_id).pid
            assert os.getpgid(up.pid) == os.getsid(up.pid) == up.pid
            shown = proc_file(up.pid, "cmdline").rstrip(b"\0").split(b"\0")
            assert shown == [os.fsencode(a) for a in specs[int(up.worker_id[1]) - 1].argv]
        ready = [r.getMessage() for r in caplog.records if "preloaded parent ready" in
                 r.getMessage()]
        assert len(ready) == 1 and f"(pid {parent})" in ready[0]
        assert int(ready[0].split(", ")[1].split()[0]) > 0  # objects frozen before forking
        await supervisor.stop(grace_s=5.0)
        for worker_id in ("w1", "w2", "w3"):
            down = await recorder.next(WorkerDown, worker_id)
            assert (down.reason, down.expected) == ("exited with status 0", True)
        await gone(parent)  # stopped with the supervisor


async def test_a_forked_worker_starts_as_an_execd_one_would(run_dir: Path) -> None:
    reports: dict[str, dict[str, Any]] = {}
    path = run_dir / "report.json"
    for start in ("exec", "fork"):
        spec = fake(run_dir, "w1", "normal", "--report", str(path), start=start,
                    env={**os.environ, "FAKE_WORKER_MARK": start})
        async with supervised([spec], run_dir, preload=PRELOAD) as (supervisor, _recorder):
            await supervisor.wait_ready(scaled(20))
        reports[start] = json.loads(path.read_text())
    execd, forked = reports["exec"], reports["fork"]
    assert (execd["mark"], forked["mark"]) == ("exec", "fork")
    log = str(run_dir / "w1.log")
    assert forked["streams"] == execd["streams"] == ["/dev/null", log, log]
    assert forked["pdeathsig"] == execd["pdeathsig"] == signal.SIGTERM
    assert forked["session_leader"] and execd["session_leader"]
    assert forked["argv"][0] == execd["argv"][0] == str(ROOT / "tests/fixtures/workers/"
                                                         "fake_worker.py")
    for fact in ("argv", "name", "cwd", "path0", "signals", "gc", "threads", "openblas"):
        assert forked[fact] == execd[fact], fact
    # The parent's own thread limit is not passed on.
    assert forked["openblas"] == os.environ.get("OPENBLAS_NUM_THREADS")


async def test_forked_exit_statuses_restarts_and_group_kills(run_dir: Path) -> None:
    helper_file = run_dir / "helper.pid"
    specs = [fake(run_dir, "w1", "crash"), fake(run_dir, "w2", "ignore-shutdown"),
             fake(run_dir, "w3", "hang"),
             fake(run_dir, "w4", "normal", "--child-pid-file", str(helper_file))]
    async with supervised(specs, run_dir, preload=PRELOAD, term_grace_s=0.5) as (
            supervisor, recorder):
        first = await recorder.next(WorkerDown, "w1", seconds=20)
        assert (first.reason, first.expected) == ("exited with status 1", False)
        assert first.restart_in_s == pytest.approx(0.2)
        again = await recorder.next(WorkerStarted, "w1", after=1, seconds=20)
        assert again.restarts == 1 and again.pid != first.pid
        assert "crashing at start" in log_of(run_dir, "w1")
        for worker_id in ("w2", "w3", "w4"):
            await recorder.next(WorkerUp, worker_id, seconds=20)
        helper = int(helper_file.read_text())
        victim = supervisor.info("w4").pid
        assert victim is not None and alive(helper)
        os.kill(victim, signal.SIGKILL)
        down = await recorder.next(WorkerDown, "w4")
        assert (down.pid, down.reason, down.expected) == (victim, "killed by SIGKILL", False)
        await wait_gone({helper})  # the rest of its group was killed with it
        up = await recorder.next(WorkerUp, "w4", after=1, seconds=20)
        assert up.pid != victim and supervisor.info("w4").restarts == 1
        await supervisor.stop(grace_s=0.5)
        reasons = {e.worker_id: e.reason for e in recorder.of(WorkerDown) if e.expected}
        assert (reasons["w2"], reasons["w3"], reasons["w4"]) == (
            "killed by SIGTERM", "killed by SIGKILL", "exited with status 0")


async def test_the_preloaded_parent_dying_takes_its_workers_and_is_started_again(
        run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.control.zygote")
    specs = [fake(run_dir, "w1"), fake(run_dir, "w2")]
    async with supervised(specs, run_dir, preload=PRELOAD) as (supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        workers = {w: (await recorder.next(WorkerUp, w)).pid for w in ("w1", "w2")}
        parent = parent_of(workers["w1"])
        os.kill(parent, signal.SIGKILL)
        for worker_id, pid in workers.items():
            down = await recorder.next(WorkerDown, worker_id)
            assert down.pid == pid and not down.expected and down.restart_in_s is not None
            assert down.reason == ("exit status unknown: its preloaded parent "
                                   f"(pid {parent}) ended: killed by SIGKILL")
            assert not alive(pid)
        ups = [await recorder.next(WorkerUp, w, after=1, seconds=20) for w in ("w1", "w2")]
        second = parent_of(ups[0].pid)
        assert second != parent and parent_of(ups[1].pid) == second
        assert parent_of(second) == os.getpid()
        assert f"preloaded parent (pid {parent}) ended: killed by SIGKILL; 2 worker(s)" in \
            caplog.text


async def test_a_parent_that_keeps_dying_is_given_up_for_exec(
        run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.control.zygote")
    async with supervised([fake(run_dir, "w1")], run_dir, preload=PRELOAD) as (
            supervisor, recorder):
        for death in range(zygote.MAX_DEATHS):
            up = await recorder.next(WorkerUp, "w1", after=death, seconds=20)
            parent = parent_of(up.pid)
            assert parent != os.getpid()
            os.kill(parent, signal.SIGKILL)
            await recorder.next(WorkerDown, "w1", after=death)
        up = await recorder.next(WorkerUp, "w1", after=zygote.MAX_DEATHS, seconds=20)
        assert parent_of(up.pid) == os.getpid()  # exec'd: the supervisor's own child
        assert f"preloaded parent given up (it died {zygote.MAX_DEATHS} times)" in caplog.text
        assert supervisor.info("w1").connected


async def test_a_parent_that_cannot_preload_leaves_exec(
        run_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.control.zygote")
    specs = [fake(run_dir, "w1"), fake(run_dir, "w2")]
    async with supervised(specs, run_dir, preload=("tests.no_such_module",)) as (
            supervisor, recorder):
        await supervisor.wait_ready(scaled(20))
        for worker_id in ("w1", "w2"):
            up = await recorder.next(WorkerUp, worker_id)
            assert parent_of(up.pid) == os.getpid()
        given_up = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
        assert given_up == ["preloaded parent given up (preloading tests.no_such_module: "
                            "ModuleNotFoundError: No module named 'tests.no_such_module'): "
                            "workers start by exec from now on"]


async def test_a_forked_worker_that_cannot_start_is_retried(run_dir: Path) -> None:
    spec = fake(run_dir, "w1", cwd=run_dir / "no-such-directory")
    async with supervised([spec], run_dir, preload=PRELOAD) as (_supervisor, recorder):
        first = await recorder.next(WorkerDown, "w1", seconds=20)
        second = await recorder.next(WorkerDown, "w1", after=1)
        assert first.pid is None
        assert first.reason == "could not start: No such file or directory"
        assert (first.restart_in_s, second.restart_in_s) == (0.2, 0.4)
        assert not recorder.of(WorkerStarted)


async def test_a_killed_control_process_takes_the_parent_and_its_workers(
        run_dir: Path) -> None:
    control = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fixtures.workers.fork_control", str(run_dir), "2",
        "--max-life-s", "30", cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, start_new_session=True)
    pids: set[int] = set()
    try:
        assert control.stdout is not None
        async with asyncio.timeout(scaled(30)):
            line = await control.stdout.readline()
        workers = set(json.loads(line)["workers"].values())
        parent = {parent_of(pid) for pid in workers}
        assert len(parent) == 1 and control.pid not in workers | parent
        pids = workers | parent
        assert parent_of(next(iter(parent))) == control.pid
        control.kill()
        await control.wait()
        await wait_gone(pids, seconds=10.0)
    finally:
        if control.returncode is None:
            control.kill()
            await control.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


SLOW = ("tests.fixtures.workers.slow_import", MODULE)  # 3 s of imports


async def test_a_spawn_cancelled_while_the_parent_starts_kills_it_at_once(
        run_dir: Path) -> None:
    spawner = zygote.Spawner(SLOW)
    spawn = asyncio.create_task(spawner.spawn(fake(run_dir, "w1").argv, fork=True, env=None,
                                              cwd=ROOT, log_path=None), name="test:spawn")
    try:
        await poll(lambda: bool(_zygotes()), 10)
        starting = set(_zygotes())
        loop = asyncio.get_running_loop()
        began = loop.time()
        spawn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await spawn
        assert loop.time() - began < scaled(2.0)  # not the rest of its imports
        await wait_gone(starting)
    finally:
        spawn.cancel()
        await asyncio.gather(spawn, return_exceptions=True)
        await spawner.close()


async def test_a_stop_while_the_parent_starts_stops_what_it_forks(run_dir: Path) -> None:
    async with supervised([fake(run_dir, "w1")], run_dir, preload=SLOW) as (
            supervisor, recorder):
        await poll(lambda: bool(_zygotes()), 10)
        starting = set(_zygotes())
        await supervisor.stop(grace_s=2.0)
        assert supervisor.state == "stopped"
        await wait_gone(starting)
        downs = recorder.of(WorkerDown, "w1")
        assert len(downs) <= 1 and all(d.expected for d in downs)


def test_forked_specs_are_checked() -> None:
    with pytest.raises(ValueError, match="PYTHON -m MODULE"):
        WorkerSpec("w1", [sys.executable, "worker.py"], start="fork")
    with pytest.raises(ValueError, match="start"):
        WorkerSpec("w1", ["x"], start="spawn")  # type: ignore[arg-type]
    assert zygote.cmdline_room([["ab", "c"], ["d"]]) == 5


async def test_exec_specs_never_start_a_preloaded_parent(run_dir: Path) -> None:
    specs = [fake(run_dir, "w1", start="exec")]
    async with supervised(specs, run_dir, preload=PRELOAD) as (supervisor, recorder):
        up = await recorder.next(WorkerUp, "w1", seconds=20)
        assert parent_of(up.pid) == os.getpid()
        assert not _zygotes()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if entry.isdigit() and parent_of(int(entry)) == pid:
                found.append(int(entry))
    return found


def _zygotes() -> list[int]:
    return [pid for pid in _children(os.getpid())
            if b"gateway.control.zygote" in proc_file(pid, "cmdline")]

