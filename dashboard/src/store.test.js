import { test } from "node:test";
import assert from "node:assert/strict";
import { LiveStore } from "./store.js";

const k = (clicks) => ({ impressions: 0, clicks, conversions: 0, pageviews: 0, uniques: 0, revenue: 0, cost: 0,
  ctr: 0, cvr: 0, cpa: 0, roas: 0, bots_filtered: 0 });

test("a provisional minute is marked until an update without the flag replaces it", () => {
  const s = new LiveStore();
  s.apply([{ campaign: "spring", minute: 600, kpis: k(3), provisional: true },
    { campaign: "spring", minute: 660, kpis: k(1) }]);
  assert.equal(s.isProvisional("spring"), true);
  assert.equal(s.totals("spring").clicks, 4);
  // The flush lands: same minute, durable figure, no flag.
  s.apply([{ campaign: "spring", minute: 600, kpis: k(3) }]);
  assert.equal(s.isProvisional("spring"), false);
  assert.equal(s.totals("spring").clicks, 4);
});

test("a snapshot and pruning forget provisional minutes", () => {
  const s = new LiveStore();
  s.apply([{ campaign: "a", minute: 60, kpis: k(1), provisional: true }]);
  s.prune(60 * 200);
  assert.equal(s.isProvisional("a"), false);
  s.apply([{ campaign: "b", minute: 60 * 199, kpis: k(1), provisional: true }]);
  s.reset([{ campaign: "b", minute: 60 * 199, kpis: k(1) }]);
  assert.equal(s.isProvisional("b"), false);
});
