// Unit tests of the view in the address, its windows and comparisons, and
// the short forms of tile numbers: node --test (make test).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  parseView, viewSearch, defaultView, withView, sameView, filterParams, windowOf, comparisonOf, customRange, isoMinute,
  MAX_VALUE_LEN,
} from "./view.js";
import { shortForms, fmt } from "./kpi.js";

test("a view survives the address: every choice comes back", () => {
  const v = withView(defaultView(), {
    campaign: "spring sale/2026 & co", range: "custom", from: "2026-12-01T10:00:00Z", to: "2026-12-02T10:00:00Z",
    by: "country", compare: "week", filters: { source: "google", device: "mobile" }, find: "q4 ",
  });
  const search = viewSearch(v);
  assert.ok(!search.includes("token"));
  const { view, ignored } = parseView(search);
  assert.deepEqual(ignored, []);
  assert.deepEqual(view, v);
  assert.ok(sameView(view, v));
  assert.deepEqual(filterParams(view), { source: "google", device: "mobile" });
});

test("defaults are written out, parameters the view does not own are kept", () => {
  assert.equal(viewSearch(defaultView(), "?x=1"), "?x=1&range=live&by=source&compare=prev");
  const { view, ignored } = parseView("");
  assert.deepEqual(view, defaultView());
  assert.deepEqual(ignored, []);
});

test("a hostile link falls back to defaults and names what it refused", () => {
  const long = "x".repeat(MAX_VALUE_LEN + 1);
  const { view, ignored } = parseView(`?campaign=${long}&range=5y&by=ip&compare=forever&source=a&source=b&country=%00DE&medium=cpc`);
  assert.deepEqual(view, withView(defaultView(), { filters: { medium: "cpc" } }));
  assert.deepEqual(ignored.sort(), ["by", "campaign", "compare", "country", "range", "source"]);
  // A custom range must be RFC 3339 with a zone, in order, at most 366 days.
  for (const bad of [
    "from=2026-12-02T10:00:00Z&to=2026-12-01T10:00:00Z",
    "from=2026-12-01T10:00&to=2026-12-02T10:00",
    "from=2025-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
    "from=2026-12-01T10:00:00Z",
  ]) {
    const r = parseView(`?range=custom&${bad}`);
    assert.equal(r.view.range, "live", bad);
    assert.ok(r.ignored.includes("from"), bad);
  }
  // from/to without a custom range mean nothing.
  assert.deepEqual(parseView("?range=24h&from=2026-12-01T10:00:00Z").ignored, ["from"]);
  // Offsets are read as the instant they name, and written in UTC.
  assert.equal(parseView("?range=custom&from=2026-12-01T11:00:00%2B01:00&to=2026-12-01T12:30:00%2B01:00").view.from, "2026-12-01T10:00:00Z");
});

test("a preset window ends with the minute in progress, as the API's window= does", () => {
  const now = Date.parse("2026-12-07T10:15:30Z");
  const w = windowOf(withView(defaultView(), { range: "24h" }), now);
  assert.deepEqual(w.params, { window: "24h" });
  assert.equal(isoMinute(w.to), "2026-12-07T10:16:00Z");
  assert.equal(isoMinute(w.from), "2026-12-06T10:16:00Z");
  assert.equal(w.step, "15m");
  // On a minute boundary the API's window does not hold that minute yet.
  const b = windowOf(defaultView(), Date.parse("2026-12-07T10:15:00.400Z"));
  assert.equal(isoMinute(b.to), "2026-12-07T10:15:00Z");
});

test("comparisons: the previous period and the same period last week", () => {
  const now = Date.parse("2026-12-07T10:15:30Z");
  const v = withView(defaultView(), { range: "1h" });
  const w = windowOf(v, now);
  assert.deepEqual(comparisonOf(v, w).params, { from: "2026-12-07T08:16:00Z", to: "2026-12-07T09:16:00Z" });
  const week = comparisonOf(withView(v, { compare: "week" }), w);
  assert.deepEqual(week.params, { from: "2026-11-30T09:16:00Z", to: "2026-11-30T10:16:00Z" });
  assert.equal(week.shiftMs, 7 * 86400000);
  assert.equal(comparisonOf(withView(v, { compare: "none" }), w), null);
  const c = withView(v, { range: "custom", from: "2026-12-01T00:00:00Z", to: "2026-12-04T00:00:00Z" });
  const cw = windowOf(c, now);
  assert.deepEqual(cw.params, { from: "2026-12-01T00:00:00Z", to: "2026-12-04T00:00:00Z" });
  assert.equal(cw.step, "1h"); // 72 points, not 288 of 15 minutes
  assert.deepEqual(comparisonOf(c, cw).params, { from: "2026-11-28T00:00:00Z", to: "2026-12-01T00:00:00Z" });
});

test("custom range inputs are checked", () => {
  assert.ok(customRange("", "2026-12-01T10:00").error);
  assert.ok(customRange("2026-12-01T10:00", "2026-12-01T10:00").error);
  assert.ok(customRange("2025-01-01T10:00", "2026-03-01T10:00").error);
  assert.ok(!customRange("2025-03-01T10:00", "2026-03-01T10:00").error); // a year
  const r = customRange("2026-12-01T10:00", "2026-12-01T12:00");
  assert.equal(Date.parse(r.to) - Date.parse(r.from), 2 * 3600 * 1000);
});

test("tile numbers have shorter forms, the exact one first", () => {
  assert.deepEqual(shortForms(fmt.money, 1849523.12), ["1,849,523.12", "1.85M", "1.8M", "2M"]);
  assert.deepEqual(shortForms(fmt.count, 169861), ["169,861", "169.86K", "169.9K", "170K"]);
  assert.deepEqual(shortForms(fmt.count, 12), ["12"]);
  assert.deepEqual(shortForms(fmt.pct, 0.1234), ["12.34 %", "12.3 %", "12 %"]);
  assert.deepEqual(shortForms(fmt.times, 1234.5), ["1,234.50×", "1.23K×", "1.2K×", "1K×"]);
});
