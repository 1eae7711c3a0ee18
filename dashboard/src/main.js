// Tally's dashboard: sign-in, KPI tiles, charts, breakdown, campaign
// table and the live stream. All data comes from /api/v1 with the
// signed-in token; rendering is batched into animation frames and
// touches only what changed. What the user looks at (the view) lives in
// the address bar (view.js), so links open the same view.

import "uplot/dist/uPlot.min.css";
import "./styles.css";
import { Client, HTTPError, takeTokenFromURL, takeLinkFromURL, exchangeLink, saveToken, loadToken, clearToken, filenameOf } from "./api.js";
import { EventStream } from "./sse.js";
import { TILES, fmt, shortForms, emptyKPIs, addCounters, withRatios, change, botShare } from "./kpi.js";
import { LiveStore } from "./store.js";
import { LineChart, COLORS } from "./charts.js";
import { RadioGroup } from "./radios.js";
import { AlertBook, alertView, alertHref, bannerText, markers, describe } from "./alerts.js";
import {
  DIMS, DIM_NAMES, RANGES, parseView, viewSearch, withView, sameView, filterParams, windowOf, comparisonOf,
  localInput, customRange, isoMinute,
} from "./view.js";

const $ = (id) => document.getElementById(id);

const RETRY_MS = 5000;
const TABLE_COLS = [
  ["impressions", fmt.count], ["clicks", fmt.count], ["ctr", fmt.pct], ["conversions", fmt.count], ["cvr", fmt.pct],
  ["revenue", fmt.money], ["cost", fmt.money], ["cpa", fmt.money], ["roas", fmt.times],
];
const TRAFFIC = [["impressions", "Impressions", fmt.count], ["clicks", "Clicks", fmt.count], ["conversions", "Conversions", fmt.count]];
const MONEY = [["revenue", "Revenue", fmt.money], ["cost", "Cost", fmt.money]];
const SERIES_METRICS = ["impressions", "clicks", "conversions", "pageviews", "revenue", "cost", "bots_filtered"];
const CHART_METRICS = [...TRAFFIC, ...MONEY].map(([m]) => m);
// A comparison line is its metric's colour, dashed.
const COMPARE_DASH = [6, 4];

// tallyStats counts renders for anyone curious (the browser tests read it).
const stats = (window.tallyStats = { renders: 0, renderMsMax: 0, renderMsTotal: 0, fitMsTotal: 0, streamMessages: 0, lastEventId: "" });

const time = (d) => d.toLocaleTimeString("en-GB");
const setText = (el, text) => {
  if (el.textContent !== text) el.textContent = text;
};
const ALL_DIRTY = () => ({ tiles: true, table: new Set(), tableAll: true, charts: true, drill: true, status: true, options: true, view: true,
  alerts: true, forecast: true });
// How often the alert list and the forecast are read again (the stream
// brings new alerts as they happen).
const ALERTS_REFRESH_MS = 30000;
const FORECAST_REFRESH_MS = 60000;

/** Dashboard is one signed-in session; stop() tears it down. */
class Dashboard {
  constructor(client, who, onSignOut) {
    this.client = client;
    this.who = who;
    this.onSignOut = onSignOut;
    const { view, ignored } = parseView(location.search);
    this.view = view;
    this.ignored = ignored; // parameters of the address that were refused
    this.win = windowOf(view, Date.now());
    this.sort = { key: "clicks", dir: -1 };
    this.rest = new Map(); // campaign -> {kpis}, from REST over the view's window and filters
    this.restTotal = null; // every campaign together (uniques merged) from REST
    this.restLoaded = false; // the campaign list of the current view has arrived
    this.cmp = null; // the comparison period's KPIs and series, or null
    this.forbidden = ""; // the API refused the view's campaign (403): its message
    this.live = new LiveStore();
    this.history = null; // uPlot data of the selected range from REST series
    this.drill = null;
    this.bots = null;
    this.polls = null;
    this.nodeError = null; // why the node is unreachable, or null
    this.roundFailed = false; // a request of the current refresh round failed at the node
    this.stream = { state: "connecting", error: null, node: "", since: null, last: null };
    this.refreshedAt = null;
    this.gen = 0;
    this.timers = [];
    this.abort = new AbortController();
    this.rows = new Map(); // campaign -> {tr, cells, k}
    this.dirty = ALL_DIRTY();
    this.raf = 0;
    this.listeners = [];
    this.alerts = new AlertBook();
    this.alertsLoaded = false;
    this.forecast = null; // {campaign, body} or {campaign, error}
    // The alert a link opened (?alert=), shown highlighted in the list.
    const hl = new URLSearchParams(location.search).get("alert");
    this.highlight = hl && /^[0-9a-f]{32}$/.test(hl) ? hl : "";
  }

  /** streamed: the live stream feeds the figures (live range, no filters: the stream is per campaign only). */
  get streamed() {
    return this.view.range === "live" && Object.keys(this.view.filters).length === 0;
  }

  /** denied names the view's campaign when this viewer may not see it ("" otherwise). */
  get denied() {
    const c = this.view.campaign;
    if (!c) return "";
    if (this.forbidden) return c;
    return this.who.campaigns && !this.who.campaigns.includes(c) ? c : "";
  }

