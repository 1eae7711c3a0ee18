// Server-Sent Events over fetch().
//
// EventSource cannot send an Authorization header, so the dashboard reads
// text/event-stream itself: fetch() with the bearer token, a streaming
// body reader and the small parser below (the subset of the WHATWG
// event-stream format the API uses: event, data, id, retry, comments).
// It reconnects with backoff and resumes with Last-Event-ID.

/** SSEParser turns chunks of text/event-stream into events. */
export class SSEParser {
  constructor(onEvent, onComment) {
    this.onEvent = onEvent;
    this.onComment = onComment || (() => {});
    this.buf = "";
    this.skipLF = false;
    this.event = "";
    this.data = "";
    this.hasData = false;
    this.lastId = "";
    this.retry = 0;
  }

  /** feed consumes one decoded chunk; lines may span chunks. */
  feed(chunk) {
    if (this.skipLF && chunk[0] === "\n") chunk = chunk.slice(1); // the \n of a \r\n split between chunks
    this.skipLF = false;
    const buf = this.buf + chunk;
    let start = 0;
    for (;;) {
      let i = start;
      while (i < buf.length && buf[i] !== "\n" && buf[i] !== "\r") i++;
      if (i >= buf.length) break;
      this.line(buf.slice(start, i));
      if (buf[i] === "\r" && i + 1 === buf.length) this.skipLF = true;
      start = buf[i] === "\r" && buf[i + 1] === "\n" ? i + 2 : i + 1;
    }
    this.buf = buf.slice(start);
  }

  line(l) {
    if (l === "") return this.dispatch();
    if (l[0] === ":") return this.onComment(l.slice(1).trim());
    const colon = l.indexOf(":");
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? "" : l.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    switch (field) {
      case "event": this.event = value; break;
      case "data": this.data += value + "\n"; this.hasData = true; break;
      case "id": if (!value.includes("\0")) this.lastId = value; break;
      case "retry": if (/^\d+$/.test(value)) this.retry = +value; break;
    }
  }

  dispatch() {
    if (this.hasData) {
      this.onEvent({ type: this.event || "message", data: this.data.slice(0, -1), id: this.lastId });
    }
    this.event = "";
    this.data = "";
    this.hasData = false;
  }
}

/** UnauthorizedError means the server rejected the token (401). */
export class UnauthorizedError extends Error {}

/**
 * EventStream keeps one authenticated SSE connection open.
 * onEvent({type, data, id}) gets each event; onState(state, detail) gets
 * "connecting", "open", "down" (with the error and the retry delay) and
 * "unauthorized" (then it stops).
 */
export class EventStream {
  constructor({ url, token, onEvent, onState, idleTimeoutMs = 40000, maxBackoffMs = 15000 }) {
    Object.assign(this, { url, token, onEvent, onState, idleTimeoutMs, maxBackoffMs });
    this.lastId = "";
    this.stopped = true;
    this.ctrl = null;
    this.wake = null;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop();
  }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
    if (this.wake) this.wake();
  }

  async loop() {
    let backoff = 1000;
    while (!this.stopped) {
      this.onState("connecting");
      let err = null;
      try {
        const got = await this.connect();
        if (got) backoff = 1000;
        err = new Error("stream closed by the server");
      } catch (e) {
        if (e instanceof UnauthorizedError) {
          this.stopped = true;
          this.onState("unauthorized", e);
          return;
        }
        err = e;
      }
      if (this.stopped) return;
      this.onState("down", { error: err, retryMs: backoff });
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, backoff);
      });
      this.wake = null;
      backoff = Math.min(backoff * 2, this.maxBackoffMs);
    }
  }

  // connect reads one connection until it ends; it reports whether any
  // event arrived (to reset the backoff).
  async connect() {
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    const headers = { Authorization: "Bearer " + this.token, Accept: "text/event-stream" };
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    let idle = setTimeout(() => ctrl.abort(), this.idleTimeoutMs);
    const bump = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ctrl.abort(), this.idleTimeoutMs);
    };
    let got = false;
    try {
      const resp = await fetch(this.url, { headers, signal: ctrl.signal, cache: "no-store" });
      if (resp.status === 401) throw new UnauthorizedError("token rejected");
      if (!resp.ok) throw new Error(`stream answered ${resp.status}`);
      this.onState("open");
      const parser = new SSEParser((ev) => {
        got = true;
        if (ev.id) this.lastId = ev.id;
        this.onEvent(ev);
      }, bump);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        bump();
        parser.feed(value);
      }
    } catch (e) {
      if (e.name === "AbortError" && !this.stopped) throw new Error("stream silent for too long");
      throw e;
    } finally {
      clearTimeout(idle);
      this.ctrl = null;
    }
    return got;
  }
}
