// Alerts on the dashboard: the list of the last day's alerts (from
// GET /api/v1/alerts, kept current by the stream's "alert" events), the
// banner while any fires, the markers on the charts, and the link from an
// alert to its time range as a view of the address (view.js).
//
// Alerts come from the server, but their text is still outside input to
// the page: it is only ever set as text, never as HTML.

import { isoMinute, MAX_CUSTOM_MS } from "./view.js";

const MIN = 60 * 1000;
const HOUR = 60 * MIN;

/** MAX_ALERTS bounds the alerts the page keeps (newest first). */
export const MAX_ALERTS = 500;

/** ID_RE is what an alert id looks like (32 hex digits). */
const ID_RE = /^[0-9a-f]{32}$/;

/**
 * AlertBook keeps one entry per alert id, its latest transition: a
 * resolution replaces its firing and is never replaced by it (a stream
 * event can arrive after the list that already had the resolution, or be
 * sent again by a campaign's new owner).
 */
export class AlertBook {
  constructor() {
    this.byId = new Map();
  }

  /** put records one transition; it answers whether the book changed. */
  put(a) {
    if (!a || typeof a.id !== "string" || !ID_RE.test(a.id) || (a.state !== "firing" && a.state !== "resolved")) return false;
    const cur = this.byId.get(a.id);
    if (cur && (cur.state === "resolved" || (cur.state === a.state && cur.at === a.at))) return false;
    this.byId.set(a.id, a);
    if (this.byId.size > MAX_ALERTS) {
      const oldest = [...this.byId.values()].sort(byStart)[this.byId.size - 1];
      this.byId.delete(oldest.id);
    }
    return true;
  }

  /** replace takes a fresh list from the API, keeping newer transitions the stream brought. */
  replace(list) {
    const keep = new Map(this.byId);
    this.byId = new Map();
    for (const a of list) this.put(a);
    for (const a of keep.values()) this.put(a);
  }

  /** list answers the alerts of campaign (every one for ""), newest first. */
  list(campaign) {
    return [...this.byId.values()].filter((a) => !campaign || a.campaign === campaign).sort(byStart);
  }

  /** firing answers the alerts firing, of campaign or of all, newest first. */
  firing(campaign) {
    return this.list(campaign).filter((a) => a.state === "firing");
  }
}

function byStart(a, b) {
  const d = Date.parse(b.start) - Date.parse(a.start);
  return d !== 0 ? d : a.id < b.id ? -1 : 1;
}

/**
 * alertView is the view that shows an alert: its campaign from an hour
 * before it started to an hour after it ended (or the minute in progress,
 * while it fires), within the longest custom range.
 */
export function alertView(a, nowMs) {
  const start = Date.parse(a.start);
  const end = a.end ? Date.parse(a.end) : nowMs;
  const from = start - HOUR;
  const to = Math.min(Math.max(Math.ceil((end + HOUR) / MIN) * MIN, from + MIN), from + MAX_CUSTOM_MS);
  return { campaign: a.campaign, range: "custom", from: isoMinute(from), to: isoMinute(to) };
}

/** alertHref is the address of alertView, with the alert to highlight. */
export function alertHref(a, nowMs) {
  const v = alertView(a, nowMs);
  const q = new URLSearchParams({ campaign: v.campaign, range: "custom", from: v.from, to: v.to, alert: a.id });
  return "?" + q.toString();
}

/** bannerText says what fires: "" when nothing does. */
export function bannerText(firing) {
  if (firing.length === 0) return "";
  const worst = firing.find((a) => a.severity === "critical") || firing[0];
  const more = firing.length > 1 ? ` (and ${firing.length - 1} more alert${firing.length > 2 ? "s" : ""} firing)` : "";
  return `Alert: ${worst.summary}${more}`;
}

/**
 * markers are the chart markers of alerts that started within [fromMs,
 * toMs): {t (unix seconds), color, label}.
 */
export function markers(alerts, fromMs, toMs) {
  const out = [];
  for (const a of alerts) {
    const t = Date.parse(a.start);
    if (!(t >= fromMs && t < toMs)) continue;
    out.push({ t: t / 1000, color: a.severity === "critical" ? "#c62828" : "#8a5300", label: `${a.campaign}: ${a.metric} ${a.direction || a.rule}` });
  }
  return out;
}

/** describe is one line for the list: what, where, since when. */
export function describe(a) {
  const what = a.kind === "anomaly" ? `${a.metric} ${a.direction}` : `${a.rule}`;
  return `${a.campaign} · ${what}`;
}