  start() {
    $("app").hidden = false;
    const who = this.who;
    $("whoami").textContent = `${who.subject} · ${who.role}`;
    $("scope").textContent = !who.campaigns ? "" : who.campaigns.length
      ? `Signed in as a viewer of: ${who.campaigns.join(", ")}.`
      : "Signed in as a viewer of no campaign yet: ask an administrator for access.";
    // The address now says exactly what is shown (defaults written out,
    // refused values dropped), so copying it shares this view.
    this.writeAddress("replace");
    this.buildTiles();
    this.charts = { traffic: new LineChart($("chart-traffic")), money: new LineChart($("chart-money")), drill: new LineChart($("chart-drill"), 200) };
    const on = (el, ev, fn) => this.on(el, ev, fn);
    this.ranges = new RadioGroup($("range"), "range", on, (r) => this.pickRange(r));
    this.dims = new RadioGroup($("dims"), "dim", on, (d) => this.change({ by: d }));
    this.on($("campaign"), "change", () => this.change({ campaign: $("campaign").value }));
    this.on($("compare"), "change", () => this.change({ compare: $("compare").value }));
    this.on($("custom"), "submit", (e) => {
      e.preventDefault();
      const r = customRange($("custom-from").value, $("custom-to").value);
      setText($("custom-error"), r.error || "");
      if (!r.error) this.change({ range: "custom", from: r.from, to: r.to });
    });
    this.on($("filters"), "click", (e) => {
      const b = e.target.closest("button[data-remove]");
      if (!b) return;
      const filters = { ...this.view.filters };
      if (b.dataset.remove === "*") for (const d of DIMS) delete filters[d];
      else delete filters[b.dataset.remove];
      this.change({ filters });
    });
    this.on($("drill-table").tBodies[0], "click", (e) => {
      const b = e.target.closest("button[data-key]");
      if (b) this.change({ filters: { ...this.view.filters, [this.view.by]: b.dataset.key } });
    });
    this.on($("notice"), "click", (e) => {
      const b = e.target.closest("button[data-pick]");
      if (b) this.change({ campaign: b.dataset.pick });
    });
    // Typing narrows the table at once; the address follows without a
    // history entry per keystroke.
    this.on($("filter"), "input", () => {
      this.view = withView(this.view, { find: $("filter").value.trim().slice(0, 200) });
      this.writeAddress("replace");
      this.dirty.tableAll = true;
      this.schedule();
    });
    this.on($("campaigns").tHead, "click", (e) => {
      const th = e.target.closest("th[data-sort]");
      if (!th) return;
      const key = th.dataset.sort;
      this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : key === "campaign" ? 1 : -1 };
      this.dirty.tableAll = true;
      this.schedule();
    });
    this.on($("campaigns").tBodies[0], "click", (e) => {
      const tr = e.target.closest("tr");
      if (tr) this.change({ campaign: tr.dataset.campaign === this.view.campaign ? "" : tr.dataset.campaign });
    });
    this.on($("export"), "click", () => this.exportCSV());
    // An alert's link opens its campaign and time range in this page.
    const openAlert = (e) => {
      const link = e.target.closest("a[data-alert]");
      if (!link) return;
      const a = this.alerts.byId.get(link.dataset.alert);
      if (!a) return;
      e.preventDefault();
      this.highlight = a.id;
      this.dirty.alerts = true;
      this.change(alertView(a, Date.now()));
    };
    this.on($("alert-list"), "click", openAlert);
    this.on($("alert-banner"), "click", openAlert);
    this.on($("signout"), "click", () => this.onSignOut(""));
    // Back and forward move between views.
    this.on(window, "popstate", () => {
      const { view, ignored } = parseView(location.search);
      this.ignored = ignored;
      this.apply(view);
    });
    // Narrower tiles may need shorter numbers.
    this.tileSizes = new ResizeObserver(() => {
      this.dirty.tiles = true;
      this.schedule();
    });
    this.tileSizes.observe($("tiles"));

