// The view: what a marketer chose to look at (campaign, time range,
// breakdown, filters, comparison, and the text that narrows the campaign
// table), kept in the address bar's query string
// so that a reload, a bookmark or a link in a chat opens the same view.
// The token never goes here (api.js takes it out of the address first).
//
// The address is outside input: a link can carry anything. Every value is
// checked against a closed set or a length limit; what does not pass is
// dropped (the view falls back to its default) and reported, never sent on.

/** DIMS are the dimensions the API breaks down and filters by, in display order. */
export const DIMS = ["source", "medium", "region", "country", "device"];

/** DIM_NAMES are the dimensions' labels. */
export const DIM_NAMES = { source: "Source", medium: "Medium", region: "Region", country: "Country", device: "Device" };

/** COMPARES are the comparison choices and their labels. */
export const COMPARES = {
  prev: "the previous period",
  week: "the same period last week",
  none: "nothing",
};

const MIN = 60 * 1000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

/**
 * RANGES are the preset time ranges: the API's sliding window, its length,
 * the chart step, words for the page and how often REST is asked again.
 */
export const RANGES = {
  live: { window: "60m", ms: HOUR, step: "1m", stepMs: MIN, label: "Live", short: "60 min", text: "the last 60 minutes, live", refreshMs: 10000 },
  "1h": { window: "1h", ms: HOUR, step: "1m", stepMs: MIN, label: "1 h", short: "hour", text: "the last hour", refreshMs: 30000 },
  "24h": { window: "24h", ms: DAY, step: "15m", stepMs: 15 * MIN, label: "24 h", short: "24 h", text: "the last 24 hours", refreshMs: 60000 },
  "7d": { window: "7d", ms: 7 * DAY, step: "1h", stepMs: HOUR, label: "7 d", short: "7 days", text: "the last 7 days", refreshMs: 120000 },
};

/** RANGE_KEYS are the range choices in the order the page shows them. */
export const RANGE_KEYS = [...Object.keys(RANGES), "custom"];

/** MAX_CUSTOM_MS is the longest custom range (the API's default http.max_window). */
export const MAX_CUSTOM_MS = 366 * DAY;

/** MAX_VALUE_LEN bounds a campaign name or filter value taken from a link. */
export const MAX_VALUE_LEN = 200;

// The steps a custom range may use, finest first, with their words; a
// range gets the finest step that keeps a chart at most MAX_POINTS points.
const STEPS = [
  ["1m", MIN, "per minute"], ["5m", 5 * MIN, "per 5 minutes"], ["15m", 15 * MIN, "per 15 minutes"],
  ["1h", HOUR, "per hour"], ["6h", 6 * HOUR, "per 6 hours"], ["1d", DAY, "per day"],
];
const MAX_POINTS = 200;
const STEP_TEXT = Object.fromEntries(STEPS.map(([s, , text]) => [s, text]));

/** defaultView is the view of a link without parameters. */
export function defaultView() {
  return { campaign: "", range: "live", from: "", to: "", by: "source", compare: "prev", filters: {}, find: "" };
}

// The query parameters the view owns; any other is left alone.
const OWNED = ["campaign", "range", "from", "to", "by", "compare", "find", ...DIMS];

/** isoMinute formats a time as RFC 3339 in UTC, to the minute ("2026-12-07T10:00:00Z"). */
export function isoMinute(ms) {
  return new Date(Math.floor(ms / MIN) * MIN).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function parseTime(v) {
  // RFC 3339 with a zone only: a link must mean the same instant everywhere.
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(v)) return NaN;
  return Date.parse(v);
}

const okValue = (v) => typeof v === "string" && v.length > 0 && v.length <= MAX_VALUE_LEN && !/[\u0000-\u001f]/.test(v);

/**
 * parseView reads a view from a query string (location.search). It answers
 * {view, ignored}: ignored names the parameters whose values were refused.
 */
export function parseView(search) {
  const q = new URLSearchParams(search);
  const view = defaultView();
  const ignored = [];
  const one = (name) => {
    const all = q.getAll(name);
    if (all.length > 1) ignored.push(name);
    return all.length === 1 ? all[0] : null;
  };
  const c = one("campaign");
  if (c !== null && c !== "") {
    if (okValue(c)) view.campaign = c;
    else ignored.push("campaign");
  }
  const r = one("range");
  if (r !== null) {
    if (RANGE_KEYS.includes(r)) view.range = r;
    else ignored.push("range");
  }
  if (view.range === "custom") {
    const from = parseTime(one("from") || "");
    const to = parseTime(one("to") || "");
    if (!(from < to) || to - from > MAX_CUSTOM_MS || to - from < MIN) {
      ignored.push("from", "to");
      view.range = "live";
    } else {
      view.from = isoMinute(from);
      view.to = isoMinute(to);
      if (view.from === view.to) {
        ignored.push("from", "to");
        view.range = "live";
        view.from = view.to = "";
      }
    }
  } else if (q.has("from") || q.has("to")) {
    ignored.push(...["from", "to"].filter((n) => q.has(n)));
  }
  const by = one("by");
  if (by !== null) {
    if (DIMS.includes(by)) view.by = by;
    else ignored.push("by");
  }
  const cmp = one("compare");
  if (cmp !== null) {
    if (cmp in COMPARES) view.compare = cmp;
    else ignored.push("compare");
  }
  for (const d of DIMS) {
    const v = one(d);
    if (v === null) continue;
    if (okValue(v)) view.filters[d] = v;
    else ignored.push(d);
  }
  const find = one("find");
  if (find !== null && find !== "") {
    if (okValue(find)) view.find = find;
    else ignored.push("find");
  }
  return { view, ignored: [...new Set(ignored)] };
}

