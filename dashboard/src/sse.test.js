// Unit tests of the SSE parser and the live store: node --test (make test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { SSEParser } from "./sse.js";
import { LiveStore, windowStart } from "./store.js";
import { change, withRatios, emptyKPIs } from "./kpi.js";

function parse(chunks) {
  const events = [];
  const comments = [];
  const p = new SSEParser((e) => events.push(e), (c) => comments.push(c));
  for (const c of chunks) p.feed(c);
  return { events, comments, parser: p };
}

test("events, ids and comments", () => {
  const { events, comments } = parse([": ping\n\nid: 7\nevent: minutes\ndata: {\"a\":1}\n\n"]);
  assert.deepEqual(comments, ["ping"]);
  assert.deepEqual(events, [{ type: "minutes", data: "{\"a\":1}", id: "7" }]);
});

test("lines split across chunks, CRLF split between chunks, bare CR", () => {
  const { events } = parse(["id: 1\r", "\nevent: snap", "shot\r\ndata: x\r", "\r\n", "data: y\rdata: z\r\r"]);
  assert.deepEqual(events, [
    { type: "snapshot", data: "x", id: "1" },
    { type: "message", data: "y\nz", id: "1" },
  ]);
});

test("multi-line data, no space after colon, unknown fields, retry", () => {
  const { events, parser } = parse(["data:a\ndata: b\nfoo: bar\nretry: 3000\n\n"]);
  assert.deepEqual(events, [{ type: "message", data: "a\nb", id: "" }]);
  assert.equal(parser.retry, 3000);
});

test("an event without data is not dispatched but its id counts", () => {
  const { events } = parse(["id: 9\nevent: status\n\ndata: d\n\n"]);
  assert.deepEqual(events, [{ type: "message", data: "d", id: "9" }]);
});

test("an unfinished event waits for its blank line", () => {
  const { events, parser } = parse(["data: half"]);
  assert.equal(events.length, 0);
  parser.feed("\n\n");
  assert.equal(events.length, 1);
});

const k = (clicks, impressions) => Object.assign(emptyKPIs(), { clicks, impressions });

test("the live store replaces minutes, adds them up and prunes the old", () => {
  const s = new LiveStore();
  const now = 1_800_000_000;
  const m = Math.floor(now / 60) * 60;
  s.reset([{ campaign: "a", minute: m, kpis: k(1, 10) }, { campaign: "a", minute: m - 60, kpis: k(2, 20) }]);
  assert.deepEqual([...s.apply([{ campaign: "a", minute: m, kpis: k(5, 50) }])], ["a"]);
  const t = s.totals("a");
  assert.equal(t.clicks, 7);
  assert.equal(t.impressions, 70);
  assert.equal(t.ctr, 0.1);
  const { data, has } = s.series(null, ["clicks"], now);
  assert.equal(data[0].length, 60);
  assert.equal(data[0][0], windowStart(now));
  assert.equal(data[1][59], 5);
  assert.equal(data[1][58], 2);
  assert.equal(has[57], false);
  // An hour later both minutes are out of the window.
  assert.deepEqual([...s.prune(now + 3600)], ["a"]);
  assert.equal(s.totals("a").clicks, 0);
  // A snapshot replaces everything, including campaigns it no longer has.
  assert.deepEqual([...s.reset([{ campaign: "b", minute: m, kpis: k(1, 1) }])].sort(), ["a", "b"]);
  assert.equal(s.campaigns.has("a"), false);
});

test("change against the comparison: the arrow gives the direction, the word the verdict", () => {
  assert.deepEqual(change(110, 100, 1), { text: "▲ 10 %", cls: "good", dir: "up", word: "better" });
  assert.deepEqual(change(110, 100, -1), { text: "▲ 10 %", cls: "bad", dir: "up", word: "worse" });
  assert.deepEqual(change(95, 100, 1), { text: "▼ 5.0 %", cls: "bad", dir: "down", word: "worse" });
  assert.deepEqual(change(95, 100, -1), { text: "▼ 5.0 %", cls: "good", dir: "down", word: "better" });
  assert.deepEqual(change(0, 0, 1), { text: "± 0 %", cls: "flat", dir: "flat", word: "unchanged" });
  assert.deepEqual(change(3, 0, 1), { text: "▲ new", cls: "good", dir: "up", word: "better" });
  assert.deepEqual(change(3, 0, -1), { text: "▲ new", cls: "bad", dir: "up", word: "worse" });
  assert.equal(change(3, null, 1).text, "");
  assert.equal(withRatios(Object.assign(emptyKPIs(), { cost: 10, conversions: 0 })).cpa, 0);
});
