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

// Compact forms ("1.85M", "761.3K"), most precise first.
const compact = [2, 1, 0].map((d) => new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: d }));

/**
 * shortForms lists ever shorter forms of v as f writes it, the exact one
 * first: a narrow tile shows the first that fits (and the exact one on
 * hover). Percentages and ratios keep their unit.
 */
export function shortForms(f, v) {
  const out = [f(v)];
  let scaled = v;
  let unit = "";
  if (f === fmt.pct) {
    scaled = 100 * v;
    unit = " %";
  } else if (f === fmt.times) {
    unit = "×";
  }
  for (const c of compact) {
    const s = c.format(scaled) + unit;
    if (!out.includes(s)) out.push(s);
  }
  return out;
}

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

/**
 * change describes cur against prev for a tile: {text, cls, dir, word}.
 * The arrow of text carries the direction (▲ up, ▼ down) and word says
 * whether that is good news ("better", "worse"), so neither depends on
 * the colour of cls ("good", "bad", "flat") alone.
 */
export function change(cur, prev, better) {
  if (prev === undefined || prev === null) return { text: "", cls: "", dir: "", word: "" };
  if (prev === 0) {
    if (cur === 0) return { text: "± 0 %", cls: "flat", dir: "flat", word: "unchanged" };
    const good = cur * better > 0;
    return { text: `${cur > 0 ? "▲" : "▼"} new`, cls: good ? "good" : "bad", dir: cur > 0 ? "up" : "down", word: good ? "better" : "worse" };
  }
  const d = (cur - prev) / Math.abs(prev);
  if (Math.abs(d) < 0.0005) return { text: "± 0 %", cls: "flat", dir: "flat", word: "unchanged" };
  const arrow = d > 0 ? "▲" : "▼";
  const good = d * better > 0;
  const p = Math.abs(d) * 100;
  return { text: `${arrow} ${p < 10 ? p.toFixed(1) : nf0.format(p)} %`, cls: good ? "good" : "bad", dir: d > 0 ? "up" : "down",
    word: good ? "better" : "worse" };
}

/** botShare is bots over all counted events, bots included. */
export function botShare(k) {
  const all = k.impressions + k.clicks + k.conversions + k.pageviews + k.bots_filtered;
  return ratio(k.bots_filtered, all);
}
