// Unit tests of the alert list, its banner and markers, and the link from
// an alert to its time range: node --test (make test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { AlertBook, alertView, alertHref, bannerText, markers, MAX_ALERTS } from "./alerts.js";
import { parseView } from "./view.js";

const id = (n) => n.toString(16).padStart(32, "0");
const alert = (n, extra) => ({ id: id(n), campaign: "spring", metric: "conversions", rule: "anomaly", kind: "anomaly", severity: "warning",
  state: "firing", direction: "drop", start: "2026-12-07T10:00:00Z", at: "2026-12-07T10:00:00Z", summary: `alert ${n}`, ...extra });

test("each alert once, as its latest transition: a resolution is never undone", () => {
  const b = new AlertBook();
  assert.ok(b.put(alert(1)));
  assert.ok(!b.put(alert(1)), "the same transition again (a new owner's re-delivery) changes nothing");
  assert.ok(b.put(alert(1, { state: "resolved", at: "2026-12-07T10:30:00Z", end: "2026-12-07T10:30:00Z" })));
  assert.ok(!b.put(alert(1)), "a firing that arrives after the resolution");
  assert.equal(b.list("").length, 1);
  assert.equal(b.firing("").length, 0);
  // A fresh list from the API keeps what the stream brought since.
  b.put(alert(2, { start: "2026-12-07T11:00:00Z" }));
  b.replace([alert(1), alert(3, { campaign: "autumn", start: "2026-12-07T09:00:00Z" })]);
  assert.deepEqual(b.list("").map((a) => [a.id, a.state]), [[id(2), "firing"], [id(1), "resolved"], [id(3), "firing"]]);
  assert.deepEqual(b.list("autumn").map((a) => a.id), [id(3)]);
});

test("malformed alerts are refused and the book is bounded", () => {
  const b = new AlertBook();
  for (const bad of [null, {}, alert(1, { id: "<img src=x>" }), alert(1, { state: "exploded" })]) assert.ok(!b.put(bad));
  for (let i = 0; i < MAX_ALERTS + 10; i++) b.put(alert(i + 1, { start: new Date(Date.UTC(2026, 11, 1) + i * 60000).toISOString() }));
  assert.equal(b.list("").length, MAX_ALERTS);
  assert.ok(!b.byId.has(id(1)), "the oldest went first");
});

test("an alert links to its campaign an hour either side, as a view the address can hold", () => {
  const now = Date.parse("2026-12-07T10:12:30Z");
  const v = alertView(alert(1), now);
  assert.deepEqual(v, { campaign: "spring", range: "custom", from: "2026-12-07T09:00:00Z", to: "2026-12-07T11:13:00Z" });
  const done = alertView(alert(1, { state: "resolved", end: "2026-12-07T10:40:10Z" }), now + 86400000);
  assert.equal(done.to, "2026-12-07T11:41:00Z");
  const href = alertHref(alert(1), now);
  const { view, ignored } = parseView(href);
  assert.deepEqual(ignored, []);
  assert.equal(view.campaign, "spring");
  assert.equal(view.from, v.from);
  assert.equal(new URLSearchParams(href).get("alert"), id(1));
  // A long episode still makes a range the address accepts (366 days at most).
  const long = alertView(alert(1, { end: "2028-03-01T00:00:00Z", state: "resolved" }), now);
  assert.equal(parseView("?" + new URLSearchParams(long)).view.range, "custom");
});

test("the banner names the worst firing alert and how many more", () => {
  assert.equal(bannerText([]), "");
  const t = bannerText([alert(1), alert(2, { severity: "critical", summary: "spend spike" }), alert(3)]);
  assert.equal(t, "Alert: spend spike (and 2 more alerts firing)");
});

test("markers only for alerts that started in the window", () => {
  const from = Date.parse("2026-12-07T09:30:00Z");
  const m = markers([alert(1), alert(2, { start: "2026-12-07T08:00:00Z" })], from, from + 3600000);
  assert.equal(m.length, 1);
  assert.equal(m[0].t, Date.parse("2026-12-07T10:00:00Z") / 1000);
});