    this.stream.client = new EventStream({
      url: "api/v1/stream",
      token: this.client.token,
      onEvent: (ev) => this.onStreamEvent(ev),
      onState: (s, d) => this.onStreamState(s, d),
    });
    this.stream.client.start();
    this.every(5000, () => {
      for (const c of this.live.prune(Date.now() / 1000)) this.dirty.table.add(c);
      this.dirty.tiles = this.dirty.charts = this.dirty.status = true;
      this.schedule();
    });
    this.every(ALERTS_REFRESH_MS, () => this.refreshAlerts());
    this.every(FORECAST_REFRESH_MS, () => this.refreshForecast(this.gen));
    this.schedule();
    this.refresh();
    this.refreshAlerts();
  }

  stop() {
    this.stopped = true;
    this.stream.client.stop();
    this.abort.abort();
    clearTimeout(this.refreshTimer);
    for (const t of this.timers) clearInterval(t);
    for (const [el, ev, fn] of this.listeners) el.removeEventListener(ev, fn);
    if (this.raf) cancelAnimationFrame(this.raf);
    this.tileSizes.disconnect();
    Object.values(this.charts).forEach((c) => c.close());
    $("tiles").textContent = "";
    $("campaigns").tBodies[0].textContent = "";
    $("drill-table").tBodies[0].textContent = "";
    $("campaign").length = 1;
    $("filter").value = "";
    $("banner").hidden = true;
    $("alert-banner").hidden = true;
    $("alert-list").textContent = "";
    $("forecast").hidden = true;
    $("notice").hidden = true;
    $("filters").hidden = true;
    $("app").hidden = true;
  }

  on(el, ev, fn) {
    el.addEventListener(ev, fn);
    this.listeners.push([el, ev, fn]);
  }

  every(ms, fn) {
    this.timers.push(setInterval(fn, ms));
  }

  schedule() {
    if (!this.raf && !this.stopped) {
      this.raf = requestAnimationFrame(() => {
        this.raf = 0;
        const t0 = performance.now();
        this.render();
        const ms = performance.now() - t0;
        stats.renders++;
        stats.renderMsTotal += ms;
        stats.renderMsMax = Math.max(stats.renderMsMax, ms);
      });
    }
  }

  // ---- the view ----

  /** change applies a change the user made, as a new entry of the history. */
  change(changes) {
    this.ignored = [];
    const next = withView(this.view, changes);
    if (sameView(next, this.view)) return;
    this.apply(next);
    this.writeAddress("push");
  }

  /** pickRange: a preset, or Custom, which starts as the window on screen. */
  pickRange(r) {
    if (r !== "custom") return this.change({ range: r });
    const w = windowOf(this.view, Date.now());
    this.change({ range: "custom", from: isoMinute(w.from), to: isoMinute(w.to) });
  }

  writeAddress(how) {
    const url = location.pathname + viewSearch(this.view, location.search) + location.hash;
    if (url === location.pathname + location.search + location.hash) return;
    if (how === "push") history.pushState(null, "", url);
    else history.replaceState(history.state, "", url);
  }

  /** apply shows view, reloading only what it changes. */
  apply(view) {
    const old = this.view;
    this.view = view;
    this.forbidden = "";
    this.dirty = ALL_DIRTY();
    const same = (k) => JSON.stringify(old[k]) === JSON.stringify(view[k]);
    const data = ["campaign", "range", "from", "to", "by", "compare", "filters"];
    const only = (k) => !same(k) && data.filter((x) => x !== k).every(same);
    const onlyBy = only("by");
    const onlyCompare = only("compare");
    if (data.every(same)) {
      this.schedule(); // the table's find text alone: nothing to load
      return;
    }
    if (onlyBy) {
      this.drill = null;
      this.schedule();
      this.refreshDrill(this.gen);
      return;
    }
    if (onlyCompare) {
      this.cmp = null;
      this.schedule();
      this.refreshCompare(this.gen);
      return;
    }
    if (!same("range") || !same("from") || !same("to") || !same("filters")) {
      // Another window or other filters: the tiles wait for its figures
      // (the campaign list stays, so the picker does not flicker).
      this.restTotal = null;
      this.restLoaded = false;
    }
    this.win = windowOf(view, Date.now());
    this.history = this.drill = this.bots = this.polls = this.cmp = null;
    this.schedule();
    this.refresh();
  }

  // ---- data ----

  /** refresh reloads everything REST serves for the current view, then re-arms itself. */
  async refresh() {
    const gen = ++this.gen;
    clearTimeout(this.refreshTimer);
    this.roundFailed = false;
    this.win = windowOf(this.view, Date.now());
    // Nothing is asked about a campaign outside the scope (the notice says
    // so); the list of the campaigns the viewer may see still loads, for
    // the picker.
    const denied = this.denied;
    // In the live view the series fill the minutes the stream has not
    // delivered (before the page opened, or while it was down).
    await Promise.all(denied ? [this.refreshCampaigns(gen)]
      : [this.refreshCampaigns(gen), this.refreshDrill(gen), this.refreshHistory(gen), this.refreshCompare(gen), this.refreshForecast(gen)]);
    if (gen !== this.gen || this.stopped) return;
    this.refreshedAt = new Date();
    this.dirty.status = true;
    this.schedule();
    // A request that failed while others of the round got through (a
    // dropped connection) is retried as soon as a dead node would be.
    const failed = this.nodeError || this.roundFailed;
    this.refreshTimer = setTimeout(() => this.refresh(), failed ? RETRY_MS : this.win.refreshMs);
  }

  /** call runs one REST request; it sorts out node-level failures and answers null on error. */
  async call(gen, path, params, onError) {
    try {
      const body = await this.client.get(path, params, this.abort.signal);
      if (gen !== this.gen) return null;
      if (this.nodeError) {
        this.nodeError = null;
        this.dirty.status = true;
      }
      return body;
    } catch (e) {
      if (e.name === "AbortError" || gen !== this.gen) return null;
      if (e.status === 401) {
        this.onSignOut("Your token is no longer accepted (expired or revoked). Sign in again.");
      } else if (e.status === 0 || e.status >= 500) {
        this.roundFailed = true;
        this.nodeError = e.status === 0 ? "the node is not answering" : `the node answered ${e.status}: ${e.message}`;
        this.dirty.status = true;
        this.schedule();
      } else if (e.status === 403 && this.view.campaign) {
        // The scope changed since sign-in, or the token's role is not
        // what whoami said: say so instead of showing empty figures.
        this.forbidden = e.message;
        this.dirty = ALL_DIRTY();
        this.schedule();
      } else if (onError) {
        onError(e);
      }
      return null;
    }
  }

  /** params are the API parameters of the view's window and filters, plus extra. */
  params(extra) {
    return { ...extra, ...this.win.params, ...filterParams(this.view) };
  }

  async refreshCampaigns(gen) {
    const body = await this.call(gen, "campaigns", this.params({}));
    if (!body) return;
    this.restTotal = body.total || null;
    this.restLoaded = true;
    const seen = new Set();
    for (const c of body.campaigns || []) {
      seen.add(c.campaign);
      const old = this.rest.get(c.campaign);
      if (!old || JSON.stringify(old.kpis) !== JSON.stringify(c.kpis) || JSON.stringify(old.previous) !== JSON.stringify(c.previous)) {
        this.rest.set(c.campaign, { kpis: c.kpis, previous: c.previous });
        this.dirty.table.add(c.campaign);
        if (!old) this.dirty.options = true;
      }
    }
    for (const c of this.rest.keys()) {
      if (!seen.has(c)) {
        this.rest.delete(c);
        this.dirty.table.add(c);
        this.dirty.options = true;
      }
    }
    this.dirty.tiles = this.dirty.view = true;
    this.schedule();
  }

  async refreshHistory(gen) {
    const w = this.win;
    const body = await this.call(gen, "series", this.params({ campaign: this.view.campaign, metric: SERIES_METRICS.join(","), step: w.step }),
      (e) => (this.history = { error: e.message }));
    if (body) {
      const pts = (body.series[0] && body.series[0].points) || [];
      this.history = [pts.map((p) => Date.parse(p.t) / 1000), ...SERIES_METRICS.map((m) => pts.map((p) => p.values[m] ?? null))];
    }
    this.dirty.charts = true;
    this.schedule();
  }

  /**
   * refreshCompare loads the comparison period: its KPIs (one campaign's,
   * or every campaign's together with uniques merged) and its series for
   * the dashed lines of the charts. The previous period of a preset range
   * comes with the campaign list (refreshCampaigns), so it costs no query
   * of its own; and a period already loaded is not asked again until the
   * window moves on (a minute, in the live view).
   */
  async refreshCompare(gen) {
    const cmp = comparisonOf(this.view, this.win);
    if (!cmp) {
      this.cmp = null;
      this.dirty.tiles = this.dirty.charts = true;
      this.schedule();
      return;
    }
    const c = this.view.campaign;
    const base = { ...cmp.params, ...filterParams(this.view) };
    const key = JSON.stringify([c, base, this.win.step]);
    const fromList = cmp.compare === "prev" && this.win.sliding;
    if (this.cmp && this.cmp.key === key && !this.cmp.error) return;
    const onError = (e) => (this.cmp = { ...cmp, key, error: e.message });
    const [k, s] = await Promise.all([
      fromList ? null : c ? this.call(gen, "kpis", { campaign: c, ...base }, onError) : this.call(gen, "campaigns", base, onError),
      this.call(gen, "series", { campaign: c, metric: CHART_METRICS.join(","), step: this.win.step, ...base }, onError),
    ]);
    if (gen !== this.gen || this.view.compare !== cmp.compare) return;
    if ((k || fromList) && s) {
      const pts = (s.series[0] && s.series[0].points) || [];
      this.cmp = { ...cmp, key, fromList, kpis: fromList ? null : c ? k : (k.total && k.total.kpis) || emptyKPIs(),
        xs: pts.map((p) => Date.parse(p.t) / 1000 + cmp.shiftMs / 1000),
        ys: Object.fromEntries(CHART_METRICS.map((m) => [m, pts.map((p) => p.values[m] ?? null)])) };
    }
    this.dirty.tiles = this.dirty.charts = true;
    this.schedule();
  }

  /**
   * refreshAlerts reads the alerts of the last 24 hours in the caller's
   * scope; the stream adds the ones decided since. A node without alerting
   * (or an error) leaves the list as it is.
   */
  async refreshAlerts() {
    if (this.stopped) return;
    let body;
    try {
      body = await this.client.get("alerts", {}, this.abort.signal);
    } catch (e) {
      if (e.status === 401) this.onSignOut("Your token is no longer accepted (expired or revoked). Sign in again.");
      return;
    }
    this.alerts.replace(body.alerts || []);
    this.alertsLoaded = true;
    this.dirty.alerts = this.dirty.charts = true;
    this.schedule();
  }

  /** refreshForecast reads the selected campaign's forecast (none without a campaign). */
  async refreshForecast(gen) {
    const c = this.view.campaign;
    if (!c || this.denied) {
      if (this.forecast) {
        this.forecast = null;
        this.dirty.forecast = true;
        this.schedule();
      }
      return;
    }
    let body = null;
    let error = "";
    try {
      body = await this.client.get("forecast", { campaign: c }, this.abort.signal);
    } catch (e) {
      if (e.name === "AbortError") return;
      error = e.status === 404 ? "not enough history for a forecast yet" : e.message;
    }
    if (gen !== this.gen || c !== this.view.campaign) return;
    this.forecast = { campaign: c, body, error };
    this.dirty.forecast = true;
    this.schedule();
  }

  /** compareKPIs are the comparison period's KPIs of what the tiles show, or null. */
  compareKPIs() {
    const cmp = this.cmp;
    if (!cmp || cmp.error) return null;
    if (!cmp.fromList) return cmp.kpis;
    if (!this.restLoaded) return null;
    const c = this.view.campaign;
    if (c) return (this.rest.get(c) || {}).previous || emptyKPIs();
    return this.restTotal ? this.restTotal.previous : null;
  }

  /** refreshDrill loads the breakdown by the chosen dimension, and the bot share. */
  async refreshDrill(gen) {
    const w = this.win;
    const dim = this.view.by;
    const campaign = this.view.campaign;
    const onError = (e) => (this.drill = { error: e.message });
    const jobs = [];
    if (campaign) {
      jobs.push(this.call(gen, "kpis", this.params({ campaign, by: dim }), onError));
      jobs.push(this.call(gen, "series", this.params({ campaign, metric: "clicks", step: w.step, by: dim }), onError));
      jobs.push(this.call(gen, "bots", this.params({ campaign })));
      jobs.push(this.call(gen, "polls", this.params({ campaign })));
    } else {
      // No kpis?by= across campaigns: add up the series per group instead.
      jobs.push(this.call(gen, "series", this.params({ metric: SERIES_METRICS.join(","), step: w.step, by: dim }), onError));
    }
    const [a, b, bots, polls] = await Promise.all(jobs);
    if (dim !== this.view.by || gen !== this.gen) return; // a newer view owns the panel
    if (campaign && a && b) {
      this.drill = { dim, groups: a.groups.map((g) => ({ key: g.key, kpis: g.kpis })), series: b.series };
      this.bots = bots;
      this.polls = polls;
    } else if (!campaign && a) {
      const groups = a.series.map((s) => {
        const k = emptyKPIs();
        for (const p of s.points) addCounters(k, p.values, false);
        return { key: s.key, kpis: withRatios(k) };
      });
      groups.sort((x, y) => (x.key < y.key ? -1 : 1));
      this.drill = { dim, groups, series: a.series };
      this.bots = null;
      this.polls = null;
    }
    this.dirty.drill = true;
    this.schedule();
  }

  onStreamEvent(ev) {
    stats.streamMessages++;
    stats.lastEventId = ev.id;
    if (ev.type === "status") {
      try {
        const s = JSON.parse(ev.data);
        this.stream.node = s.node || "";
        this.stream.members = s.members;
      } catch (_) { /* ignore a malformed status */ }
      this.dirty.status = true;
      this.schedule();
      return;
    }
    if (ev.type === "alert") {
      let a;
      try {
        a = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      if (this.alerts.put(a)) {
        this.dirty.alerts = this.dirty.charts = true;
        this.schedule();
      }
      return;
    }
    if (ev.type !== "snapshot" && ev.type !== "minutes") return;
    let body;
    try {
      body = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    const changed = ev.type === "snapshot" ? this.live.reset(body.updates) : this.live.apply(body.updates);
    if (this.streamed) {
      for (const c of changed) {
        this.dirty.table.add(c);
        if (!this.rows.has(c) && !this.rest.has(c)) this.dirty.options = true;
      }
      this.dirty.tiles = this.dirty.charts = true;
    }
    this.stream.last = new Date();
    this.dirty.status = true;
    this.schedule();
  }

  onStreamState(state, detail) {
    if (state === "unauthorized") {
      this.onSignOut("Your token is no longer accepted (expired or revoked). Sign in again.");
      return;
    }
    if (state === "open") {
      const wasDown = this.stream.state === "down";
      this.stream.state = "live";
      Object.assign(this.dirty, { tiles: true, tableAll: true, charts: true });
      this.stream.error = null;
      if (wasDown || this.nodeError) this.refresh(); // catch up on what REST serves
      this.dirty.status = true;
      this.schedule();
      return;
    }
    if (state === "down") {
      // Is it only the stream, or the whole node? Ask REST now rather
      // than at the next periodic refresh.
      if (this.stream.state !== "down" && !this.nodeError) this.refresh();
      this.stream.error = detail.error ? detail.error.message : "";
      this.stream.retryMs = detail.retryMs;
      if (this.stream.state !== "down") this.stream.since = new Date();
      this.stream.state = "down";
      Object.assign(this.dirty, { tiles: true, tableAll: true, charts: true });
    } else if (state === "connecting" && this.stream.state !== "down") {
      this.stream.state = "connecting";
    }
    this.dirty.status = true;
    this.schedule();
  }

  /** campaignKPIs is what the table and tiles show for one campaign. */
  campaignKPIs(c) {
    const r = this.rest.get(c);
    // While the stream is down its minutes go stale: REST, refreshed
    // every few seconds, is the better source then.
    if (this.streamed && this.stream.state === "live" && this.live.campaigns.has(c)) {
      const k = this.live.totals(c);
      // Uniques do not add up across minutes: they come merged from REST.
      k.uniques = r ? r.kpis.uniques : 0;
      // Counts from live counters no flush has confirmed yet.
      k.provisional = this.live.isProvisional(c);
      return k;
    }
    return r ? r.kpis : emptyKPIs();
  }

  campaignNames() {
    const names = new Set(this.rest.keys());
    if (this.streamed) for (const c of this.live.campaigns.keys()) names.add(c);
    return [...names].sort();
  }

  async exportCSV() {
    const c = this.view.campaign;
    if (!c || this.denied) return;
    const w = windowOf(this.view, Date.now());
    const btn = $("export");
    btn.disabled = true;
    try {
      const resp = await this.client.fetch("export.csv", { campaign: c, step: w.step, ...w.params, ...filterParams(this.view) }, this.abort.signal);
      const blob = await resp.blob();
      const name = filenameOf(resp.headers.get("Content-Disposition"), `tally-${c}.csv`);
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
      document.body.dataset.lastExport = name;
    } catch (e) {
      if (e.status === 401) return this.onSignOut("Your token is no longer accepted. Sign in again.");
      $("drill-error").textContent = "Export failed: " + e.message;
    } finally {
      btn.disabled = !this.view.campaign;
    }
  }

  // ---- rendering (one pass per animation frame) ----

  render() {
    const d = this.dirty;
    if (d.view) this.renderView();
    if (d.options) this.renderOptions();
    // Tiles measure their numbers: before anything else of this pass
    // changes the page, so that measuring costs little.
    if (d.tiles) this.renderTiles();
    if (d.status || d.view) this.renderStatus();
    if (d.tableAll || d.table.size) this.renderTable();
    if (d.charts) this.renderCharts();
    if (d.drill) this.renderDrill();
    if (d.alerts || d.view) this.renderAlerts();
    if (d.forecast || d.view) this.renderForecast();
    this.dirty = { tiles: false, table: new Set(), tableAll: false, charts: false, drill: false, status: false, options: false, view: false,
      alerts: false, forecast: false };
  }

  /** renderView sets the controls, the filter chips and the notice from the view. */
  renderView() {
    const v = this.view;
    this.ranges.set(v.range);
    this.dims.set(v.by);
    $("compare").value = v.compare;
    if ($("filter").value.trim() !== v.find) $("filter").value = v.find;
    const custom = $("custom");
    custom.hidden = v.range !== "custom";
    // The inputs follow the view when it changes, never while someone types.
    const range = v.range === "custom" ? v.from + "/" + v.to : "";
    if (range && range !== this.customShown) {
      $("custom-from").value = localInput(Date.parse(v.from));
      $("custom-to").value = localInput(Date.parse(v.to));
      setText($("custom-error"), "");
    }
    this.customShown = range;
    this.renderOptions();

    // Filter chips: each says what it keeps and can be removed.
    const box = $("filters");
    box.textContent = "";
    const active = DIMS.filter((d) => v.filters[d]);
    box.hidden = active.length === 0;
    if (active.length) {
      const lead = document.createElement("span");
      lead.className = "muted";
      lead.textContent = "Showing only";
      box.append(lead);
      for (const d of active) {
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.dataset.dim = d;
        const text = `${DIM_NAMES[d]}: ${v.filters[d]}`;
        const b = document.createElement("button");
        b.type = "button";
        b.dataset.remove = d;
        b.setAttribute("aria-label", `Remove the filter ${text}`);
        b.textContent = "✕";
        chip.append(text, b);
        box.append(chip);
      }
      if (active.length > 1) {
        const all = document.createElement("button");
        all.type = "button";
        all.className = "ghost";
        all.dataset.remove = "*";
        all.textContent = "Clear filters";
        box.append(all);
      }
    }

    // The notice: a campaign this account may not see, a campaign with no
    // traffic, or a part of the link that was refused.
    const notice = $("notice");
    notice.textContent = "";
    const denied = this.denied;
    $("data").hidden = !!denied;
    notice.className = "notice" + (denied ? " denied" : "");
    notice.setAttribute("role", denied ? "alert" : "status");
    if (denied) {
      const h = document.createElement("h2");
      h.textContent = `You cannot see the campaign “${denied}”`;
      const p = document.createElement("p");
      const mine = this.who.campaigns && this.who.campaigns.length ? `Your campaigns are ${this.who.campaigns.join(", ")}.` : "";
      p.textContent = this.forbidden
        ? `The server refused it for ${this.who.subject} (${this.who.role}): ${this.forbidden}. ${mine}`
        : `This link opens a campaign outside the scope of ${this.who.subject} (${this.who.role}). ${mine} Ask an administrator for access if you need it.`;
      const picks = document.createElement("div");
      picks.className = "picks";
      const pickButton = (campaign, text) => {
        const b = document.createElement("button");
        b.type = "button";
        b.dataset.pick = campaign;
        b.textContent = text;
        picks.append(b);
      };
      pickButton("", "Show all my campaigns");
      for (const m of (this.who.campaigns || []).slice(0, 8)) pickButton(m, `Show ${m}`);
      notice.append(h, p, picks);
    } else {
      const lines = [];
      const c = v.campaign;
      if (c && this.restLoaded && !this.rest.has(c) && !(this.streamed && this.live.campaigns.has(c))) {
        lines.push(`The campaign “${c}” has no traffic in ${this.win.text}${active.length ? " with these filters" : ""}.`);
      }
      if (this.ignored.length) lines.push(`Part of the link could not be used and was left out: ${this.ignored.join(", ")}.`);
      for (const l of lines) {
        const p = document.createElement("p");
        p.textContent = l;
        notice.append(p);
      }
    }
    notice.hidden = notice.childNodes.length === 0;
  }

  renderOptions() {
    const sel = $("campaign");
    const names = this.campaignNames();
    const c = this.view.campaign;
    // A campaign of the view that is not listed (no traffic, or no
    // access) still shows as chosen.
    const extra = c && !names.includes(c) ? [c] : [];
    const label = (n) => extra.includes(n) ? n + (this.denied ? " (no access)" : this.restLoaded ? " (no data)" : "") : n;
    const want = [...names, ...extra].map(label);
    const have = [...sel.options].slice(1).map((o) => o.text);
    if (have.join("\n") !== want.join("\n")) {
      sel.length = 1;
      for (const n of [...names, ...extra]) sel.add(new Option(label(n), n));
    }
    sel.value = c;
  }

  renderStatus() {
    const st = $("status");
    const banner = $("banner");
    let text, cls, msg = "";
    const streamed = this.streamed;
    if (this.denied) {
      text = "no access";
      cls = "";
    } else if (this.nodeError) {
      text = "node down";
      cls = "down";
      msg = `Cannot reach the Tally node: ${this.nodeError}. Retrying every ${RETRY_MS / 1000} s` +
        (this.refreshedAt ? `; the figures below are from ${time(this.refreshedAt)}.` : ".");
    } else if (streamed && this.stream.state === "down") {
      text = "stream down";
      cls = "down";
      msg = `Live updates stopped: ${this.stream.error || "stream disconnected"}` +
        ` (since ${time(this.stream.since)}). Reconnecting… Meanwhile the figures are refreshed every ${RANGES.live.refreshMs / 1000} s` +
        (this.refreshedAt ? `, last at ${time(this.refreshedAt)}.` : ".");
    } else if (streamed) {
      text = this.stream.state === "live" ? "live" : "connecting…";
      cls = this.stream.state === "live" ? "live" : "connecting";
    } else {
      text = this.refreshedAt ? `updated ${time(this.refreshedAt)}` : "loading…";
      cls = "";
    }
    setText(st, text);
    st.className = "status " + cls;
    st.title = this.stream.node ? `served by ${this.stream.node}` + (this.stream.members ? ` (${this.stream.members} nodes)` : "") : "";
    setText(banner, msg);
    banner.hidden = !msg;
    document.querySelector("main").classList.toggle("stale", !!this.nodeError);
    const exp = $("export");
    const can = !!this.view.campaign && !this.denied;
    exp.disabled = !can;
    exp.title = can ? `Download ${this.view.campaign}, ${this.win.text}, as CSV` : "Choose a campaign to export";
  }

  buildTiles() {
    const box = $("tiles");
    box.textContent = "";
    this.tiles = {};
    for (const t of [...TILES, { key: "bots", label: "Bot share", help: "" }]) {
      const el = document.createElement("div");
      el.className = "tile";
      el.dataset.kpi = t.key;
      el.setAttribute("role", "group");
      el.setAttribute("aria-labelledby", `tile-${t.key}`);
      el.innerHTML = `<div class="label"></div><div class="value">–</div><div class="delta"><span class="text"></span><span class="sr-only"></span></div><div class="help"></div>`;
      el.children[0].id = `tile-${t.key}`;
      el.children[0].textContent = t.label;
      el.children[3].textContent = t.help;
      box.appendChild(el);
      const delta = el.children[2];
      this.tiles[t.key] = { el, value: el.children[1], delta, deltaText: delta.children[0], deltaWord: delta.children[1], help: el.children[3] };
    }
  }

  /**
   * setTileValue writes v in the tile as f formats it, exactly for now;
   * fitTiles then shortens what does not fit. The exact value is always in
   * the title (on hover) and in the tables.
   */
  setTileValue(tile, f, v, known, fit) {
    const el = tile.value;
    el.dataset.value = String(v);
    if (!known) {
      setText(el, "–");
      el.title = "";
      delete el.dataset.short;
      return;
    }
    const forms = shortForms(f, v);
    el.title = forms[0];
    setText(el, forms[0]);
    fit.push({ el, forms, i: 0 });
  }

  /**
   * fitTiles gives each tile number of items the longest of its forms that
   * fits its tile ("1,849,523.12", else "1.85M", "1.8M", "2M"). It reads
   * every width in one pass before writing any text, so the browser lays
   * the page out once per round, not once per tile.
   */
  fitTiles(items) {
    const t0 = performance.now();
    let pending = items;
    while (pending.length) {
      const over = pending.filter((it) => it.i + 1 < it.forms.length && it.el.scrollWidth > it.el.clientWidth);
      for (const it of over) setText(it.el, it.forms[++it.i]);
      pending = over;
    }
    for (const it of items) {
      if (it.i > 0) it.el.dataset.short = "1";
      else delete it.el.dataset.short;
    }
    stats.fitMsTotal += performance.now() - t0;
  }

  renderTiles() {
    let cur;
    let provisional = false;
    const c = this.view.campaign;
    if (c) {
      cur = this.campaignKPIs(c);
      provisional = !!cur.provisional;
    } else {
      cur = emptyKPIs();
      for (const n of this.campaignNames()) {
        const k = this.campaignKPIs(n);
        provisional ||= !!k.provisional;
        addCounters(cur, k, true);
      }
      withRatios(cur);
      // A visitor of two campaigns is one visitor: the API merges them.
      if (this.restTotal) cur.uniques = this.restTotal.kpis.uniques;
    }
    const cmpK = this.compareKPIs();
    const cmp = cmpK ? this.cmp : null;
    const known = this.restLoaded || (this.streamed && this.live.campaigns.size > 0);
    const fit = [];
    for (const t of TILES) {
      const tile = this.tiles[t.key];
      const v = cur[t.key];
      this.setTileValue(tile, t.fmt, v, known, fit);
      // Uniques come at flush cadence only; every other figure may hold
      // live counters the next flush confirms (or corrects: it wins).
      markProvisional(tile, known && provisional && t.key !== "uniques");
      const ch = known && cmp ? change(v, cmpK[t.key], t.better) : { text: "", cls: "", word: "" };
      setText(tile.deltaText, ch.text ? `${ch.text} vs ${cmp.label}` : "");
      setText(tile.deltaWord, ch.word ? ` (${ch.word})` : "");
      tile.delta.className = "delta " + ch.cls;
      tile.delta.dataset.dir = ch.dir || "";
      tile.delta.title = ch.text ? `${t.label}: ${t.fmt(v)} now, ${t.fmt(cmpK[t.key])} ${cmp.legend === "last week" ? "the same time last week" : "in the previous period"}` : "";
    }
    const b = this.tiles.bots;
    // One campaign: /bots, over every event type. All campaigns: the
    // share of the event types the KPIs count (there is no /bots total).
    let share = botShare(cur);
    let bots = cur.bots_filtered;
    let help = "of impressions, clicks, conversions and page views";
    if (c && this.bots) {
      share = this.bots.share;
      bots = this.bots.total;
      help = "of all events, left out of every figure";
    }
    setText(b.help, help);
    this.setTileValue(b, fmt.pct, share, known, fit);
    markProvisional(b, known && provisional && !(c && this.bots));
    setText(b.deltaText, known ? `${fmt.count(bots)} bot events filtered` : "");
    setText(b.deltaWord, "");
    b.delta.className = "delta flat";
    setText($("traffic-title"), `Traffic ${this.win.stepText}`);
    setText($("money-title"), `Revenue and cost ${this.win.stepText}`);
    this.fitTiles(fit);
  }

  renderTable() {
    const tbody = $("campaigns").tBodies[0];
    const names = this.campaignNames();
    const all = this.dirty.tableAll;
    // Create, update and drop rows; only changed cells are written.
    const present = new Set(names);
    for (const [c, row] of this.rows) {
      if (!present.has(c)) {
        row.tr.remove();
        this.rows.delete(c);
      }
    }
    let orderChanged = all;
    for (const c of names) {
      let row = this.rows.get(c);
      if (!row) {
        const tr = document.createElement("tr");
        tr.dataset.campaign = c;
        const cells = [];
        for (let i = 0; i <= TABLE_COLS.length; i++) cells.push(tr.insertCell());
        // A button, so the keyboard can pick a campaign too.
        const b = document.createElement("button");
        b.type = "button";
        b.className = "link";
        b.textContent = c;
        cells[0].append(b);
        row = { tr, cells, k: null, button: b };
        this.rows.set(c, row);
        orderChanged = true;
      } else if (!all && !this.dirty.table.has(c)) {
        continue;
      }
      const k = this.campaignKPIs(c);
      row.k = k;
      TABLE_COLS.forEach(([key, f], i) => setText(row.cells[i + 1], f(k[key])));
      const selected = c === this.view.campaign;
      if (row.selected !== selected) {
        row.selected = selected;
        row.tr.classList.toggle("selected", selected);
        row.button.setAttribute("aria-pressed", String(selected));
      }
      orderChanged = orderChanged || this.sort.key !== "campaign";
    }
    const f = this.view.find.toLowerCase();
    let shown = 0;
    for (const [c, row] of this.rows) {
      const hide = f !== "" && !c.toLowerCase().includes(f);
      if (row.tr.hidden !== hide) row.tr.hidden = hide;
      if (!hide) shown++;
    }
    setText($("campaign-count"), f ? `(${shown} of ${this.rows.size})` : `(${this.rows.size})`);
    for (const th of $("campaigns").tHead.rows[0].cells) {
      const on = th.dataset.sort === this.sort.key;
      th.classList.toggle("asc", on && this.sort.dir > 0);
      th.classList.toggle("desc", on && this.sort.dir < 0);
      if (on) th.setAttribute("aria-sort", this.sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    if (!orderChanged) return;
    const { key, dir } = this.sort;
    const rows = [...this.rows.entries()];
    rows.sort(([a, ra], [b, rb]) => {
      const x = key === "campaign" ? a : ra.k[key];
      const y = key === "campaign" ? b : rb.k[key];
      return x < y ? -dir : x > y ? dir : a < b ? -1 : 1;
    });
    // Move only the rows that are out of place.
    let at = tbody.firstChild;
    for (const [, row] of rows) {
      if (row.tr === at) at = at.nextSibling;
      else tbody.insertBefore(row.tr, at);
    }
  }

  renderCharts() {
    let data;
    if (this.streamed) {
      const c = this.view.campaign;
      const { data: d, has } = this.live.series(c ? [c] : null, CHART_METRICS, Date.now() / 1000);
      const h = this.history && !this.history.error ? this.history : null;
      if (this.stream.state !== "live") has.fill(false);
      if (h) {
        const at = new Map(h[0].map((x, i) => [x, i]));
        d[0].forEach((x, i) => {
          const j = at.get(x);
          if (has[i] || j === undefined) return;
          CHART_METRICS.forEach((m, k) => (d[1 + k][i] = h[1 + SERIES_METRICS.indexOf(m)][j]));
        });
      }
      data = { xs: d[0], get: (m) => d[1 + CHART_METRICS.indexOf(m)] };
    } else if (this.history && !this.history.error) {
      const h = this.history;
      data = { xs: h[0], get: (m) => h[1 + SERIES_METRICS.indexOf(m)] };
    } else {
      data = { xs: [], get: () => [] };
    }
    // The comparison period, shifted onto this period's steps.
    const cmp = this.cmp && this.cmp.xs ? this.cmp : null;
    const cmpOf = (m) => {
      const out = data.xs.map(() => null);
      if (!cmp || data.xs.length === 0) return out;
      const step = data.xs.length > 1 ? data.xs[1] - data.xs[0] : this.win.stepMs / 1000;
      cmp.xs.forEach((x, i) => {
        const k = Math.round((x - data.xs[0]) / step);
        if (k >= 0 && k < out.length) out[k] = cmp.ys[m][i];
      });
      return out;
    };
    const draw = (chart, defs) => {
      const specs = defs.map(([, label, f], i) => ({ label, fmt: f, color: COLORS[i] }));
      const ys = defs.map(([m]) => data.get(m));
      if (cmp) {
        defs.forEach(([m, label, f], i) => {
          specs.push({ label: `${label} (${cmp.legend})`, fmt: f, color: COLORS[i] + "a0", dash: COMPARE_DASH });
          ys.push(cmpOf(m));
        });
      }
      chart.set(specs, [data.xs, ...ys]);
    };
    draw(this.charts.traffic, TRAFFIC);
    draw(this.charts.money, MONEY);
    // Where alerts of what the charts show started.
    const ms = markers(this.alerts.list(this.view.campaign), this.win.from, this.win.to);
    this.charts.traffic.setMarkers(ms);
    this.charts.money.setMarkers(ms);
  }

  /** renderAlerts draws the alert list, its count and the banner. */
  renderAlerts() {
    const c = this.denied ? "\u0000" : this.view.campaign;
    const list = this.alerts.list(c);
    const firing = list.filter((a) => a.state === "firing");
    const ul = $("alert-list");
    ul.textContent = "";
    const now = Date.now();
    for (const a of list.slice(0, 50)) {
      const li = document.createElement("li");
      li.className = `alert ${a.state} ${a.severity}` + (a.id === this.highlight ? " highlight" : "");
      li.dataset.id = a.id;
      li.dataset.state = a.state;
      const head = document.createElement("div");
      head.className = "alert-head";
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = a.state === "firing" ? (a.severity === "critical" ? "critical" : "firing") : "resolved";
      const what = document.createElement("b");
      what.textContent = describe(a);
      const when = document.createElement("span");
      when.className = "muted";
      when.textContent = ` since ${new Date(a.start).toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" })}` +
        (a.end ? `, resolved ${new Date(a.end).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" })}` : "") +
        (a.silenced ? " (silenced)" : "");
      const link = document.createElement("a");
      link.href = alertHref(a, now);
      link.dataset.alert = a.id;
      link.textContent = "Show";
      link.setAttribute("aria-label", `Show ${describe(a)} on the charts`);
      head.append(badge, " ", what, when, " ", link);
      const p = document.createElement("p");
      p.textContent = a.summary;
      li.append(head, p);
      ul.append(li);
    }
    setText($("alert-count"), this.alertsLoaded || list.length ? `(${firing.length} firing, ${list.length} in 24 h)` : "");
    $("alert-empty").hidden = list.length > 0;
    // The banner: every alert firing in scope, whatever campaign is shown.
    const all = this.denied ? [] : this.alerts.firing("");
    const banner = $("alert-banner");
    const text = bannerText(all);
    banner.hidden = !text;
    setText($("alert-banner-text"), text);
    const link = $("alert-banner-link");
    if (all.length) {
      const worst = all.find((a) => a.severity === "critical") || all[0];
      link.href = alertHref(worst, now);
      link.dataset.alert = worst.id;
    }
  }

  /** renderForecast draws the selected campaign's projection of the day and its pacing. */
  renderForecast() {
    const box = $("forecast");
    const f = this.forecast;
    const show = !!f && f.campaign === this.view.campaign && !this.denied;
    box.hidden = !show;
    if (!show) return;
    const grid = $("forecast-tiles");
    grid.textContent = "";
    if (f.error || !f.body) {
      setText($("forecast-summary"), `No forecast for ${f.campaign}: ${f.error}.`);
      return;
    }
    const b = f.body;
    setText($("forecast-summary"), b.summary);
    const day = b.day;
    const rows = [["Spend", day.spend, fmt.money], ["Conversions", day.conversions, fmt.count], ["Revenue", day.revenue, fmt.money], ["ROAS", day.roas, fmt.times]];
    for (const [label, p, fmt2] of rows) {
      // A bound the server cannot give (no typical day yet) is null.
      const f2 = (x) => (x === null || x === undefined ? "…" : fmt2(x));
      const el = document.createElement("div");
      el.className = "fc";
      el.dataset.kpi = label.toLowerCase();
      const l = document.createElement("div");
      l.className = "label";
      l.textContent = `${label} by end of day`;
      const v = document.createElement("div");
      v.className = "value";
      const forms = shortForms(fmt2, p.projected);
      v.textContent = forms[forms.length > 1 && forms[0].length > 10 ? 1 : 0];
      v.title = `${forms[0]} projected (${f2(p.low)} – ${f2(p.high)}); ${f2(p.actual)} so far`;
      const r = document.createElement("div");
      r.className = "muted";
      r.textContent = `${f2(p.actual)} so far · ${f2(p.low)}–${f2(p.high)}`;
      el.append(l, v, r);
      grid.append(el);
    }
    if (b.pacing && b.pacing.daily_budget > 0) {
      const el = document.createElement("div");
      el.className = "fc pacing";
      el.dataset.kpi = "pacing";
      const l = document.createElement("div");
      l.className = "label";
      l.textContent = "Daily budget";
      const v = document.createElement("div");
      v.className = "value";
      v.textContent = fmt.pct(b.pacing.budget_share);
      v.title = `${fmt.money(b.day.spend.actual)} of ${fmt.money(b.pacing.daily_budget)} spent; ${fmt.pct(b.pacing.time_share)} of the day gone`;
      const r = document.createElement("div");
      r.className = "muted";
      r.textContent = `spent, ${fmt.pct(b.pacing.time_share)} of the day gone`;
      el.append(l, v, r);
      grid.append(el);
    }
  }

  renderDrill() {
    const dim = this.view.by;
    const name = DIM_NAMES[dim];
    setText($("drill-dim"), name);
    setText($("drill-title"), `Clicks by ${name.toLowerCase()} ${this.win.stepText}`);
    const tbody = $("drill-table").tBodies[0];
    const err = $("drill-error");
    setText(err, this.drill && this.drill.error ? "Breakdown unavailable: " + this.drill.error : "");
    const groups = (this.drill && this.drill.groups) || [];
    const totalClicks = groups.reduce((s, g) => s + g.kpis.clicks, 0);
    tbody.textContent = "";
    const filtered = this.view.filters[dim];
    for (const g of groups) {
      const k = g.kpis;
      const tr = tbody.insertRow();
      tr.dataset.key = g.key;
      const share = totalClicks ? k.clicks / totalClicks : 0;
      // The group's name is a button: it adds the filter "only this group".
      const b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.dataset.key = g.key;
      b.textContent = g.key || "(none)";
      b.title = filtered === g.key ? `Showing only ${name.toLowerCase()} ${g.key}` : `Show only ${name.toLowerCase()} ${g.key}`;
      tr.insertCell().append(b);
      for (const text of [fmt.count(k.impressions), fmt.count(k.clicks), fmt.pct(k.ctr), fmt.count(k.conversions),
        fmt.money(k.revenue), fmt.money(k.cost), fmt.times(k.roas)]) tr.insertCell().textContent = text;
      shareCell(tr, share, 80);
    }
    // Chart: clicks per step of the biggest groups.
    const series = ((this.drill && this.drill.series) || []).slice();
    const clicksOf = (s) => s.points.reduce((n, p) => n + (p.values.clicks || 0), 0);
    series.sort((a, b) => clicksOf(b) - clicksOf(a));
    const top = series.slice(0, 8);
    const xsSet = new Set();
    for (const s of top) for (const p of s.points) xsSet.add(Date.parse(p.t) / 1000);
    const xs = [...xsSet].sort((a, b) => a - b);
    const ys = top.map((s) => {
      const m = new Map(s.points.map((p) => [Date.parse(p.t) / 1000, p.values.clicks]));
      return xs.map((x) => m.get(x) ?? null);
    });
    this.charts.drill.set(top.map((s, i) => ({ label: s.key || "(none)", fmt: fmt.count, color: COLORS[i % COLORS.length] })), [xs, ...ys]);
    const b = $("bots");
    if (this.bots && this.bots.by_reason) {
      const reasons = Object.entries(this.bots.by_reason).sort((x, y) => y[1] - x[1]).map(([r, n]) => `${r} ${fmt.count(n)}`).join(" · ");
      b.innerHTML = "";
      b.append("Bots: ");
      const strong = document.createElement("b");
      strong.textContent = fmt.pct(this.bots.share);
      b.append(strong, ` of events (${fmt.count(this.bots.total)} filtered${reasons ? ": " + reasons : ""})`);
    } else {
      b.textContent = "";
    }
    this.renderPolls();
  }

  /** renderPolls shows the selected campaign's polls: votes per answer. */
  renderPolls() {
    const box = $("polls");
    const polls = (this.polls && this.polls.polls) || [];
    box.hidden = polls.length === 0;
    box.textContent = "";
    for (const p of polls) {
      const h = document.createElement("h3");
      h.textContent = `Poll: ${p.poll}`;
      const votes = document.createElement("span");
      votes.className = "muted";
      votes.textContent = ` ${fmt.count(p.total)} votes`;
      h.append(votes);
      const wrap = document.createElement("div");
      wrap.className = "table-wrap";
      const table = document.createElement("table");
      table.className = "grid poll";
      table.dataset.poll = p.poll;
      const tbody = table.createTBody();
      for (const a of p.answers) {
        const tr = tbody.insertRow();
        tr.dataset.answer = a.answer;
        tr.insertCell().textContent = a.answer;
        tr.insertCell().textContent = fmt.count(a.votes);
        shareCell(tr, a.share, 160);
      }
      wrap.append(table);
      box.append(h, wrap);
    }
  }
}

/** shareCell appends a cell with a bar of up to width px and the share in %. */
function shareCell(tr, share, width) {
  const cell = tr.insertCell();
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.style.width = `${Math.round(share * width)}px`;
  cell.append(bar, fmt.pct(share));
}

// ---- signing in and out ----

let session = null;

function showSignIn(message) {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("token-input").value = "";
  $("token-input").focus();
}

async function signIn(token, remember) {
  const client = new Client(token);
  let who;
  try {
    who = await client.get("whoami");
  } catch (e) {
    if (e.status === 401) {
      clearToken();
      return showSignIn("That token was not accepted. Check it and try again.");
    }
    return showSignIn(e.status === 0 ? "Cannot reach the Tally node. Try again in a moment." : `Sign-in failed: ${e.message}`);
  }
  if (remember !== null) saveToken(token, remember);
  $("signin").hidden = true;
  session = new Dashboard(client, who, signOut);
  session.start();
}

function signOut(message) {
  if (session) session.stop();
  session = null;
  clearToken();
  showSignIn(message);
}

async function boot() {
  $("boot").hidden = true;
  takeTokenFromURL();
  const link = takeLinkFromURL();
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token-input").value.trim();
    if (token) signIn(token, $("remember").checked);
  });
  // A sign-in link carries a link token that opens one session; the
  // session token is kept for this tab only.
  if (link) {
    try {
      saveToken((await exchangeLink(link)).token, false);
    } catch (e) {
      return showSignIn(e.status === 401 ? "This sign-in link has expired or was used already. Ask for a new one, or paste a token."
        : e.status === 0 ? "Cannot reach the Tally node. Try again in a moment." : `Sign-in failed: ${e.message}`);
    }
  }
  const token = loadToken();
  if (token) signIn(token, null);
  else showSignIn("");
}

boot();

/**
 * markProvisional flags a tile whose figure includes live counters that
 * no flush has confirmed yet: the label says "provisional" (styles.css)
 * and the value's title explains it.
 */
function markProvisional(tile, on) {
  if (on) {
    tile.el.dataset.provisional = "1";
    tile.value.title = `${tile.value.title} (provisional: live counts, confirmed at the agents' next flush)`;
  } else {
    delete tile.el.dataset.provisional;
  }
}
