// LiveStore holds the per-minute KPIs of every visible campaign for the
// live window, as the stream delivers them. Updates are absolute values
// for one campaign-minute and replace earlier ones.

import { emptyKPIs, addCounters, withRatios } from "./kpi.js";

export const LIVE_MINUTES = 60;

export class LiveStore {
  constructor() {
    this.campaigns = new Map(); // campaign -> Map(minute -> KPIs)
    this.updatedAt = 0;
  }

  /** reset replaces everything with a snapshot; returns the campaigns touched. */
  reset(updates) {
    const touched = new Set(this.campaigns.keys());
    this.campaigns.clear();
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
          changed.add(c);
        }
      }
    }
    return changed;
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
