"""What the agent does on a call besides talking: tools, handoffs, guardrails, DTMF, call control.

:class:`CallAgent` sits between the call session (which owns the SIP leg, the media and the
Realtime connection) and the agent definitions. It builds the agent's ``session.update`` (tools,
handoff tools, call-control tools), and reacts to the Realtime server events that matter for
acting: a finished function call runs its tool (user code in a worker process, HTTP tools in the
loop, call control here) in a named background task so audio never waits; every call gets
exactly one ``function_call_output`` (a tool path that raises gets an error output), and one
``response.create`` follows. Response requests are serialized: one is sent only when no response
is requested or active, and one asked for meanwhile (or refused with
``conversation_already_has_active_response``) is sent after the next ``response.done``. A
handoff swaps instructions and tools on the live session and is recorded. The agent's transcript
is checked by its output guardrails as it streams; a trip stops the audio at once and runs the
configured action. Caller DTMF is matched against the agent's rules and batched to the model.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.agents import builtins, dtmf, guardrails, handoffs
from gateway.agents.arguments import ToolArgumentError, parse_arguments
from gateway.agents.http_tool import HttpToolClient
from gateway.agents.runner import ToolOutcome
from gateway.agents.service import ToolService
from gateway.agents.spec import BuiltinTool, GuardrailSpec, HttpTool, ToolSpec
from gateway.calls.record import AgentActivity
from gateway.calls.turns import TurnMeter
from gateway.calls.usage import UsageMeter, cost_usd
from gateway.dialplan.router import RouteDecision
from gateway.dialplan.schema import AgentSpec
from gateway.media.playout import PlayedState
from gateway.realtime import events as rt

log = logging.getLogger("gateway.agent")

#: Corrective instruction when a ``retry`` guardrail has no message of its own.
DEFAULT_RETRY_MESSAGE = ("Your last answer broke a rule and was cut off. Answer again without "
                         "that content.")
#: How long ``end_call`` / ``transfer_call`` wait for the agent to finish its sentence.
FAREWELL_TIMEOUT_S = 20.0
#: Function calls remembered to answer each exactly once (older ids are forgotten first).
_ANSWERED_CALL_IDS = 256
#: ``_active_response`` while our ``response.create`` waits for its ``response.created``.
_REQUESTED = "<requested>"
#: Transcript text a call's record keeps (about an hour of conversation); later turns are
#: still reported live, not kept.
MAX_TRANSCRIPT_CHARS = 100_000
#: A tool's output kept in the call record (the model got all of it).
_MAX_TOOL_OUTPUT = 8_000
_event_ids = itertools.count(1)


def tool_error_category(error: str | None) -> str | None:
    """A content-free category of a tool failure for the call record and logs.

    Tool errors quote exception messages, arguments and HTTP bodies (call content); the
    category says only what kind of failure it was: ``timeout``, ``http 500``, ``busy``,
    ``worker crashed``, ``invalid arguments``, ``connect failed``, ``unavailable``,
    ``transfer failed``, ``unknown tool`` or ``exception``.

    Args:
        error: The outcome's error text, ``None`` for a success.
    """
    if error is None:
        return None
    text = error.lower()
    status = re.search(r"\bhttp (\d{3})\b", text)
    if status is not None:
        return f"http {status.group(1)}"
    for needle, category in (("timed out", "timeout"), ("crashed", "worker crashed"),
                             ("cannot run now", "busy"), ("another transfer", "busy"),
                             ("invalid arguments", "invalid arguments"),
                             ("bad arguments", "invalid arguments"),
                             ("could not connect", "connect failed"),
                             ("not available", "unavailable"), ("not running", "unavailable"),
                             ("transfer failed", "transfer failed"),
                             ("unknown tool", "unknown tool")):
        if needle in text:
            return category
    return "exception"


@dataclass(frozen=True)
class TransferResult:
    """How a blind transfer (REFER) ended."""

    ok: bool
    status: int
    reason: str


class CallControl(Protocol):
    """What the agent may do to its call; implemented by the call session."""

    async def send(self, event: rt.ClientEvent) -> None:
        """Send a client event on the Realtime session."""

    def flush_playout(self) -> PlayedState | None:
        """Stop the agent's audio now; report what of the current item was heard."""

    async def wait_playout_idle(self, timeout_s: float) -> bool:
        """Wait until the agent's audio has all been played (False on timeout)."""

    def end_call(self, reason: str) -> None:
        """End the call (BYE) and the session, recording ``reason``."""

    async def transfer(self, uri: str, timeout_s: float) -> TransferResult:
        """Blind-transfer the caller by REFER and wait for the final NOTIFY."""

    def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 digits to the caller."""


@dataclass
class AgentServices:
    """Process-wide services agents use (owned by the app)."""

    runner: ToolService | None = None
    http: HttpToolClient | None = None


@dataclass
class ActivityLog:
    """What the agent did on the call, for the call record (no call content).

    ``listener`` hears each entry as it happens (a SIP worker's link reports them to the
    control process as ``call_event``); it must be quick and never raise.
    """

    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, object]] = field(default_factory=list)
    guardrail_events: list[dict[str, object]] = field(default_factory=list)
    dtmf_digits: int = 0
    #: Caller and agent turns as transcribed (call content: the record keeps them, the logs
    #: show them only with ``logging.call_content``), at most :data:`MAX_TRANSCRIPT_CHARS`.
    transcript: list[dict[str, Any]] = field(default_factory=list)
    transcript_chars: int = 0
    usage: UsageMeter = field(default_factory=UsageMeter)
    #: Turn latency, first agent audio and Realtime errors by code.
    turns: TurnMeter = field(default_factory=TurnMeter)
    listener: Callable[[str, Mapping[str, Any]], None] | None = None

    def fill_record(self, record: AgentActivity, model: str | None) -> None:
        """Copy what the agent did into a call's record (a SIP call's or a sideband call's).

        Also sets ``model``, the tokens it used and what they cost.
        """
        record.tool_calls = self.tool_calls
        record.handoffs = self.handoffs
        record.guardrail_events = self.guardrail_events
        record.dtmf_digits = self.dtmf_digits
        record.transcript = self.transcript
        record.model = model
        record.usage = self.usage.as_dict()
        record.cost_usd = cost_usd(record.usage, model or "")
        record.turn_latency_ms = self.turns.turn_latency_ms
        record.first_audio_at = self.turns.first_audio_at
        record.realtime_errors = self.turns.realtime_errors

    def turn(self, role: str, text: str) -> None:
        """A transcribed turn (``caller`` or ``agent``), kept and reported."""
        text = text.strip()
        if not text:
            return
        entry = {"role": role, "text": text, "at": time.time()}
        if self.transcript_chars + len(text) <= MAX_TRANSCRIPT_CHARS:
            self.transcript.append(entry)
            self.transcript_chars += len(text)
        self.note("transcript", {"role": role, "text": text[:4000]})

    def note(self, kind: str, data: Mapping[str, Any]) -> None:
        """Tell the listener about one entry (kinds: ``docs/ipc.md``, ``call_event``)."""
        if self.listener is not None:
            try:
                self.listener(kind, data)
            except Exception:  # telemetry must never break a call
                log.exception("call event listener failed")


class CallAgent:
    """The acting side of one call's agent (see the module docstring)."""

    def __init__(self, decision: RouteDecision, control: CallControl, services: AgentServices,
                 *, name: str, log_content: bool = False, leg_id: int | None = None) -> None:
        assert decision.agent is not None
        self.decision = decision
        self.control = control
        self.services = services
        self.name = name
        self.leg_id = leg_id
        self.log_content = log_content
        self.agent: AgentSpec = decision.agent
        self.activity = ActivityLog()
        self.history = handoffs.HandoffHistory()
        self._tasks: set[asyncio.Task[None]] = set()
        self._task_ids = itertools.count(1)
        #: The active response's id, ``_REQUESTED`` while our request awaits its
        #: ``response.created``, ``None`` when the model is idle.
        self._active_response: str | None = None
        self._request_event_id: str | None = None
        self._answered: dict[str, None] = {}
        self._response_wanted = False
        self._response_instructions: str | None = None
        self._last_request: str | None = None
        self._pending_tools = 0
        self._audio_started = False
        self._ending = False
        self._response_done = asyncio.Event()
        self._response_done.set()
        self._dtmf_timer: asyncio.Task[None] | None = None
        self._tripped: set[str] = set()
        self._use(self.agent)

    def _use(self, agent: AgentSpec) -> None:
        caps = agent.capabilities
        self.agent = agent
        self._tools: dict[str, ToolSpec] = {}
        for tool in caps.tools:
            name = tool.tool_name if isinstance(tool, BuiltinTool) else tool.name
            self._tools[name] = tool
        self._handoffs = {h.name: h for h in caps.handoffs}
        self._guards = guardrails.compile_guardrails(caps.guardrails)
        self._monitor = guardrails.TranscriptMonitor(caps.guardrail_debounce_chars)
        self._dtmf = dtmf.DtmfCollector(caps.dtmf)

    # Session configuration ---------------------------------------------------------------

    def instructions(self) -> str:
        """The current agent's instructions, rendered for this call."""
        if self.agent is self.decision.agent and self.decision.instructions is not None:
            return self.decision.instructions
        return self.decision.render(self.agent)[0]

    def tool_definitions(self) -> list[dict[str, Any]]:
        """GA function tools for the current agent: its tools, call control, handoffs."""
        out: list[dict[str, Any]] = []
        for spec in self.agent.capabilities.tools:
            if isinstance(spec, BuiltinTool):
                out.append(builtins.builtin_tool(spec))
            else:
                out.append({"type": "function", "name": spec.name,
                            "description": spec.description,
                            "parameters": dict(spec.parameters or {})})
        descriptions = {name: self.decision.render(agent)[0]
                        for name, agent in self.decision.handoff_agents.items()}
        out.extend(handoffs.handoff_tools(self.agent.capabilities.handoffs, descriptions))
        return out

    # Server events -----------------------------------------------------------------------

    async def on_event(self, event: Any) -> None:
        """React to a Realtime server event (called by the session, in order)."""
        self.activity.turns.on_event(event, now=time.monotonic(), wall=time.time())
        if isinstance(event, rt.ResponseCreated):
            # Not necessarily ours (server VAD starts responses too): _request_event_id stays
            # so a refusal of ours that follows is still recognised.
            self._active_response = event.response.id
            self._response_done.clear()
        elif isinstance(event, rt.ResponseDone):
            if event.response.usage is not None:
                self.activity.usage.add(event.response.usage)
            if self._active_response != _REQUESTED:
                self._active_response = None
                self._response_done.set()
            await self._maybe_respond()
        elif isinstance(event, rt.ErrorEvent):
            await self._on_error(event)
        elif isinstance(event, rt.ResponseOutputAudioDelta):
            self._audio_started = True
        elif isinstance(event, rt.ResponseFunctionCallArgumentsDone):
            self._on_function_call(event)
        elif isinstance(event, rt.ResponseOutputAudioTranscriptDelta):
            check = self._monitor.on_delta(event.item_id, event.delta)
            if check is not None:
                await self._check(check)
        elif isinstance(event, rt.ResponseOutputAudioTranscriptDone):
            self.activity.turn("agent", event.transcript)
            check = self._monitor.on_done(event.item_id, event.transcript)
            if check is not None:
                await self._check(check)
        elif isinstance(event, rt.ConversationItemInputAudioTranscriptionCompleted):
            self.activity.turn("caller", event.transcript)

    async def request_response(self, instructions: str | None = None) -> None:
        """Ask for one model response as soon as no response is active and no tool runs."""
        self._response_wanted = True
        if instructions is not None:
            self._response_instructions = instructions
        await self._maybe_respond()

    @property
    def response_active(self) -> bool:
        """Whether a response is requested or streaming."""
        return self._active_response is not None

    @property
    def responding(self) -> bool:
        """Whether a response is requested, active or wanted (e.g. after a tool output)."""
        return (self._active_response is not None or self._response_wanted
                or self._pending_tools > 0)

    def on_reconnected(self) -> bool:
        """The Realtime session was replaced: forget the old session's response state.

        Returns:
            Whether a response was requested or active (it is gone and must be asked for
            again) or wanted.
        """
        lost = self._active_response is not None or self._response_wanted
        self._active_response = None
        self._request_event_id = None
        self._response_done.set()
        return lost

    async def _maybe_respond(self) -> None:
        if (not self._response_wanted or self._active_response is not None
                or self._pending_tools or self._ending):
            return
        self._response_wanted = False
        instructions, self._response_instructions = self._response_instructions, None
        params = {"instructions": instructions} if instructions else None
        event_id = f"evt_gw_resp_{next(_event_ids)}"
        # Claim the model before sending: a second request before response.created waits.
        self._active_response = _REQUESTED
        self._request_event_id = event_id
        self._response_done.clear()
        self._last_request = instructions
        await self.control.send(rt.ResponseCreate(response=params, event_id=event_id))

    async def _on_error(self, event: rt.ErrorEvent) -> None:
        event_id = event.error.event_id
        if event_id is None or event_id != self._request_event_id:
            return
        # Our response.create was refused. If a response (e.g. one server VAD started) is
        # active, ask again after its response.done; otherwise give up on this one.
        self._request_event_id = None
        if event.error.code == "conversation_already_has_active_response":
            self._response_wanted = True
            if self._response_instructions is None:
                self._response_instructions = self._last_request
        if self._active_response == _REQUESTED:
            if event.error.code == "conversation_already_has_active_response":
                self._active_response = "<unknown>"  # cleared by the active one's done
            else:
                self._active_response = None
                self._response_done.set()

    # Tools -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{self.name}:{what}:{next(self._task_ids)}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def _on_function_call(self, event: rt.ResponseFunctionCallArgumentsDone) -> None:
        if event.call_id in self._answered:
            log.warning("%s: function call %s seen twice; answered once", self.name,
                        event.call_id)
            return
        self._answered[event.call_id] = None
        while len(self._answered) > _ANSWERED_CALL_IDS:
            del self._answered[next(iter(self._answered))]
        self._pending_tools += 1
        self._spawn(self._run_tool(event.call_id, event.name, event.arguments),
                    f"tool:{event.name}")

    async def _run_tool(self, call_id: str, name: str, arguments: str) -> None:
        started = time.monotonic()
        followup = True
        try:
            try:
                if name in self._handoffs:
                    outcome = await self._handoff(call_id, name, arguments)
                elif name in self._tools:
                    outcome, followup = await self._call(self._tools[name], call_id, arguments)
                else:
                    outcome = ToolOutcome.failure(f"unknown tool {name!r}")
            except Exception as exc:
                # Whatever broke on the way (a closed HTTP client, a full SIP command queue),
                # the model waits for an output: it gets one.
                log.error("%s: tool %s raised %s%s", self.name, name, type(exc).__name__,
                          f": {exc}" if self.log_content else "")
                outcome = ToolOutcome.failure(f"tool {name} failed: {type(exc).__name__}")
            category = tool_error_category(outcome.error)
            # The record keeps arguments and output (call content: the log line leaves them
            # out unless logging.call_content, gateway.calls.redact), bounded.
            entry = {
                "name": name, "ok": outcome.ok,
                "duration_s": round(time.monotonic() - started, 3),
                **({"error": outcome.error if self.log_content else category}
                   if outcome.error else {}),
                "arguments": arguments}
            output = (outcome.output or "")[:_MAX_TOOL_OUTPUT]
            self.activity.tool_calls.append({**entry, "output": output})
            self.activity.note("tool", {**{k: v for k, v in entry.items() if k != "arguments"},
                                        "output": output[:2000]})
            await self.control.send(rt.ConversationItemCreate.function_call_output(
                call_id, outcome.output))
        finally:
            self._pending_tools -= 1
        if followup:
            await self.request_response()
        else:
            await self._maybe_respond()

    async def _call(self, spec: ToolSpec, call_id: str,
                    arguments: str) -> tuple[ToolOutcome, bool]:
        """Run one tool; returns its outcome and whether the model should speak next."""
        if isinstance(spec, BuiltinTool):
            return await self._builtin(spec, arguments)
        if isinstance(spec, HttpTool):
            if self.services.http is None:
                return ToolOutcome.failure("HTTP tools are not available"), True
            try:
                args = parse_arguments(arguments, spec.parameters)
            except ToolArgumentError as exc:
                return ToolOutcome.failure(str(exc)), True
            outcome = await self.services.http.call(spec, args)
        else:
            if self.services.runner is None:
                return ToolOutcome.failure("tool workers are not running"), True
            outcome = await self.services.runner.call_tool(spec, arguments, call_id=call_id,
                                                           leg_id=self.leg_id)
        if not outcome.ok:
            # The error can quote the exception, the arguments or an HTTP body: call content.
            log.warning("%s: tool %s failed%s", self.name, spec.name,
                        f": {outcome.error}" if self.log_content else
                        " (details hidden; logging.call_content shows them)")
        return outcome, True

    async def _builtin(self, spec: BuiltinTool, arguments: str) -> tuple[ToolOutcome, bool]:
        try:
            args = json.loads(arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            return ToolOutcome.failure(f"bad arguments: {exc}"), True
        if spec.builtin == "end_call":
            self._ending = True
            self._spawn(self._end_after_farewell(builtins.end_call_reason(args)), "end-call")
            return ToolOutcome.success(json.dumps(
                {"ok": True, "note": "the call ends after your last sentence"})), False
        if spec.builtin == "send_dtmf":
            try:
                digits = builtins.dtmf_digits(args)
            except ValueError as exc:
                return ToolOutcome.failure(str(exc)), True
            self.control.send_dtmf(digits)
            return ToolOutcome.success(json.dumps({"ok": True, "sent": digits})), True
        try:
            uri = builtins.resolve_transfer_target(spec, args)
        except ValueError as exc:
            return ToolOutcome.failure(str(exc)), True
        # Let the agent finish "I'll transfer you now" before the caller leaves.
        await self._finish_speaking()
        result = await self.control.transfer(uri, spec.timeout_s)
        if result.ok:
            self._ending = True
            self.control.end_call(f"transferred to {uri}")
            return ToolOutcome.success(json.dumps({"ok": True})), False
        return ToolOutcome.failure(
            f"the transfer failed ({result.status} {result.reason}); the caller is still "
            "on the line"), True

    async def _finish_speaking(self) -> None:
        try:
            await asyncio.wait_for(self._response_done.wait(), FAREWELL_TIMEOUT_S)
        except TimeoutError:
            return
        await self.control.wait_playout_idle(FAREWELL_TIMEOUT_S)

    async def _end_after_farewell(self, reason: str) -> None:
        await self._finish_speaking()
        self.control.end_call(f"agent ended the call{': ' + reason if reason else ''}")

    # Handoffs ----------------------------------------------------------------------------

    async def _handoff(self, call_id: str, tool_name: str, arguments: str) -> ToolOutcome:
        spec = self._handoffs[tool_name]
        target = self.decision.handoff_agents.get(spec.agent)
        if target is None:
            return ToolOutcome.failure(f"agent {spec.agent!r} is not available")
        reason, context = handoffs.parse_handoff_arguments(arguments)
        previous = self.agent
        self._use(target)
        update = handoffs.handoff_session_update(
            self.instructions(), self.tool_definitions(), voice_locked=self._audio_started,
            current_voice=previous.voice, target_voice=target.voice)
        await self.control.send(rt.SessionUpdate(session=rt.SessionConfig(
            instructions=update.get("instructions"),
            tools=tuple(update.get("tools", ())),
            extra={k: v for k, v in update.items() if k not in ("type", "instructions", "tools")},
        )))
        record = handoffs.HandoffRecord(at=time.time(), from_agent=previous.name,
                                        to_agent=target.name, reason=reason, context=context,
                                        tool_call_id=call_id)
        self.history.append(record)
        # The model writes reason and context from what the caller said: call content, kept
        # in the record, out of the log line unless logging.call_content (gateway.calls.redact).
        entry = record.as_dict()
        self.activity.handoffs.append(entry)
        self.activity.note("handoff", entry)
        log.info("%s: handoff %s -> %s", self.name, previous.name, target.name)
        return ToolOutcome.success(json.dumps({"ok": True, "now_speaking": target.name}))

    # Guardrails --------------------------------------------------------------------------

    async def _check(self, check: guardrails.CheckRequest) -> None:
        trip = self._guards.check(check.text)
        if trip is not None:
            await self._trip(trip, check)
            return
        for spec in self._guards.external:
            self._spawn(self._check_external(spec, check), f"guardrail:{spec.name}")

    async def _check_external(self, spec: GuardrailSpec,
                              check: guardrails.CheckRequest) -> None:
        runner = self.services.runner
        if runner is None:
            return
        if spec.sdk_agent_path is not None:
            outcome = await runner.run_sdk_guardrail(
                spec.sdk_agent_path, spec.sdk_agent_name or "", spec.name, check.text,
                leg_id=self.leg_id)
        else:
            assert spec.python is not None
            outcome = await runner.run_python_guardrail(spec.python, check.text, name=spec.name,
                                                        leg_id=self.leg_id)
        if not outcome.ok:
            log.warning("%s: guardrail %s did not run%s", self.name, spec.name,
                        f": {outcome.error}" if self.log_content else "")
        elif outcome.tripped:
            await self._trip(guardrails.Trip.from_spec(spec, outcome.reason or spec.name), check)

    async def _trip(self, trip: guardrails.Trip, check: guardrails.CheckRequest) -> None:
        if check.item_id in self._tripped:
            return
        self._tripped.add(check.item_id)
        self._monitor.mark_tripped(check.item_id)
        event = guardrails.GuardrailEvent.from_trip(trip, check, at=time.time(),
                                                    include_text=self.log_content)
        self.activity.guardrail_events.append(event.as_dict())
        self.activity.note("guardrail", self.activity.guardrail_events[-1])
        log.warning("%s: guardrail %s tripped (%s)", self.name, trip.guardrail, trip.action)
        played: PlayedState | None = None
        for step in guardrails.plan_trip(trip, item_id=check.item_id,
                                         default_retry_message=DEFAULT_RETRY_MESSAGE):
            if isinstance(step, guardrails.FlushPlayout):
                played = self.control.flush_playout()
            elif isinstance(step, guardrails.CancelResponse):
                if self._active_response is not None:
                    await self.control.send(rt.ResponseCancel())
            elif isinstance(step, guardrails.TruncateItem):
                heard = played.audio_end_ms if played and played.item_id == step.item_id else 0
                await self.control.send(rt.ConversationItemTruncate(
                    item_id=step.item_id, content_index=0, audio_end_ms=heard))
            elif isinstance(step, guardrails.SendUserMessage):
                await self.control.send(rt.ConversationItemCreate.user_text(step.text))
            elif isinstance(step, guardrails.CreateResponse):
                await self.request_response(step.instructions)
            elif isinstance(step, guardrails.Transfer):
                self._spawn(self._transfer_and_end(
                    step.target, f"guardrail transferred the call to {step.target}"),
                    "guardrail-transfer")
            elif isinstance(step, guardrails.HangUp):
                self._ending = True
                self.control.end_call(f"guardrail {trip.guardrail} ended the call")

    async def _transfer_and_end(self, uri: str, reason: str) -> None:
        result = await self.control.transfer(uri, 30.0)
        if result.ok:
            self.control.end_call(reason)

    # DTMF --------------------------------------------------------------------------------

    async def on_dtmf(self, digit: str) -> None:
        """A keypad digit from the caller."""
        self.activity.dtmf_digits += 1
        self.activity.note("dtmf", {"digits": self.activity.dtmf_digits})
        await self._apply_dtmf(self._dtmf.on_digit(digit, time.monotonic()))
        self._arm_dtmf_timer()

    def _arm_dtmf_timer(self) -> None:
        if self._dtmf_timer is not None:
            self._dtmf_timer.cancel()
            self._dtmf_timer = None
        deadline = self._dtmf.next_deadline()
        if deadline is not None:
            self._dtmf_timer = self._spawn(self._dtmf_wait(deadline), "dtmf-timer")

    async def _dtmf_wait(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        self._dtmf_timer = None
        await self._apply_dtmf(self._dtmf.on_timer(time.monotonic()))
        self._arm_dtmf_timer()

    async def _apply_dtmf(self, decisions: list[dtmf.DtmfDecision]) -> None:
        for decision in decisions:
            if isinstance(decision, dtmf.SendToAgent):
                await self.control.send(rt.ConversationItemCreate.user_text(
                    dtmf.agent_message(decision.digits)))
                await self.request_response()
                continue
            rule = decision.rule
            log.info("%s: DTMF rule %s -> %s", self.name, rule.digits, rule.action)
            if rule.action == "hangup":
                self._ending = True
                self.control.end_call(f"caller pressed {rule.digits}")
            elif rule.action == "transfer" and rule.target:
                self._spawn(self._transfer_and_end(
                    rule.target, f"caller pressed {rule.digits}: transferred to {rule.target}"),
                    "dtmf-transfer")
            elif rule.action == "say":
                await self.request_response(say_exactly(rule.message))

    # Lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Cancel every tool, guardrail and timer task of this call and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def say_exactly(line: str) -> str:
    """Instructions that make the model say ``line`` word for word, now.

    Quotes delimit the line; quotes inside it (e.g. from a caller's display name) would end it
    early, so they become apostrophes, and the line is folded onto one line.
    """
    line = " ".join(line.replace('"', "'").split())
    return f'Say exactly "{line}" now.'
