// Thin wrappers around uPlot: one line chart per figure, resized with
// its container, fed whole data arrays.

import uPlot from "uplot";

export const COLORS = ["#2f6fde", "#e8833a", "#1b873f", "#8e44ad", "#c62828", "#00838f", "#6d4c41", "#7f8c8d"];

const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

/** LineChart is one uPlot chart whose series can be replaced. */
export class LineChart {
  constructor(el, height = 220) {
    this.el = el;
    this.height = height;
    this.plot = null;
    this.labels = "";
  }

  /**
   * set draws data ([xs in unix seconds, ...ys]) with one series per
   * label; fmts formats each series' values in the legend.
   */
  set(labels, fmts, data) {
    // How many points carry a value: for a glance in the inspector, and for
    // the browser tests.
    let n = 0;
    for (let i = 1; i < data.length; i++) for (const v of data[i]) if (v) n++;
    this.el.dataset.points = String(n);
    const sig = labels.join("\u0000");
    if (!this.plot || sig !== this.labels) {
      this.destroy();
      this.labels = sig;
      const opts = {
        width: Math.max(this.el.clientWidth, 300),
        height: this.height,
        scales: { x: { time: true } },
        series: [{}, ...labels.map((label, i) => ({
          label, stroke: COLORS[i % COLORS.length], width: 2, points: { show: false },
          value: (u, v) => (v == null ? "–" : fmts[i](v)),
        }))],
        axes: [{}, { size: 56, values: (u, vals) => vals.map((v) => compact.format(v)) }],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      };
      this.plot = new uPlot(opts, data, this.el);
      return;
    }
    this.plot.setData(data);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(this.el.clientWidth, 300), height: this.height });
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.labels = "";
    this.el.textContent = "";
  }
}
