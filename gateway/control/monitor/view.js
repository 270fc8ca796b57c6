// DOM building for the monitor. What a call brings (caller numbers, transcripts, tool
// results, reasons) is untrusted: it only ever enters the page as text nodes or through
// textContent, never as markup, so nothing here parses HTML.

/** A new element: props may set className, dataset, title, hidden, type, disabled, tabIndex. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (["className", "title", "hidden", "type", "disabled", "tabIndex"].includes(key)) {
      node[key] = value;
    }
    else throw new Error(`el(): unsupported property ${key}`);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

/** `0:07`, `12:34`, `1:02:03`. */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** Local wall-clock time of a Date.now() value. */
export function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

/** Seconds the call has lasted by the browser's clock (its start was set from the API). */
export function elapsed(call, now) {
  if (call.startedLocal === null) return null;
  return ((call.endedLocal ?? now) - call.startedLocal) / 1000;
}

function party(user) {
  return user === null || user === undefined || user === "" ? "unknown" : user;
}

/** One entry of the live or recent call list. */
export function callItem(call, now, selected) {
  const seconds = elapsed(call, now);
  return el("li", { className: selected ? "call selected" : "call",
                    dataset: { callId: call.id }, title: call.id, tabIndex: 0 },
    el("span", { className: "parties" }, party(call.from), " → ", party(call.to)),
    el("span", { className: "agent" }, call.agent ?? "—"),
    el("span", { className: `state state-${stateClass(call)}` },
       call.live ? call.state : (call.outcome ?? "ended")),
    el("span", { className: "timer" }, seconds === null ? "" : duration(seconds)));
}

function stateClass(call) {
  if (!call.live) return call.outcome === "ok" ? "ended" : "failed";
  return /^[a-z_]+$/.test(call.state) ? call.state : "other";
}

/** One transcript line, labelled with its speaker (the agent's name when it spoke). */
export function transcriptLine(line) {
  if (line.role === "note") {
    return el("li", { className: "line note" }, el("span", { className: "text" }, line.text));
  }
  const role = line.role === "caller" ? "caller" : "agent";
  return el("li", { className: `line ${role}` },
    el("span", { className: "at" }, line.at ? clock(line.at) : ""),
    el("span", { className: "speaker" }, line.speaker),
    el("span", { className: "text" }, line.text));
}

export function handoffItem(handoff) {
  return el("li", { className: "handoff" },
    el("span", { className: "at" }, handoff.at ? clock(handoff.at) : ""),
    el("span", { className: "from" }, handoff.from ?? "?"), " → ",
    el("span", { className: "to" }, handoff.to ?? "?"));
}

export function eventItem(event) {
  return el("li", { className: `event event-${event.kind}` },
    el("span", { className: "at" }, clock(event.at)),
    el("span", { className: "kind" }, event.kind),
    el("span", { className: "text" }, event.text));
}

const CARD_KINDS = [
  [/^transfer_to_/i, "handoff"],
  [/quote/i, "quote"],
  [/order/i, "order"],
  [/appointment|schedul|booking|book_/i, "appointment"],
];

function cardKind(name) {
  for (const [pattern, kind] of CARD_KINDS) if (pattern.test(name)) return kind;
  return "tool";
}

/** A tool call as a card: its name, result and time; its output when the data carries it. */
export function toolCard(tool) {
  const kind = cardKind(tool.name ?? "");
  const ok = tool.ok === true;
  const card = el("article", { className: `card card-${kind}`, dataset: { tool: tool.name } },
    el("header", {},
      el("span", { className: "kind" }, kind),
      el("span", { className: "name" }, tool.name ?? "?"),
      el("span", { className: ok ? "badge ok" : "badge failed" }, ok ? "ok" : "failed"),
      typeof tool.duration_s === "number"
        ? el("span", { className: "took" }, `${tool.duration_s.toFixed(2)} s`) : null));
  if (tool.error) card.appendChild(el("p", { className: "error" }, `error: ${tool.error}`));
  if (tool.output !== undefined && tool.output !== null) {
    card.appendChild(outputBody(tool.output));
  } else {
    card.appendChild(el("p", { className: "no-output" },
      "output not reported (tool events carry name, result and duration only)"));
  }
  return card;
}

function outputBody(output) {
  let value = output;
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch {
      return el("pre", { className: "output" }, output);
    }
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return el("pre", { className: "output" }, JSON.stringify(value, null, 1));
  }
  const list = el("dl", { className: "output" });
  for (const [key, field] of Object.entries(value)) {
    list.appendChild(el("dt", {}, key));
    list.appendChild(el("dd", {}, typeof field === "object" && field !== null
      ? JSON.stringify(field) : String(field)));
  }
  return list;
}
