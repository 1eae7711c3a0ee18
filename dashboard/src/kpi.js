// The KPIs the dashboard shows, how to format them, and how to add up
// per-minute KPIs (counters add; ratios are recomputed from the sums).

const nf0 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const nf2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

export const fmt = {
  count: (n) => nf0.format(n),
  money: (n) => nf2.format(n),
  pct: (n) => nf2.format(100 * n) + " %",
  times: (n) => nf2.format(n) + "×",
};

/**
 * TILES are the headline KPIs. better is +1 when a rise is good news,
 * -1 when it is bad news (cost, cost per acquisition).
 */
export const TILES = [
  { key: "impressions", label: "Impressions", fmt: fmt.count, better: 1, help: "ad views" },
  { key: "clicks", label: "Clicks", fmt: fmt.count, better: 1, help: "clicks on ads and links" },
  { key: "conversions", label: "Conversions", fmt: fmt.count, better: 1, help: "sales, sign-ups, goals" },
  { key: "uniques", label: "Unique visitors", fmt: fmt.count, better: 1, help: "distinct people (estimate)" },
  { key: "revenue", label: "Revenue", fmt: fmt.money, better: 1, help: "value of conversions" },
  { key: "cost", label: "Cost", fmt: fmt.money, better: -1, help: "ad spend" },
  { key: "ctr", label: "CTR", fmt: fmt.pct, better: 1, help: "clicks ÷ impressions" },
  { key: "cvr", label: "CVR", fmt: fmt.pct, better: 1, help: "conversions ÷ clicks" },
  { key: "cpa", label: "CPA", fmt: fmt.money, better: -1, help: "cost ÷ conversions" },
  { key: "roas", label: "ROAS", fmt: fmt.times, better: 1, help: "revenue ÷ cost" },
];

/** COUNTERS are the KPI fields that add up across minutes and groups. */
export const COUNTERS = ["impressions", "clicks", "conversions", "pageviews", "revenue", "cost", "bots_filtered"];

const ratio = (a, b) => (b === 0 ? 0 : a / b);

/** emptyKPIs returns a KPIs object of zeros. */
export function emptyKPIs() {
  return { impressions: 0, clicks: 0, conversions: 0, pageviews: 0, uniques: 0, revenue: 0, cost: 0,
    ctr: 0, cvr: 0, cpa: 0, roas: 0, bots_filtered: 0 };
}

/** addCounters adds the counters of k into acc (and uniques if asked). */
export function addCounters(acc, k, withUniques) {
  for (const c of COUNTERS) acc[c] += k[c] || 0;
  if (withUniques) acc.uniques += k.uniques || 0;
  return acc;
}

/** withRatios recomputes CTR, CVR, CPA and ROAS from the counters. */
export function withRatios(k) {
  k.ctr = ratio(k.clicks, k.impressions);
  k.cvr = ratio(k.conversions, k.clicks);
  k.cpa = ratio(k.cost, k.conversions);
  k.roas = ratio(k.revenue, k.cost);
  return k;
}

/** change describes cur against prev: {text, cls} for a tile. */
export function change(cur, prev, better) {
  if (prev === undefined || prev === null) return { text: "", cls: "" };
  if (prev === 0) return cur === 0 ? { text: "± 0 %", cls: "flat" } : { text: "new", cls: better > 0 ? "good" : "bad" };
  const d = (cur - prev) / Math.abs(prev);
  if (Math.abs(d) < 0.0005) return { text: "± 0 %", cls: "flat" };
  const arrow = d > 0 ? "▲" : "▼";
  const good = d * better > 0;
  const p = Math.abs(d) * 100;
  return { text: `${arrow} ${p < 10 ? p.toFixed(1) : nf0.format(p)} %`, cls: good ? "good" : "bad" };
}

/** botShare is bots over all counted events, bots included. */
export function botShare(k) {
  const all = k.impressions + k.clicks + k.conversions + k.pageviews + k.bots_filtered;
  return ratio(k.bots_filtered, all);
}
