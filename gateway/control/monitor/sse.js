// Server-Sent Events read with fetch(): the monitor's only way to send its bearer token
// (EventSource cannot set headers, and a token in the URL would land in access logs).
//
// EventStreamParser is the event-stream format of the HTML standard ("9.2 Server-sent
// events", "Parsing an event stream") without I/O: feed it decoded text in any chunks, get
// back the complete events. readEventStream drives it from a fetch() Response body.

export class EventStreamParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.type = "";
    this.data = [];
    this.id = null;
  }

  /** Complete events in `text` (and what earlier chunks left unfinished). */
  feed(text) {
    this.buffer += text;
    const events = [];
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      if (end < 0) break;
      // A lone "\r" at the very end may be the first half of "\r\n": wait for more.
      if (this.buffer[end] === "\r" && end === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, end);
      const width = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      this.buffer = this.buffer.slice(end + width);
      const event = this.line(line);
      if (event !== null) events.push(event);
    }
    return events;
  }

  line(line) {
    if (line === "") {
      // A blank line dispatches; an event without data lines is dropped, as browsers do.
      const event = this.data.length
        ? { event: this.type || "message", data: this.data.join("\n"), id: this.id }
        : null;
      this.reset();
      return event;
    }
    if (line.startsWith(":")) return null; // a comment: the server's keep-alive ping
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
    return null;
  }
}

/**
 * Call onEvent(name, parsedData, id) for each event of a fetch() Response until the stream
 * ends (id: the event's `id:` line, or null).
 * Data that is not JSON is passed as the raw string. onBytes() hears every chunk, keep-alive
 * comments included (a watchdog's sign of life). Rejects when the connection fails.
 */
export async function readEventStream(response, onEvent, onBytes = () => {}) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new EventStreamParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      onBytes();
      for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
        let data = event.data;
        try {
          data = JSON.parse(event.data);
        } catch {
          // keep the text
        }
        onEvent(event.event, data, event.id);
      }
    }
  } finally {
    reader.releaseLock();
  }
}
