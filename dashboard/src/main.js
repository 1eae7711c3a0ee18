// Tally's dashboard: sign-in, KPI tiles, charts, breakdown, campaign
// table and the live stream. All data comes from /api/v1 with the
// signed-in token; rendering is batched into animation frames and
// touches only what changed.

import "uplot/dist/uPlot.min.css";
import "./styles.css";
import { Client, HTTPError, takeTokenFromURL, takeLinkFromURL, exchangeLink, saveToken, loadToken, clearToken, filenameOf } from "./api.js";
import { EventStream } from "./sse.js";
import { TILES, fmt, emptyKPIs, addCounters, withRatios, change, botShare } from "./kpi.js";
import { LiveStore } from "./store.js";
import { LineChart } from "./charts.js";

const $ = (id) => document.getElementById(id);

/** RANGES are the time-range choices: REST window, chart step, refresh period. */
const RANGES = {
  live: { window: "60m", step: "1m", stepText: "per minute", text: "the last 60 minutes, live", refreshMs: 10000 },
  "1h": { window: "1h", step: "1m", stepText: "per minute", text: "the last hour", refreshMs: 30000 },
  "24h": { window: "24h", step: "15m", stepText: "per 15 minutes", text: "the last 24 hours", refreshMs: 60000 },
  "7d": { window: "7d", step: "1h", stepText: "per hour", text: "the last 7 days", refreshMs: 120000 },
};
const RETRY_MS = 5000;
const DIM_NAMES = { source: "Source", medium: "Medium", region: "Region", country: "Country", device: "Device" };
const TABLE_COLS = [
  ["impressions", fmt.count], ["clicks", fmt.count], ["ctr", fmt.pct], ["conversions", fmt.count], ["cvr", fmt.pct],
  ["revenue", fmt.money], ["cost", fmt.money], ["cpa", fmt.money], ["roas", fmt.times],
];
const TRAFFIC = [["impressions", "Impressions", fmt.count], ["clicks", "Clicks", fmt.count], ["conversions", "Conversions", fmt.count]];
const MONEY = [["revenue", "Revenue", fmt.money], ["cost", "Cost", fmt.money]];
const SERIES_METRICS = ["impressions", "clicks", "conversions", "pageviews", "revenue", "cost", "bots_filtered"];

// tallyStats counts renders for anyone curious (the browser tests read it).
const stats = (window.tallyStats = { renders: 0, renderMsMax: 0, renderMsTotal: 0, streamMessages: 0, lastEventId: "" });

const time = (d) => d.toLocaleTimeString("en-GB");
const setText = (el, text) => {
  if (el.textContent !== text) el.textContent = text;
};

/** Dashboard is one signed-in session; stop() tears it down. */
class Dashboard {
  constructor(client, who, onSignOut) {
    this.client = client;
    this.who = who;
    this.onSignOut = onSignOut;
    this.range = "live";
    this.campaign = "";
    this.dim = "source";
    this.sort = { key: "clicks", dir: -1 };
    this.filter = "";
    this.rest = new Map(); // campaign -> {kpis, previous}
    this.restTotal = null; // every campaign together (uniques merged) from REST
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
    this.dirty = { tiles: true, table: new Set(), tableAll: true, charts: true, drill: true, status: true, options: true };
    this.raf = 0;
    this.listeners = [];
  }

