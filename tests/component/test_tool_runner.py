"""The tool runner with real worker processes: results, failures, timeouts, crashes, limits.

Tools come from ``tests.fixtures.tools``; several return the worker's pid so a test can tell
which process ran a call and whether it was replaced.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.agents.runner import GuardrailOutcome, ToolOutcome, ToolRunner
from gateway.agents.spec import GuardrailSpec, PythonTool, SdkTool
from gateway.agents.worker import MAX_OUTPUT_CHARS
from tests.conftest import scaled

pytestmark = pytest.mark.component

TOOLS = "tests.fixtures.tools.sample_tools"
SDK_AGENT = "tests.fixtures.tools.sdk_agent:triage"


def _children() -> dict[int, str]:
    """Child processes of this process, from /proc: pid -> state letter (``Z`` = zombie)."""
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == me:
            found[int(entry)] = fields[0]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def _until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    """Wait until ``predicate()`` holds, checking every few milliseconds, or fail."""
    async with asyncio.timeout(scaled(seconds)):
        # The runner's counters have no change event; a bounded poll is exact enough here.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def _full(runner: ToolRunner) -> None:
    async with asyncio.timeout(scaled(15)):
        await runner.wait_full()


@pytest.fixture
async def runner() -> AsyncIterator[ToolRunner]:
    async with ToolRunner(workers=2, max_pending=8) as pool:
        yield pool


async def _call(
    runner: ToolRunner, tool: str, timeout_s: float = 10, /, **arguments: object
) -> ToolOutcome:
    return await runner.call_python(f"{TOOLS}:{tool}", arguments, scaled(timeout_s), name=tool)


# -- results --------------------------------------------------------------------------------


async def test_sync_and_async_tools_return_their_results(runner: ToolRunner) -> None:
    added = await _call(runner, "add", a=2, b=40)
    assert added == ToolOutcome(True, "42", None, added.duration_s)
    assert 0 < added.duration_s < scaled(5)

    greeted = await _call(runner, "greet", name="Ada", excited=True)
    assert greeted.ok
    body = json.loads(greeted.output)
    assert body["greeting"] == "Hello, Ada!"
    assert body["pid"] in runner.worker_pids
    assert body["pid"] != os.getpid()


async def test_results_are_serialised_for_the_model(runner: ToolRunner) -> None:
    text = await _call(runner, "echo_text", text='not "JSON" encoded')
    assert text.output == 'not "JSON" encoded'
    assert (await _call(runner, "nothing")).output == "null"
    odd = await _call(runner, "odd_results")
    assert json.loads(odd.output) == {
        "tags": ["b"], "pair": [1, 2], "colour": "red", "point": {"x": 1, "y": 2},
        "thing": "<opaque thing>",
    }
    assert (await _call(runner, "opaque")).output == '"<opaque thing>"'
    huge = await _call(runner, "huge", chars=MAX_OUTPUT_CHARS + 10)
    assert huge.ok
    assert huge.output.startswith("x" * MAX_OUTPUT_CHARS)
    assert huge.output.endswith(f"[truncated: {MAX_OUTPUT_CHARS + 10} characters in all]")


async def test_enum_and_dataclass_arguments_arrive_converted(runner: ToolRunner) -> None:
    outcome = await _call(
        runner, "paint", colour="green", at={"x": 1, "y": 2}, points=[{"x": 3, "y": 4}]
    )
    assert json.loads(outcome.output) == {
        "colour_is_enum": True, "colour": "green", "at_is_point": True, "sum": 10
    }


async def test_printing_tools_do_not_disturb_the_protocol(runner: ToolRunner) -> None:
    assert (await _call(runner, "chatty")).output == "quiet result"
    assert (await _call(runner, "add", a=1, b=1)).output == "2"


# -- failures -------------------------------------------------------------------------------


async def test_exception_becomes_an_error_and_the_worker_serves_on() -> None:
    async with ToolRunner(workers=1) as runner:
        (pid,) = runner.worker_pids
        failed = await _call(runner, "fail", message="no such order")
        assert failed.ok is False
        assert failed.error == "tool fail raised ValueError: no such order"
        assert json.loads(failed.output) == {"error": failed.error}

        exited = await _call(runner, "exit_politely")
        assert exited.ok is False
        assert exited.error == "tool exit_politely raised SystemExit: 4"

        again = await _call(runner, "whoami")
        assert again.ok
        assert int(again.output) == pid
        assert runner.worker_pids == (pid,)


async def test_bad_paths_and_arguments_are_errors(runner: ToolRunner) -> None:
    missing = await runner.call_python("tests.fixtures.tools.nope:f", {}, 5)
    assert missing.ok is False
    assert missing.error is not None
    assert "could not be loaded: cannot import module 'tests.fixtures.tools.nope'" in (
        missing.error
    )
    not_callable = await _call(runner, "NOT_CALLABLE")
    assert not_callable.error == "tool NOT_CALLABLE is not callable"
    wrong = await _call(runner, "add", a=1, c=2)
    assert wrong.error is not None
    assert wrong.error.startswith("tool add got bad arguments: TypeError")
    bad_enum = await _call(runner, "paint", colour="purple", at={"x": 0, "y": 0})
    assert bad_enum.error is not None
    assert "got bad arguments: ValueError" in bad_enum.error


async def test_call_tool_validates_arguments_before_running(runner: ToolRunner) -> None:
    spec = PythonTool(
        name="add",
        path=f"{TOOLS}:add",
        parameters={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
        timeout_s=scaled(5),
    )
    ok = await runner.call_tool(spec, '{"a": 1, "b": 2}')
    assert ok.output == "3"
    bad = await runner.call_tool(spec, '{"a": "one", "b": 2}')
    assert bad.ok is False
    assert bad.error == "tool add: invalid arguments: field 'a': expected integer, got a string"


async def test_timeout_kills_and_replaces_the_worker() -> None:
    async with ToolRunner(workers=1) as runner:
        (old_pid,) = runner.worker_pids
        started = time.monotonic()
        outcome = await runner.call_python(f"{TOOLS}:spin", {}, 1.0, name="spin")
        elapsed = time.monotonic() - started
        assert outcome.ok is False
        assert outcome.error == "tool spin timed out after 1 s"
        assert json.loads(outcome.output) == {"error": "tool spin timed out after 1 s"}
        assert 1.0 <= elapsed < 1.0 + scaled(1.0)
        assert not _alive(old_pid)
        await _full(runner)
        (new_pid,) = runner.worker_pids
        assert new_pid != old_pid
        after = await _call(runner, "whoami")
        assert int(after.output) == new_pid


async def test_worker_crash_is_reported_and_the_worker_replaced(runner: ToolRunner) -> None:
    before = set(runner.worker_pids)
    crashed = await _call(runner, "crash", code=3)
    assert crashed.ok is False
    assert crashed.error == "the tool worker crashed while running tool crash (exit code 3)"
    await _full(runner)
    after = set(runner.worker_pids)
    assert len(after) == 2
    assert len(before & after) == 1  # the other worker was left alone
    assert all(_alive(pid) for pid in after)
    results = await asyncio.gather(*(_call(runner, "add", a=i, b=1) for i in range(4)))
    assert [r.output for r in results] == ["1", "2", "3", "4"]


async def test_worker_killed_while_idle_is_replaced_before_the_next_call() -> None:
    async with ToolRunner(workers=1) as runner:
        (old_pid,) = runner.worker_pids
        os.kill(old_pid, signal.SIGKILL)
        async with asyncio.timeout(scaled(5)):
            await runner._workers[0].process.wait()  # the runner's own process handle
        outcome = await _call(runner, "whoami")
        assert outcome.ok, outcome.error
        assert int(outcome.output) != old_pid
        assert runner.worker_pids == (int(outcome.output),)


# -- concurrency and limits -------------------------------------------------------------------


async def test_concurrent_calls_spread_over_workers(runner: ToolRunner) -> None:
    started = time.monotonic()
    first, second = await asyncio.gather(
        _call(runner, "slow", seconds=0.5), _call(runner, "slow_async", seconds=0.5)
    )
    elapsed = time.monotonic() - started
    pids = {json.loads(first.output)["pid"], int(second.output)}
    assert pids == set(runner.worker_pids)
    assert elapsed < 0.5 + scaled(0.4)  # in parallel, not one after the other


async def test_pending_calls_are_bounded() -> None:
    async with ToolRunner(workers=1, max_pending=2) as runner:
        running = asyncio.create_task(_call(runner, "slow", seconds=0.5), name="test:running")
        await _until(lambda: runner.running == 1)
        queued = [
            asyncio.create_task(_call(runner, "add", a=i, b=0), name=f"test:queued-{i}")
            for i in range(2)
        ]
        await _until(lambda: runner.pending == 2)
        started = time.monotonic()
        refused = await _call(runner, "add", a=9, b=9)
        assert time.monotonic() - started < scaled(0.25)  # refused at once, not queued
        assert refused.ok is False
        assert refused.error is not None
        assert "busy" in refused.error
        assert (await running).ok
        assert [(await t).output for t in queued] == ["0", "1"]
        assert runner.pending == 0


async def test_a_call_that_waits_longer_than_its_timeout_does_not_run() -> None:
    async with ToolRunner(workers=1) as runner:
        blocker = asyncio.create_task(_call(runner, "slow", seconds=0.6), name="test:blocker")
        await _until(lambda: runner.running == 1)
        late = await runner.call_python(f"{TOOLS}:crash", {}, 0.2, name="crash")
        assert late.ok is False
        assert late.error == "tool crash cannot run now: no tool worker was free within 0.2 s; " \
            "try again shortly"
        assert (await blocker).ok
        assert len(runner.worker_pids) == 1  # crash never ran


async def test_cancelled_call_does_not_poison_the_worker() -> None:
    async with ToolRunner(workers=1) as runner:
        (pid,) = runner.worker_pids
        task = asyncio.create_task(_call(runner, "slow", seconds=0.3), name="test:cancelled")
        await _until(lambda: runner.running == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The next call gets its own answer (not the cancelled call's) from the same worker.
        after = await _call(runner, "whoami")
        assert after.output == str(pid)
        assert runner.worker_pids == (pid,)


async def test_calls_outside_the_runner_lifetime_are_refused() -> None:
    runner = ToolRunner(workers=1)
    early = await _call(runner, "add", a=1, b=1)
    assert early.ok is False
    assert early.error == "tool add cannot run: the tool runner is not running"
    async with runner:
        pass
    late = await _call(runner, "add", a=1, b=1)
    assert late.ok is False


def test_invalid_pool_sizes() -> None:
    with pytest.raises(ValueError):
        ToolRunner(workers=0)
    with pytest.raises(ValueError):
        ToolRunner(max_pending=0)


# -- shutdown -------------------------------------------------------------------------------


async def test_shutdown_leaves_no_child_processes() -> None:
    before = set(_children())
    runner = ToolRunner(workers=3)
    async with runner:
        pids = set(runner.worker_pids)
        assert len(pids) == 3
        assert pids <= set(_children())
        spinning = asyncio.create_task(
            runner.call_python(f"{TOOLS}:spin", {}, 30, name="spin"), name="test:spinning"
        )
        await _until(lambda: runner.running == 1)
        started = time.monotonic()
    assert time.monotonic() - started < scaled(5)
    outcome = await spinning
    assert outcome.ok is False
    assert outcome.error == "the tool runner is shutting down"
    assert set(_children()) - before == set()  # none left, not even as zombies
    assert not any(_alive(pid) for pid in pids)


async def test_start_failure_raises_and_leaves_nothing() -> None:
    before = set(_children())
    with pytest.raises(RuntimeError, match="tool workers failed to start"):
        async with ToolRunner(workers=2, python="/nonexistent/python3"):
            pass  # pragma: no cover
    assert set(_children()) - before == set()


async def test_preload_failures_are_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    async with ToolRunner(workers=1, preload=["no_such_module_xyz"]) as runner:
        assert (await _call(runner, "add", a=1, b=2)).output == "3"
    assert "preload no_such_module_xyz: ModuleNotFoundError" in caplog.text


# -- guardrails -----------------------------------------------------------------------------


async def test_python_guardrails(runner: ToolRunner) -> None:
    def check(path: str, text: str) -> Awaitable[GuardrailOutcome]:
        return runner.run_python_guardrail(f"{TOOLS}:{path}", text, scaled(5), name=path)

    refund = await check("deny_refunds", "Sure, I will refund you today.")
    assert (refund.ok, refund.tripped, refund.reason) == (True, True, "promised a refund")
    fine = await check("deny_refunds", "Your order shipped.")
    assert (fine.ok, fine.tripped, fine.reason) == (True, False, None)
    boolean = await check("deny_bool", "that is forbidden")
    assert (boolean.tripped, boolean.reason) == (True, None)
    as_dict = await check("deny_dict", "the secret is")
    assert (as_dict.tripped, as_dict.reason) == (True, "mentioned a secret")
    empty_dict = await check("deny_dict", "hello")
    assert empty_dict.tripped is False
    broken = await check("broken_guardrail", "anything")
    assert (broken.ok, broken.tripped) == (False, False)
    assert broken.error == "guardrail broken_guardrail raised RuntimeError: guardrail bug"


async def test_run_guardrail_dispatches_on_the_spec(runner: ToolRunner) -> None:
    spec = GuardrailSpec(name="refunds", python=f"{TOOLS}:deny_refunds")
    assert (await runner.run_guardrail(spec, "a refund")).tripped
    with pytest.raises(ValueError, match="does not run in a tool worker"):
        await runner.run_guardrail(GuardrailSpec(name="re", deny_regex="x"), "x")


# -- Agents SDK -----------------------------------------------------------------------------


@pytest.fixture
async def sdk_runner() -> AsyncIterator[ToolRunner]:
    # The SDK takes about a second to import: preload it so calls do not pay for it.
    async with ToolRunner(workers=1, preload=[SDK_AGENT], start_timeout_s=scaled(60)) as pool:
        yield pool


async def test_sdk_function_tool_through_a_realtime_handoff(sdk_runner: ToolRunner) -> None:
    outcome = await sdk_runner.call_sdk_tool(
        SDK_AGENT, "Billing", "lookup_order", '{"order_id": "A17", "verbose": true}',
        scaled(10), call_id="call_abc",
    )
    assert outcome.ok, outcome.error
    (pid,) = sdk_runner.worker_pids
    assert outcome.output == f"A17: shipped (call call_abc, tool lookup_order, pid {pid})"


async def test_sdk_async_tool_on_a_direct_handoff(sdk_runner: ToolRunner) -> None:
    spec = SdkTool(name="opening_hours", agent_path=SDK_AGENT, agent_name="Support",
                   timeout_s=scaled(10))
    outcome = await sdk_runner.call_tool(spec, '{"day": "Monday"}')
    assert json.loads(outcome.output) == {"day": "Monday", "hours": "9-17"}


async def test_sdk_tool_failures(sdk_runner: ToolRunner) -> None:
    raised = await sdk_runner.call_sdk_tool(SDK_AGENT, "Support", "broken_tool", "{}", scaled(10))
    assert raised.error == "tool broken_tool raised RuntimeError: sdk tool bug"
    bad_args = await sdk_runner.call_sdk_tool(
        SDK_AGENT, "Billing", "lookup_order", '{"order": 1}', scaled(10)
    )
    assert bad_args.ok is False
    assert bad_args.error is not None
    assert bad_args.error.startswith("tool lookup_order failed: An error occurred")
    nobody = await sdk_runner.call_sdk_tool(SDK_AGENT, "Nobody", "x", "{}", scaled(10))
    assert nobody.error == f"no agent named 'Nobody' is reachable from {SDK_AGENT}"
    no_tool = await sdk_runner.call_sdk_tool(SDK_AGENT, "Triage", "lookup_order", "{}", 10)
    assert no_tool.error == "agent 'Triage' has no function tool named 'lookup_order'"
    not_agent = await sdk_runner.call_sdk_tool(f"{TOOLS}:add", "x", "y", "{}", scaled(10))
    assert not_agent.error == f"{TOOLS}:add is not an Agents SDK agent"


async def test_sdk_output_guardrail(sdk_runner: ToolRunner) -> None:
    tripped = await sdk_runner.run_sdk_guardrail(
        SDK_AGENT, "Billing", "no_refunds", "I can refund that.", scaled(10)
    )
    assert (tripped.ok, tripped.tripped, tripped.reason) == (True, True,
                                                             "Billing promised a refund")
    spec = GuardrailSpec(name="no_refunds", sdk_agent_path=SDK_AGENT, sdk_agent_name="Billing")
    clean = await sdk_runner.run_guardrail(spec, "Your order shipped.", scaled(10))
    assert (clean.ok, clean.tripped, clean.reason) == (True, False, None)
    missing = await sdk_runner.run_sdk_guardrail(SDK_AGENT, "Billing", "nope", "x", scaled(10))
    assert missing.error == "agent 'Billing' has no output guardrail named 'nope'"