/**
 * viewSearch writes view into the query string search (location.search),
 * keeping parameters the view does not own, and answers the new "?…" (or
 * "" when nothing is left). Every choice is written out, defaults too, so a
 * link means the same view even if the defaults change.
 */
export function viewSearch(view, search = "") {
  const q = new URLSearchParams(search);
  for (const n of OWNED) q.delete(n);
  if (view.campaign) q.set("campaign", view.campaign);
  q.set("range", view.range);
  if (view.range === "custom") {
    q.set("from", view.from);
    q.set("to", view.to);
  }
  q.set("by", view.by);
  q.set("compare", view.compare);
  for (const d of DIMS) if (view.filters[d]) q.set(d, view.filters[d]);
  if (view.find) q.set("find", view.find);
  const s = q.toString();
  return s ? "?" + s : "";
}

/** sameView reports whether two views show the same thing. */
export function sameView(a, b) {
  return viewSearch(a) === viewSearch(b);
}

/** withView returns a copy of view with changes applied (filters replaced, not merged). */
export function withView(view, changes) {
  const v = { ...view, filters: { ...view.filters }, ...changes };
  if (changes.filters) v.filters = { ...changes.filters };
  if (v.range !== "custom") v.from = v.to = "";
  return v;
}

/** filterParams are the view's filters as API parameters. */
export function filterParams(view) {
  const p = {};
  for (const d of DIMS) if (view.filters[d]) p[d] = view.filters[d];
  return p;
}

function stepFor(ms) {
  for (const [step, stepMs] of STEPS) if (ms / stepMs <= MAX_POINTS) return { step, stepMs };
  const [step, stepMs] = STEPS[STEPS.length - 1];
  return { step, stepMs };
}

/**
 * windowOf describes the view's time window at nowMs: the API parameters
 * that select it (window= for the presets, from/to for a custom range), its
 * length and bounds in ms (a preset's bounds end with the minute in
 * progress, as the API's sliding window does), the chart step and words.
 */
export function windowOf(view, nowMs) {
  if (view.range !== "custom") {
    const r = RANGES[view.range];
    // The API's window= holds the minutes that start in [now-length, now),
    // now in whole seconds: they end with the minute in progress.
    const to = Math.ceil((Math.floor(nowMs / 1000) * 1000) / MIN) * MIN;
    return { params: { window: r.window }, from: to - r.ms, to, ms: r.ms, step: r.step, stepMs: r.stepMs,
      stepText: STEP_TEXT[r.step], text: r.text, short: `previous ${r.short}`, refreshMs: r.refreshMs, sliding: true };
  }
  const from = Date.parse(view.from);
  const to = Date.parse(view.to);
  const { step, stepMs } = stepFor(to - from);
  return { params: { from: view.from, to: view.to }, from, to, ms: to - from, step, stepMs, stepText: STEP_TEXT[step],
    text: `${timeText(from)} to ${timeText(to)}`, short: "previous period", refreshMs: to > nowMs ? 30000 : 300000, sliding: false };
}

/**
 * comparisonOf is the window the view is compared with (null for none):
 * the period of the same length just before, or the same period a week
 * earlier, as from/to API parameters, with shiftMs, how far it lies before
 * the view's window (a chart draws it shifted forward by that much).
 */
export function comparisonOf(view, win) {
  if (view.compare === "none") return null;
  const shiftMs = view.compare === "week" ? 7 * DAY : win.ms;
  const from = win.from - shiftMs;
  const to = win.to - shiftMs;
  return { compare: view.compare, params: { from: isoMinute(from), to: isoMinute(to) }, from, to, shiftMs,
    label: view.compare === "week" ? "same time last week" : win.short, legend: view.compare === "week" ? "last week" : "previous" };
}

/** timeText formats a time for people, in the browser's time zone. */
export function timeText(ms) {
  return new Date(ms).toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

/** localInput formats a time for an <input type=datetime-local> (browser's time zone). */
export function localInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/**
 * customRange checks the values of two datetime-local inputs (browser's
 * time zone) and answers {from, to} in RFC 3339 or {error}.
 */
export function customRange(fromLocal, toLocal) {
  const from = Date.parse(fromLocal);
  const to = Date.parse(toLocal);
  if (Number.isNaN(from) || Number.isNaN(to)) return { error: "Enter a start and an end." };
  if (to - from < MIN) return { error: "The end must be at least a minute after the start." };
  if (to - from > MAX_CUSTOM_MS) return { error: "A range can be at most 366 days long." };
  return { from: isoMinute(from), to: isoMinute(to) };
}
