// Thin wrappers around uPlot: one line chart per figure, as wide as its
// container (a ResizeObserver follows it), fed whole data arrays.

import uPlot from "uplot";

// Okabe–Ito's colour-blind-safe palette (darkened where a line needs
// contrast on white), so series stay apart for every reader; the legend
// names each one, so colour is never the only key.
export const COLORS = ["#0060b0", "#c25400", "#007a5a", "#9c4a8b", "#5a4fcf", "#8a6d00", "#3b6e8f", "#6b6b6b"];

const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

// A chart never gets narrower than this (its axes need the room); its
// container scrolls if it must.
const MIN_WIDTH = 200;

/** LineChart is one uPlot chart whose series can be replaced. */
export class LineChart {
  constructor(el, height = 220) {
    this.el = el;
    this.height = height;
    this.plot = null;
    this.sig = "";
    this.width = 0;
    this.markers = [];
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(el);
  }

  /**
   * set draws data ([xs in unix seconds, ...ys]) with one series per spec
   * {label, fmt, color, dash}: fmt formats the legend's values, dash (a
   * dash pattern) marks a comparison line.
   */
  set(specs, data) {
    // How many points carry a value: for a glance in the inspector, and for
    // the browser tests.
    let n = 0;
    for (let i = 1; i < data.length; i++) for (const v of data[i]) if (v) n++;
    this.el.dataset.points = String(n);
    const sig = JSON.stringify(specs.map((s) => [s.label, s.color, s.dash]));
    if (!this.plot || sig !== this.sig) {
      this.destroy();
      this.sig = sig;
      this.width = this.fitWidth();
      const opts = {
        width: this.width,
        height: this.height,
        scales: { x: { time: true } },
        series: [{}, ...specs.map((s, i) => ({
          label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: s.dash ? 1.5 : 2, dash: s.dash, points: { show: false },
          value: (u, v) => (v == null ? "–" : s.fmt(v)),
        }))],
        axes: [{}, { size: 56, values: (u, vals) => vals.map((v) => compact.format(v)) }],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
        hooks: { draw: [(u) => this.drawMarkers(u)] },
      };
      this.plot = new uPlot(opts, data, this.el);
      this.el.dataset.series = String(specs.length);
      return;
    }
    this.plot.setData(data);
  }

  /**
   * setMarkers draws a dashed vertical line at each marker {t (unix
   * seconds), color, label} within the chart's time axis: where alerts
   * started.
   */
  setMarkers(ms) {
    const sig = JSON.stringify(ms);
    if (sig === JSON.stringify(this.markers)) return;
    this.markers = ms;
    this.el.dataset.markers = String(ms.length);
    this.el.title = ms.map((m) => m.label).join("\n");
    if (this.plot) this.plot.redraw(false, false);
  }

  drawMarkers(u) {
    if (this.markers.length === 0) return;
    const { ctx } = u;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
    for (const m of this.markers) {
      const x = u.valToPos(m.t, "x", true);
      if (!(x >= left && x <= left + width)) continue;
      ctx.strokeStyle = m.color;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
    }
    ctx.restore();
  }

  fitWidth() {
    return Math.max(Math.floor(this.el.clientWidth), MIN_WIDTH);
  }

  resize() {
    if (!this.plot) return;
    const w = this.fitWidth();
    if (w === this.width) return;
    this.width = w;
    this.plot.setSize({ width: w, height: this.height });
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.sig = "";
    this.el.textContent = "";
  }

  /** close stops following the container's size and removes the chart. */
  close() {
    this.resizer.disconnect();
    this.destroy();
  }
}
