// The gateway's live call monitor (docs/control.md, "Live call monitor").
//
// One stream, GET /v1/events, feeds everything: its snapshot lists the live calls, then each
// call's events (offered, started, state, transcript, tool, handoff, guardrail, dtmf,
// barge_in, transfer, ended) update the call they name. Ended calls move to "Recent calls"
// with their record from GET /v1/calls/{id}. Actions are POSTs to /v1/calls/{id}/hangup and
// /transfer. Every request carries the operator's token, which lives in sessionStorage only
// (gone with the tab) and never in a URL. The stream is re-opened with backoff when it drops;
// a refused token stops everything and asks again. After the snapshot the server replays the
// live calls' history (the page may open mid-call); a re-opened stream sends the last event id
// it saw (Last-Event-ID), so the replay brings only what was missed, never a line twice.

import { readEventStream } from "./sse.js";
import {
  callItem, duration, elapsed, eventItem, handoffItem, toolCard, transcriptLine,
} from "./view.js";

const TOKEN_KEY = "gateway.monitor.token";
const RECENT_KEY = "gateway.monitor.recent";
// Bounds: a long call must not grow the page without limit (oldest entries go first).
const MAX_LINES = 500;
const MAX_TOOLS = 100;
const MAX_EVENTS = 200;
const MAX_RECENT = 50;
const RETRY_MS = [1000, 2000, 5000, 10000, 30000];
// The server sends ": ping" after 15 s of silence; three missed pings: the stream is dead.
const STALL_MS = 45000;
// Levels come ~4 times a second while the page watches; older than this, the meters drop.
const LEVELS_STALE_MS = 2000;

const $ = (id) => document.getElementById(id);
const calls = new Map(); // call id -> call, live and recent
let recent = []; // ids of ended calls, newest first
let selected = null;
let token = sessionStorage.getItem(TOKEN_KEY);
let stream = null; // AbortController of the open event stream
let retries = 0;
let lastEventId = null; // the `id:` of the last event received, for Last-Event-ID
let renderQueued = false;

// The API -----------------------------------------------------------------------------------

/** A URL of the API relative to this page (/monitor/ -> /v1/...), so a path prefix works. */
function apiUrl(path) {
  return new URL(`../${path}`, document.baseURI).toString();
}