  start() {
    $("app").hidden = false;
    const who = this.who;
    $("whoami").textContent = `${who.subject} · ${who.role}`;
    $("scope").textContent = !who.campaigns ? "" : who.campaigns.length
      ? `Signed in as a viewer of: ${who.campaigns.join(", ")}.`
      : "Signed in as a viewer of no campaign yet: ask an administrator for access.";
    // The controls start where this session's state does (a previous
    // session may have left them elsewhere).
    for (const b of $("range").children) b.classList.toggle("on", b.dataset.range === this.range);
    for (const b of $("dims").children) b.classList.toggle("on", b.dataset.dim === this.dim);
    this.buildTiles();
    this.charts = { traffic: new LineChart($("chart-traffic")), money: new LineChart($("chart-money")), drill: new LineChart($("chart-drill"), 200) };
    this.on($("range"), "click", (e) => {
      const r = e.target.dataset.range;
      if (r && r !== this.range) this.setRange(r);
    });
    this.on($("dims"), "click", (e) => {
      const d = e.target.dataset.dim;
      if (d && d !== this.dim) {
        this.dim = d;
        for (const b of $("dims").children) b.classList.toggle("on", b.dataset.dim === d);
        this.drill = null;
        this.dirty.drill = true;
        this.schedule();
        this.refreshDrill(this.gen);
      }
    });
    this.on($("campaign"), "change", () => this.select($("campaign").value));
    this.on($("filter"), "input", () => {
      this.filter = $("filter").value.trim().toLowerCase();
      this.dirty.tableAll = true;
      this.schedule();
    });
    this.on($("campaigns").tHead, "click", (e) => {
      const key = e.target.dataset.sort;
      if (!key) return;
      this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : key === "campaign" ? 1 : -1 };
      this.dirty.tableAll = true;
      this.schedule();
    });
    this.on($("campaigns").tBodies[0], "click", (e) => {
      const tr = e.target.closest("tr");
      if (tr) this.select(tr.dataset.campaign === this.campaign ? "" : tr.dataset.campaign);
    });
    this.on($("export"), "click", () => this.exportCSV());
    this.on($("signout"), "click", () => this.onSignOut(""));
    this.on(window, "resize", () => Object.values(this.charts).forEach((c) => c.resize()));

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
    this.refresh();
  }

  stop() {
    this.stopped = true;
    this.stream.client.stop();
    this.abort.abort();
    clearTimeout(this.refreshTimer);
    for (const t of this.timers) clearInterval(t);
    for (const [el, ev, fn] of this.listeners) el.removeEventListener(ev, fn);
    if (this.raf) cancelAnimationFrame(this.raf);
    Object.values(this.charts).forEach((c) => c.destroy());
    $("tiles").textContent = "";
    $("campaigns").tBodies[0].textContent = "";
    $("drill-table").tBodies[0].textContent = "";
    $("campaign").length = 1;
    $("filter").value = "";
    $("banner").hidden = true;
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

  // ---- data ----

  setRange(r) {
    this.range = r;
    for (const b of $("range").children) b.classList.toggle("on", b.dataset.range === r);
    this.history = null;
    this.drill = null;
    this.bots = null;
    this.polls = null;
    Object.assign(this.dirty, { tiles: true, tableAll: true, charts: true, drill: true, status: true });
    this.schedule();
    this.refresh();
  }

  select(c) {
    this.campaign = c;
    $("campaign").value = c;
    this.history = null;
    this.drill = null;
    this.bots = null;
    this.polls = null;
    Object.assign(this.dirty, { tiles: true, tableAll: true, charts: true, drill: true });
    this.schedule();
    this.refresh();
  }

  /** refresh reloads everything REST serves for the current view, then re-arms itself. */
  async refresh() {
    const gen = ++this.gen;
    clearTimeout(this.refreshTimer);
    this.roundFailed = false;
    // In the live view the series fill the minutes the stream has not
    // delivered (before the page opened, or while it was down).
    const jobs = [this.refreshCampaigns(gen), this.refreshDrill(gen), this.refreshHistory(gen)];
    await Promise.all(jobs);
    if (gen !== this.gen || this.stopped) return;
    this.refreshedAt = new Date();
    this.dirty.status = true;
    this.schedule();
    // A request that failed while others of the round got through (a
    // dropped connection) is retried as soon as a dead node would be.
    const failed = this.nodeError || this.roundFailed;
    this.refreshTimer = setTimeout(() => this.refresh(), failed ? RETRY_MS : RANGES[this.range].refreshMs);
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
      } else if (onError) {
        onError(e);
      }
      return null;
    }
  }

  async refreshCampaigns(gen) {
    const body = await this.call(gen, "campaigns", { window: RANGES[this.range].window });
    if (!body) return;
    this.restTotal = body.total || null;
    const seen = new Set();
    for (const c of body.campaigns || []) {
      seen.add(c.campaign);
      const old = this.rest.get(c.campaign);
      if (!old || JSON.stringify(old) !== JSON.stringify(c)) {
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
    this.dirty.tiles = true;
    this.schedule();
  }

  async refreshHistory(gen) {
    const r = RANGES[this.range];
    const body = await this.call(gen, "series", { campaign: this.campaign, metric: SERIES_METRICS.join(","), step: r.step, window: r.window },
      (e) => (this.history = { error: e.message }));
    if (body) {
      const pts = (body.series[0] && body.series[0].points) || [];
      this.history = [pts.map((p) => Date.parse(p.t) / 1000), ...SERIES_METRICS.map((m) => pts.map((p) => p.values[m] ?? null))];
    }
    this.dirty.charts = true;
    this.schedule();
  }

  /** refreshDrill loads the breakdown by the chosen dimension, and the bot share. */
  async refreshDrill(gen) {
    const r = RANGES[this.range];
    const dim = this.dim;
    const onError = (e) => (this.drill = { error: e.message });
    const jobs = [];
    if (this.campaign) {
      const c = this.campaign;
      jobs.push(this.call(gen, "kpis", { campaign: c, window: r.window, by: dim }, onError));
      jobs.push(this.call(gen, "series", { campaign: c, metric: "clicks", step: r.step, window: r.window, by: dim }, onError));
      jobs.push(this.call(gen, "bots", { campaign: c, window: r.window }));
      jobs.push(this.call(gen, "polls", { campaign: c, window: r.window }));
    } else {
      // No kpis?by= across campaigns: add up the series per group instead.
      jobs.push(this.call(gen, "series", { metric: SERIES_METRICS.join(","), step: r.step, window: r.window, by: dim }, onError));
    }
    const [a, b, bots, polls] = await Promise.all(jobs);
    if (dim !== this.dim || gen !== this.gen) return; // a newer view owns the panel
    if (this.campaign && a && b) {
      this.drill = { dim, groups: a.groups.map((g) => ({ key: g.key, kpis: g.kpis })), series: b.series };
      this.bots = bots;
      this.polls = polls;
    } else if (!this.campaign && a) {
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
    let changed;
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
    if (ev.type !== "snapshot" && ev.type !== "minutes") return;
    let body;
    try {
      body = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    changed = ev.type === "snapshot" ? this.live.reset(body.updates) : this.live.apply(body.updates);
    for (const c of changed) {
      this.dirty.table.add(c);
      if (!this.rows.has(c) && !this.rest.has(c)) this.dirty.options = true;
    }
    this.stream.last = new Date();
    if (this.range === "live") {
      this.dirty.tiles = this.dirty.charts = true;
    }
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
    if (this.range === "live" && this.stream.state === "live" && this.live.campaigns.has(c)) {
      const k = this.live.totals(c);
      // Uniques do not add up across minutes: they come merged from REST.
      k.uniques = r ? r.kpis.uniques : 0;
      return k;
    }
    return r ? r.kpis : emptyKPIs();
  }

  campaignNames() {
    const names = new Set(this.rest.keys());
    for (const c of this.live.campaigns.keys()) names.add(c);
    return [...names].sort();
  }

  async exportCSV() {
    if (!this.campaign) return;
    const r = RANGES[this.range];
    const btn = $("export");
    btn.disabled = true;
    try {
      const resp = await this.client.fetch("export.csv", { campaign: this.campaign, step: r.step, window: r.window }, this.abort.signal);
      const blob = await resp.blob();
      const name = filenameOf(resp.headers.get("Content-Disposition"), `tally-${this.campaign}.csv`);
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
      btn.disabled = !this.campaign;
    }
  }

  // ---- rendering (one pass per animation frame) ----

  render() {
    const d = this.dirty;
    if (d.options) this.renderOptions();
    if (d.status) this.renderStatus();
    if (d.tiles) this.renderTiles();
    if (d.tableAll || d.table.size) this.renderTable();
    if (d.charts) this.renderCharts();
    if (d.drill) this.renderDrill();
    this.dirty = { tiles: false, table: new Set(), tableAll: false, charts: false, drill: false, status: false, options: false };
  }

  renderOptions() {
    const sel = $("campaign");
    const names = this.campaignNames();
    const have = [...sel.options].slice(1).map((o) => o.value);
    if (have.join("\n") === names.join("\n")) return;
    sel.length = 1;
    for (const c of names) sel.add(new Option(c, c));
    sel.value = this.campaign;
  }

  renderStatus() {
    const st = $("status");
    const banner = $("banner");
    let text, cls, msg = "";
    const live = this.range === "live";
    if (this.nodeError) {
      text = "node down";
      cls = "down";
      msg = `Cannot reach the Tally node: ${this.nodeError}. Retrying every ${RETRY_MS / 1000} s` +
        (this.refreshedAt ? `; the figures below are from ${time(this.refreshedAt)}.` : ".");
    } else if (live && this.stream.state === "down") {
      text = "stream down";
      cls = "down";
      msg = `Live updates stopped: ${this.stream.error || "stream disconnected"}` +
        ` (since ${time(this.stream.since)}). Reconnecting… Meanwhile the figures are refreshed every ${RANGES.live.refreshMs / 1000} s` +
        (this.refreshedAt ? `, last at ${time(this.refreshedAt)}.` : ".");
    } else if (live) {
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
    exp.disabled = !this.campaign;
    exp.title = this.campaign ? `Download ${this.campaign}, ${RANGES[this.range].text}, as CSV` : "Choose a campaign to export";
  }

  buildTiles() {
    const box = $("tiles");
    box.textContent = "";
    this.tiles = {};
    for (const t of [...TILES, { key: "bots", label: "Bot share", help: "" }]) {
      const el = document.createElement("div");
      el.className = "tile";
      el.dataset.kpi = t.key;
      el.innerHTML = `<div class="label"></div><div class="value">–</div><div class="delta"></div><div class="help"></div>`;
      el.children[0].textContent = t.label;
      el.children[3].textContent = t.help;
      box.appendChild(el);
      this.tiles[t.key] = { value: el.children[1], delta: el.children[2], help: el.children[3] };
    }
  }

  renderTiles() {
    let cur, prev;
    if (this.campaign) {
      cur = this.campaignKPIs(this.campaign);
      const r = this.rest.get(this.campaign);
      prev = r && r.previous;
    } else {
      cur = emptyKPIs();
      prev = emptyKPIs();
      let havePrev = false;
      for (const c of this.campaignNames()) {
        addCounters(cur, this.campaignKPIs(c), true);
        const r = this.rest.get(c);
        if (r && r.previous) {
          addCounters(prev, r.previous, true);
          havePrev = true;
        }
      }
      withRatios(cur);
      prev = havePrev ? withRatios(prev) : null;
      // A visitor of two campaigns is one visitor: the API merges them.
      if (this.restTotal) {
        cur.uniques = this.restTotal.kpis.uniques;
        if (prev) prev.uniques = this.restTotal.previous.uniques;
      }
    }
    const known = this.rest.size > 0 || this.live.campaigns.size > 0;
    for (const t of TILES) {
      const tile = this.tiles[t.key];
      const v = cur[t.key];
      setText(tile.value, known ? t.fmt(v) : "–");
      tile.value.dataset.value = String(v);
      const ch = known ? change(v, prev ? prev[t.key] : null, t.better) : { text: "", cls: "" };
      setText(tile.delta, ch.text ? `${ch.text} vs previous ${RANGES[this.range].window}` : "");
      tile.delta.className = "delta " + ch.cls;
    }
    const b = this.tiles.bots;
    // One campaign: /bots, over every event type. All campaigns: the
    // share of the event types the KPIs count (there is no /bots total).
    let share = botShare(cur);
    let bots = cur.bots_filtered;
    let help = "of impressions, clicks, conversions and page views";
    if (this.campaign && this.bots) {
      share = this.bots.share;
      bots = this.bots.total;
      help = "of all events, left out of every figure";
    }
    setText(this.tiles.bots.help, help);
    setText(b.value, known ? fmt.pct(share) : "–");
    b.value.dataset.value = String(share);
    setText(b.delta, known ? `${fmt.count(bots)} bot events filtered` : "");
    b.delta.className = "delta flat";
    setText($("traffic-title"), `Traffic ${RANGES[this.range].stepText}`);
    setText($("money-title"), `Revenue and cost ${RANGES[this.range].stepText}`);
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
        cells[0].textContent = c;
        row = { tr, cells, k: null };
        this.rows.set(c, row);
        orderChanged = true;
      } else if (!all && !this.dirty.table.has(c)) {
        continue;
      }
      const k = this.campaignKPIs(c);
      row.k = k;
      TABLE_COLS.forEach(([key, f], i) => setText(row.cells[i + 1], f(k[key])));
      row.tr.classList.toggle("selected", c === this.campaign);
      orderChanged = orderChanged || this.sort.key !== "campaign";
    }
    const f = this.filter;
    let shown = 0;
    for (const [c, row] of this.rows) {
      const hide = f !== "" && !c.toLowerCase().includes(f);
      if (row.tr.hidden !== hide) row.tr.hidden = hide;
      if (!hide) shown++;
    }
    setText($("campaign-count"), f ? `(${shown} of ${this.rows.size})` : `(${this.rows.size})`);
    for (const th of $("campaigns").tHead.rows[0].cells) {
      th.classList.toggle("asc", th.dataset.sort === this.sort.key && this.sort.dir > 0);
      th.classList.toggle("desc", th.dataset.sort === this.sort.key && this.sort.dir < 0);
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
    if (this.range === "live") {
      const metrics = [...TRAFFIC, ...MONEY].map(([m]) => m);
      const { data: d, has } = this.live.series(this.campaign ? [this.campaign] : null, metrics, Date.now() / 1000);
      const h = this.history && !this.history.error ? this.history : null;
      if (this.stream.state !== "live") has.fill(false);
      if (h) {
        const at = new Map(h[0].map((x, i) => [x, i]));
        d[0].forEach((x, i) => {
          const j = at.get(x);
          if (has[i] || j === undefined) return;
          metrics.forEach((m, k) => (d[1 + k][i] = h[1 + SERIES_METRICS.indexOf(m)][j]));
        });
      }
      data = { xs: d[0], get: (m) => d[1 + metrics.indexOf(m)] };
    } else if (this.history && !this.history.error) {
      const h = this.history;
      data = { xs: h[0], get: (m) => h[1 + SERIES_METRICS.indexOf(m)] };
    } else {
      data = { xs: [], get: () => [] };
    }
    const draw = (chart, defs) => chart.set(defs.map((x) => x[1]), defs.map((x) => x[2]), [data.xs, ...defs.map(([m]) => data.get(m))]);
    draw(this.charts.traffic, TRAFFIC);
    draw(this.charts.money, MONEY);
  }

  renderDrill() {
    const name = DIM_NAMES[this.dim];
    setText($("drill-dim"), name);
    setText($("drill-title"), `Clicks by ${name.toLowerCase()} ${RANGES[this.range].stepText}`);
    const tbody = $("drill-table").tBodies[0];
    const err = $("drill-error");
    setText(err, this.drill && this.drill.error ? "Breakdown unavailable: " + this.drill.error : "");
    const groups = (this.drill && this.drill.groups) || [];
    const totalClicks = groups.reduce((s, g) => s + g.kpis.clicks, 0);
    tbody.textContent = "";
    for (const g of groups) {
      const k = g.kpis;
      const tr = tbody.insertRow();
      tr.dataset.key = g.key;
      const share = totalClicks ? k.clicks / totalClicks : 0;
      for (const text of [g.key || "(none)", fmt.count(k.impressions), fmt.count(k.clicks), fmt.pct(k.ctr), fmt.count(k.conversions),
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
    this.charts.drill.set(top.map((s) => s.key || "(none)"), top.map(() => fmt.count), [xs, ...ys]);
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
      box.append(h, table);
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
