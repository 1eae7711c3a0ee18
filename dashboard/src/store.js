// LiveStore holds the per-minute KPIs of every visible campaign for the
// live window, as the stream delivers them. Updates are absolute values
// for one campaign-minute and replace earlier ones. An update marked
// provisional holds agents' live counters no flush has confirmed yet; the
// next update of that minute replaces it (the flush wins).

import { emptyKPIs, addCounters, withRatios } from "./kpi.js";

export const LIVE_MINUTES = 60;

export class LiveStore {
  constructor() {
    this.campaigns = new Map(); // campaign -> Map(minute -> KPIs)
    this.provisional = new Map(); // campaign -> Set(minute) whose figures are provisional
    this.updatedAt = 0;
  }

  /** reset replaces everything with a snapshot; returns the campaigns touched. */
  reset(updates) {
    const touched = new Set(this.campaigns.keys());
    this.campaigns.clear();
    this.provisional.clear();
    for (const c of this.apply(updates)) touched.add(c);
    return touched;
  }

  /** apply stores updates; returns the set of campaigns that changed. */
  apply(updates) {
    const changed = new Set();
    for (const u of updates || []) {
      let m = this.campaigns.get(u.campaign);
      if (!m) this.campaigns.set(u.campaign, (m = new Map()));
      m.set(u.minute, u.kpis);
      let p = this.provisional.get(u.campaign);
      if (u.provisional) {
        if (!p) this.provisional.set(u.campaign, (p = new Set()));
        p.add(u.minute);
      } else if (p) {
        p.delete(u.minute);
        if (!p.size) this.provisional.delete(u.campaign);
      }
      changed.add(u.campaign);
    }
    if (changed.size) this.updatedAt = Date.now();
    return changed;
  }

  /** prune drops minutes before the live window; returns campaigns changed. */
  prune(nowSec) {
    const first = windowStart(nowSec);
    const changed = new Set();
    for (const [c, m] of this.campaigns) {
      for (const minute of m.keys()) {
        if (minute < first) {
          m.delete(minute);
          this.provisional.get(c)?.delete(minute);
          changed.add(c);
        }
      }
    }
    return changed;
  }

  /** isProvisional says whether any minute of campaign shows provisional figures. */
  isProvisional(campaign) {
    const p = this.provisional.get(campaign);
    return !!p && p.size > 0;
  }

  /** totals adds up one campaign's counters over the live window. */
  totals(campaign) {
    const acc = emptyKPIs();
    const m = this.campaigns.get(campaign);
    if (m) for (const k of m.values()) addCounters(acc, k, false);
    return withRatios(acc);
  }

  /**
   * series returns uPlot data for the live window: [minutes, ...one
   * array per metric], summed over the given campaigns (all if null),
   * and has[i], whether the stream delivered anything for minute i.
   */
  series(campaigns, metrics, nowSec) {
    const first = windowStart(nowSec);
    const xs = [];
    for (let i = 0; i < LIVE_MINUTES; i++) xs.push(first + 60 * i);
    const sums = xs.map(() => emptyKPIs());
    const has = xs.map(() => false);
    const add = (m) => {
      for (const [minute, k] of m) {
        const i = (minute - first) / 60;
        if (i >= 0 && i < LIVE_MINUTES) {
          addCounters(sums[i], k, false);
          has[i] = true;
        }
      }
    };
    if (campaigns) {
      for (const c of campaigns) {
        const m = this.campaigns.get(c);
        if (m) add(m);
      }
    } else {
      for (const m of this.campaigns.values()) add(m);
    }
    sums.forEach(withRatios);
    return { data: [xs, ...metrics.map((name) => sums.map((k) => k[name]))], has };
  }
}

/** windowStart is the first minute (unix seconds) of the live window ending at nowSec. */
export function windowStart(nowSec) {
  return Math.floor(nowSec / 60) * 60 - (LIVE_MINUTES - 1) * 60;
}