function callPath(id, action = "") {
  return `v1/calls/${encodeURIComponent(id)}${action ? `/${action}` : ""}`;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(apiUrl(path), {
    method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await resp.json();
  } catch {
    // not JSON: the status says enough
  }
  if (resp.status === 401) refused(data?.reason);
  return { status: resp.status, data };
}

async function connect() {
  disconnect();
  const controller = new AbortController();
  stream = controller;
  setStatus("connecting", "connecting…");
  let seen = Date.now();
  let stalled = false;
  const watchdog = setInterval(() => {
    if (Date.now() - seen < STALL_MS) return;
    stalled = true;
    controller.abort();
  }, 5000);
  try {
    const headers = { Authorization: `Bearer ${token}`, Accept: "text/event-stream" };
    if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
    const resp = await fetch(apiUrl("v1/events"), {
      headers, cache: "no-store", signal: controller.signal,
    });
    if (resp.status === 401) {
      const data = await resp.json().catch(() => null);
      refused(data?.reason);
      return;
    }
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    setStatus("live", "live");
    await readEventStream(resp, (name, data, id) => {
      retries = 0;
      if (id !== null && id !== "") lastEventId = id;
      onEvent(name, data);
    }, () => {
      seen = Date.now();
    });
    throw new Error("the stream ended");
  } catch (err) {
    if (controller.signal.aborted && !stalled) return; // closed on purpose
    const wait = RETRY_MS[Math.min(retries, RETRY_MS.length - 1)];
    retries += 1;
    const why = stalled ? "no data for 45 s" : err.message;
    setStatus("retrying", `disconnected (${why}); retrying in ${wait / 1000} s`);
    setTimeout(() => {
      if (stream === controller) connect();
    }, wait);
  } finally {
    clearInterval(watchdog);
  }
}

function disconnect() {
  if (stream !== null) stream.abort();
  stream = null;
}

function refused(reason) {
  disconnect();
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenForm(`The gateway refused the token${reason ? `: ${reason}` : ""}.`);
}

// Calls -------------------------------------------------------------------------------------

function newCall(id) {
  return {
    id, from: null, to: null, route: null, agent: null, codec: null, state: "offered",
    live: true, startedLocal: null, endedLocal: null, endReason: null, outcome: null,
    transcript: [], handoffs: [], tools: [], events: [],
    lastHeard: { caller: null, agent: null }, record: null, kind: null,
    levels: { caller: 0, agent: 0, at: null },
  };
}

function getCall(id) {
  let call = calls.get(id);
  if (call === undefined) {
    call = newCall(id);
    calls.set(id, call);
  }
  return call;
}

function push(list, item, max) {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

function note(call, kind, text) {
  push(call.events, { kind, text, at: Date.now() }, MAX_EVENTS);
}

/** A call object of the API (docs/control.md, "The call object") into our call. */
function applyCallObject(call, obj) {
  call.from = obj.from_user ?? call.from;
  call.to = obj.to_user ?? call.to;
  call.route = obj.route ?? call.route;
  call.codec = obj.codec ?? call.codec;
  call.kind = obj.kind ?? call.kind;
  // The API's agent is the one the call started with; a handoff we saw is newer.
  if (call.handoffs.length === 0 && obj.agent) call.agent = obj.agent;
  call.state = obj.state ?? call.state;
  call.live = obj.live !== false;
  if (typeof obj.duration_s === "number") {
    const now = Date.now();
    if (call.live) call.startedLocal = now - obj.duration_s * 1000;
    else if (call.endedLocal === null) {
      // Only the length is known: show it, anchored at now.
      call.endedLocal = now;
      call.startedLocal = now - obj.duration_s * 1000;
    } else call.startedLocal = call.endedLocal - obj.duration_s * 1000;
  }
  if (!call.live) {
    call.endReason = obj.end_reason ?? call.endReason;
    call.outcome = obj.outcome ?? call.outcome;
    if (obj.record) applyRecord(call, obj.record);
  }
}

/** An ended call's record: its transcript, handoffs and tool calls replace what we saw. */
function applyRecord(call, record) {
  call.record = record;
  const handoffs = (record.handoffs ?? []).map((h) => ({
    from: h.from_agent, to: h.to_agent, at: h.at ? h.at * 1000 : null,
  }));
  if (handoffs.length >= call.handoffs.length) call.handoffs = handoffs;
  if (handoffs.length) call.agent = handoffs[handoffs.length - 1].to;
  const agentAt = (ms) => {
    let name = record.agent ?? call.agent ?? "agent";
    for (const h of handoffs) if (h.at !== null && h.at <= ms) name = h.to;
    return name;
  };
  const lines = (record.transcript ?? []).map((t) => {
    const at = t.at ? t.at * 1000 : null;
    const caller = t.role === "caller";
    return { role: caller ? "caller" : "agent", text: t.text,
             speaker: caller ? "Caller" : agentAt(at ?? 0), at };
  });
  if (lines.length >= call.transcript.filter((l) => l.role !== "note").length) {
    const notes = handoffs.filter((h) => h.at !== null).map((h) => (
      { role: "note", text: `${h.from} handed the call to ${h.to}`, at: h.at }));
    // Stable: a line and a handoff of the same instant keep the line first.
    call.transcript = [...lines, ...notes].sort((a, b) => (a.at ?? 0) - (b.at ?? 0))
      .slice(-MAX_LINES);
  }
  const tools = record.tool_calls ?? [];
  if (tools.length >= call.tools.length) call.tools = tools.slice(-MAX_TOOLS);
}

function onSnapshot(list) {
  const present = new Set();
  for (const obj of list) {
    present.add(obj.call_id);
    applyCallObject(getCall(obj.call_id), obj);
  }
  for (const call of calls.values()) {
    if (call.live && !present.has(call.id)) {
      // It ended while we were not listening: the record says how.
      ended(call, "ended while the monitor was disconnected");
    }
  }
}

function ended(call, reason) {
  call.live = false;
  call.state = "ended";
  call.endedLocal = Date.now();
  call.endReason = reason;
  recent = [call.id, ...recent.filter((id) => id !== call.id)];
  for (const old of recent.splice(MAX_RECENT)) if (old !== selected) calls.delete(old);
  sessionStorage.setItem(RECENT_KEY, JSON.stringify(recent));
  loadRecord(call.id);
}

async function loadRecord(id) {
  const { status, data } = await api("GET", callPath(id));
  const call = calls.get(id);
  if (call === undefined) return;
  if (status === 200 && data?.call) {
    applyCallObject(call, data.call);
  } else if (status === 404 && !call.live) {
    call.endReason = call.endReason ?? "no longer kept by the gateway";
  }
  schedule();
}

const ROLES = { caller: "Caller" };

function onEvent(name, data) {
  if (name === "snapshot") {
    onSnapshot(data.calls ?? []);
    schedule();
    return;
  }
  if (name === "lost") {
    showNotice(`${data.events} events were dropped because this page fell behind; ` +
               "some lines may be missing.");
    return;
  }
  const id = data?.call_id;
  if (typeof id !== "string") return;
  if (name === "levels") {
    // Ephemeral and frequent: never creates a call, never rebuilds the page.
    const known = calls.get(id);
    if (known !== undefined && known.live) {
      known.levels = { caller: Number(data.caller) || 0, agent: Number(data.agent) || 0,
                       at: Date.now() };
      if (id === selected) renderLevels(Date.now());
    }
    return;
  }
  const call = getCall(id);
  // A replayed event happened before this page listened: its own time, when it has one.
  const now = data.replay === true && typeof data.time === "number"
    ? data.time * 1000 : Date.now();
  switch (name) {
    case "offered":
      call.from = data.from_user;
      call.to = data.to_user;
      note(call, name, `from ${data.from_user ?? "?"} to ${data.to_user ?? "?"}`);
      break;
    case "started":
      call.route = data.route;
      call.agent = data.agent;
      call.codec = data.codec;
      call.state = "started";
      call.startedLocal = call.startedLocal ?? now;
      note(call, name, `route ${data.route}, agent ${data.agent}, ${data.codec}`);
      if (call.from === null) loadRecord(id);
      break;
    case "state":
      call.state = data.state ?? call.state;
      note(call, name, String(data.state ?? ""));
      break;
    case "transcript": {
      const role = data.role === "caller" ? "caller" : "agent";
      push(call.transcript, { role, text: String(data.text ?? ""), at: now,
                              speaker: ROLES[role] ?? call.agent ?? "agent" }, MAX_LINES);
      call.lastHeard[role] = now;
      break;
    }
    case "tool":
      push(call.tools, data, MAX_TOOLS);
      note(call, name, `${data.name} ${data.ok ? "ok" : "failed"}`);
      break;
    case "handoff": {
      const handoff = { from: data.from_agent, to: data.to_agent,
                        at: data.at ? data.at * 1000 : now };
      call.handoffs.push(handoff);
      call.agent = data.to_agent ?? call.agent;
      push(call.transcript, { role: "note", at: now,
                              text: `${handoff.from} handed the call to ${handoff.to}` },
           MAX_LINES);
      note(call, name, `${handoff.from} → ${handoff.to}${data.reason ? `: ${data.reason}` : ""}`);
      break;
    }
    case "guardrail":
      note(call, name, `${data.guardrail ?? "guardrail"} tripped: ${data.action ?? ""}` +
                       `${data.reason ? ` (${data.reason})` : ""}`);
      break;
    case "dtmf":
      note(call, name, `${data.digits} keypad digit(s) so far`);
      break;
    case "barge_in":
      note(call, name, "the caller interrupted the agent");
      break;
    case "transfer":
      note(call, name, data.ok ? "transferred" : `transfer failed (${data.status ?? "?"})`);
      break;
    case "ended":
      note(call, name, String(data.reason ?? ""));
      ended(call, data.reason ?? "ended");
      break;
    default:
      note(call, name, JSON.stringify(data)); // a kind this page does not know yet
  }
  schedule();
}

// Rendering ---------------------------------------------------------------------------------

function schedule() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function liveCalls() {
  return [...calls.values()].filter((c) => c.live);
}

function render() {
  const now = Date.now();
  const live = liveCalls();
  if (selected === null && live.length) selected = live[0].id;
  $("live-calls").replaceChildren(...live.map((c) => callItem(c, now, c.id === selected)));
  $("live-count").textContent = String(live.length);
  $("no-live").hidden = live.length > 0;
  const ended = recent.map((id) => calls.get(id)).filter((c) => c !== undefined);
  $("recent-calls").replaceChildren(...ended.map((c) => callItem(c, now, c.id === selected)));
  $("no-recent").hidden = ended.length > 0;
  renderDetail(now);
}

function renderDetail(now) {
  const call = selected === null ? undefined : calls.get(selected);
  $("placeholder").hidden = call !== undefined;
  $("detail").hidden = call === undefined;
  if (call === undefined) return;
  $("detail").dataset.callId = call.id;
  $("d-from").textContent = call.from ?? "unknown";
  $("d-to").textContent = call.to ?? "unknown";
  $("d-meta").textContent = [call.route && `route ${call.route}`, call.codec, call.id]
    .filter(Boolean).join(" · ");
  $("d-agent").textContent = call.agent ?? "—";
  $("d-state").textContent = call.live ? call.state
    : `ended${call.outcome ? ` (${call.outcome})` : ""}`;
  $("d-reason").textContent = call.live ? "" : call.endReason ?? "";
  $("end-call").disabled = !call.live;
  $("transfer").disabled = !call.live;
  $("transfer-target").disabled = !call.live;
  const box = $("transcript");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.replaceChildren(...call.transcript.map(transcriptLine));
  if (atBottom) box.scrollTop = box.scrollHeight;
  $("no-transcript").hidden = call.transcript.length > 0;
  $("handoffs").replaceChildren(...call.handoffs.map(handoffItem));
  $("no-handoffs").hidden = call.handoffs.length > 0;
  $("tools").replaceChildren(...[...call.tools].reverse().map(toolCard));
  $("no-tools").hidden = call.tools.length > 0;
  $("events").replaceChildren(...[...call.events].reverse().map(eventItem));
  updateTimers(now);
}

/** The selected call's audio meters (levels events of the caller's leg, 0..1). */
function renderLevels(now) {
  const call = selected === null ? undefined : calls.get(selected);
  if (call === undefined) return;
  const fresh = call.live && call.levels.at !== null && now - call.levels.at < LEVELS_STALE_MS;
  let text = "";
  if (call.kind === "direct") text = "No levels: a direct call's media flows to OpenAI, not here.";
  else if (!call.live) text = "The call has ended.";
  else if (!fresh) text = call.levels.at === null ? "No level data yet." : "No recent level data.";
  for (const role of ["caller", "agent"]) {
    const meter = $(`level-${role}`);
    meter.value = fresh ? call.levels[role] : 0;
    meter.classList.toggle("unavailable", !fresh);
    meter.title = fresh ? `${Math.round(call.levels[role] * 100)} %` : text;
  }
  $("levels-note").textContent = text;
}

/** Once a second: timers and "last heard", without rebuilding anything. */
function updateTimers(now = Date.now()) {
  for (const item of document.querySelectorAll("li.call")) {
    const call = calls.get(item.dataset.callId);
    const seconds = call === undefined ? null : elapsed(call, now);
    const timer = item.querySelector(".timer");
    if (timer !== null && seconds !== null) timer.textContent = duration(seconds);
  }
  const call = selected === null ? undefined : calls.get(selected);
  if (call === undefined) return;
  const seconds = elapsed(call, now);
  renderLevels(now);
  $("d-timer").textContent = seconds === null ? "—" : duration(seconds);
  for (const role of ["caller", "agent"]) {
    const at = call.lastHeard[role];
    let text = call.live ? "not yet" : "—";
    if (at !== null) {
      const before = duration(((call.endedLocal ?? now) - at) / 1000);
      text = call.live ? `${before} ago` : `${before} before the end`;
    }
    $(`heard-${role}`).textContent = text;
  }
}

// The page ----------------------------------------------------------------------------------

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

function showTokenForm(error) {
  $("token-form").hidden = false;
  $("session").hidden = true;
  $("token-error").textContent = error ?? "";
  $("token").focus();
}

function showSession() {
  $("token-form").hidden = true;
  $("session").hidden = false;
  $("token-error").textContent = "";
}

function setResult(text) {
  $("action-result").textContent = text;
}

function selectFrom(event) {
  const item = event.target.closest("li.call");
  if (item === null) return;
  selected = item.dataset.callId;
  setResult("");
  const call = calls.get(selected);
  if (call !== undefined && !call.live && call.record === null) loadRecord(call.id);
  render();
}

async function endCall() {
  const call = calls.get(selected);
  if (call === undefined || !call.live) return;
  if (!window.confirm(`End the call from ${call.from ?? "unknown"} to ${call.to ?? "unknown"}?`)) {
    return;
  }
  $("end-call").disabled = true;
  setResult("ending the call…");
  const { status, data } = await api("POST", callPath(call.id, "hangup"),
                                     { reason: "ended by the operator (monitor)" });
  setResult(status === 200 ? "hangup sent" : `not ended: ${data?.reason ?? `HTTP ${status}`}`);
  schedule();
}

async function transfer(event) {
  event.preventDefault();
  const call = calls.get(selected);
  const target = $("transfer-target").value.trim();
  if (call === undefined || !call.live || !target) return;
  if (!/^(sip|sips|tel):\S+$/.test(target)) {
    setResult("the target must be a sip:, sips: or tel: URI");
    return;
  }
  if (!window.confirm(`Transfer the call from ${call.from ?? "unknown"} to ${target}?`)) return;
  $("transfer").disabled = true;
  setResult(`transferring to ${target}…`);
  const { status, data } = await api("POST", callPath(call.id, "transfer"), { target });
  setResult(status === 200 ? `transferred to ${target}`
    : `transfer failed: ${data?.reason ?? `HTTP ${status}`}`);
  schedule();
}

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    token = value;
    $("token").value = "";
    sessionStorage.setItem(TOKEN_KEY, token);
    showSession();
    connect();
  });
  $("forget").addEventListener("click", () => {
    disconnect();
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    setStatus("idle", "not connected");
    showTokenForm();
  });
  for (const list of [$("live-calls"), $("recent-calls")]) {
    list.addEventListener("click", selectFrom);
    list.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        selectFrom(event);
      }
    });
  }
  $("end-call").addEventListener("click", endCall);
  $("transfer-form").addEventListener("submit", transfer);
  setInterval(updateTimers, 1000);
  try {
    recent = JSON.parse(sessionStorage.getItem(RECENT_KEY) ?? "[]").filter(
      (id) => typeof id === "string").slice(0, MAX_RECENT);
  } catch {
    recent = [];
  }
  for (const id of recent) {
    const call = getCall(id);
    call.live = false;
    call.state = "ended";
  }
  render();
  if (token) {
    showSession();
    connect();
    for (const id of recent) loadRecord(id);
  } else {
    showTokenForm();
  }
}

start();
