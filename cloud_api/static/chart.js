// A small SVG line chart for temperature series: the readings (or the mean with its
// min-max range when downsampled), the profile's band between its low and high limits,
// dashed limit lines, critical limit lines, a time axis and a hover read-out.
// No dependencies; everything is drawn from plain numbers.

const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched
const MARGIN = { top: 12, right: 10, bottom: 26, left: 46 };
const MINUTE = 60_000;
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map(
  (m) => m * MINUTE,
);
let clipIds = 0;

function el(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const finite = (value) => typeof value === "number" && Number.isFinite(value);
const round = (value) => Math.round(value * 10) / 10;

/** Readings as {t, v, lo, hi}, oldest first, without unusable points. */
export function prepare(points) {
  return points
    .map((p) => ({
      t: Date.parse(p.ts),
      v: p.celsius,
      lo: finite(p.min) ? p.min : null,
      hi: finite(p.max) ? p.max : null,
    }))
    .filter((p) => finite(p.t) && finite(p.v))
    .sort((a, b) => a.t - b.t);
}

/** At most ``buckets`` points: one per time slice, the mean with the slice's min and max. */
export function thin(series, buckets, t0, t1) {
  if (series.length <= buckets * 2) return series;
  const width = (t1 - t0) / buckets;
  const out = [];
  let current = null;
  for (const p of series) {
    const slot = Math.floor((p.t - t0) / width);
    if (!current || current.slot !== slot) {
      current = { slot, t: p.t, sum: 0, n: 0, lo: Infinity, hi: -Infinity };
      out.push(current);
    }
    current.sum += p.v;
    current.n += 1;
    current.lo = Math.min(current.lo, p.lo ?? p.v);
    current.hi = Math.max(current.hi, p.hi ?? p.v);
  }
  return out.map((b) => ({ t: b.t, v: b.sum / b.n, lo: b.lo, hi: b.hi }));
}

/** Round tick values spanning [low, high], about ``count`` of them. */
export function niceTicks(low, high, count = 5) {
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step)
    ticks.push(round(v * 100) / 100);
  return { ticks, step };
}

/** Time ticks on local-time boundaries; about one per ``spacing`` pixels. */
function timeTicks(t0, t1, plotWidth, spacing = 110) {
  const wanted = Math.max(2, plotWidth / spacing);
  const step = TIME_STEPS.find((s) => (t1 - t0) / s <= wanted) || TIME_STEPS[TIME_STEPS.length - 1];
  const offset = -new Date(t0).getTimezoneOffset() * MINUTE;
  const ticks = [];
  for (let t = Math.ceil((t0 + offset) / step) * step - offset; t <= t1; t += step) ticks.push(t);
  return { ticks, step };
}

function timeLabel(t, step) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  if (step >= 1440 * MINUTE || (d.getHours() === 0 && d.getMinutes() === 0)) return day;
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Largest gap between readings drawn as a continuous line: 3 × the median interval. */
function gapLimit(series) {
  if (series.length < 3) return Infinity;
  const steps = [];
  for (let i = 1; i < series.length; i += 1) steps.push(series[i].t - series[i - 1].t);
  steps.sort((a, b) => a - b);
  return Math.max(steps[Math.floor(steps.length / 2)] * 3, MINUTE);
}

function pathOf(series, x, y, gap) {
  let d = "";
  series.forEach((p, i) => {
    const command = i === 0 || p.t - series[i - 1].t > gap ? "M" : "L";
    d += `${command}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
  });
  return d;
}

function rangePath(series, x, y) {
  const ranged = series.filter((p) => p.lo !== null && p.hi !== null);
  if (ranged.length < 2) return "";
  const top = ranged
    .map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.hi).toFixed(1)}`)
    .join("");
  const bottom = ranged
    .slice()
    .reverse()
    .map((p) => `L${x(p.t).toFixed(1)},${y(p.lo).toFixed(1)}`)
    .join("");
  return `${top}${bottom}Z`;
}

/**
 * The chart as an <svg> element.
 * options: { width, height?, points: [{ts, celsius, min, max}], profile: {low_c, high_c,
 * critical_low_c, critical_high_c} | null, start?, end? (ms), title, formatValue(v),
 * formatTime(ms), texts: { low, high, criticalLow, criticalHigh } }
 */
export function drawChart(options) {
  const width = Math.max(280, Math.round(options.width || 640));
  const height = options.height || Math.round(Math.min(380, Math.max(220, width * 0.42)));
  const plot = {
    left: MARGIN.left,
    top: MARGIN.top,
    right: width - MARGIN.right,
    bottom: height - MARGIN.bottom,
  };
  const plotWidth = plot.right - plot.left;
  const profile = options.profile || {};
  const texts = options.texts || {};
  const formatValue = options.formatValue || ((v) => `${round(v)} °C`);
  const formatTime = options.formatTime || ((t) => new Date(t).toISOString());

  let series = prepare(options.points || []);
  let t0 = options.start ?? (series.length ? series[0].t : Date.now());
  let t1 = options.end ?? (series.length ? series[series.length - 1].t : Date.now());
  if (t1 <= t0) {
    t0 -= 30 * MINUTE;
    t1 += 30 * MINUTE;
  }
  const gap = gapLimit(series);
  series = thin(series, Math.floor(plotWidth), t0, t1);

  const limits = [
    profile.critical_low_c,
    profile.low_c,
    profile.high_c,
    profile.critical_high_c,
  ].filter(finite);
  const values = series
    .flatMap((p) => [p.v, p.lo, p.hi])
    .filter(finite)
    .concat(limits);
  let low = values.length ? Math.min(...values) : 0;
  let high = values.length ? Math.max(...values) : 10;
  const pad = Math.max((high - low) * 0.08, 0.5);
  low -= pad;
  high += pad;
  const yTicks = niceTicks(low, high, Math.max(3, Math.round((plot.bottom - plot.top) / 50)));
  low = Math.min(low, yTicks.ticks[0]);
  high = Math.max(high, yTicks.ticks[yTicks.ticks.length - 1]);

  const x = (t) => plot.left + ((t - t0) / (t1 - t0)) * plotWidth;
  const y = (v) => plot.bottom - ((v - low) / (high - low)) * (plot.bottom - plot.top);

  const clipId = `chart-clip-${(clipIds += 1)}`;
  const root = el("svg", {
    class: "chart",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": options.title || "",
  });
  root.append(
    el(
      "defs",
      {},
      el(
        "clipPath",
        { id: clipId },
        el("rect", { x: plot.left, y: plot.top, width: plotWidth, height: plot.bottom - plot.top }),
      ),
    ),
    el("rect", {
      class: "plot-bg",
      x: plot.left,
      y: plot.top,
      width: plotWidth,
      height: plot.bottom - plot.top,
    }),
  );

  if (finite(profile.low_c) || finite(profile.high_c)) {
    const top = y(finite(profile.high_c) ? profile.high_c : high);
    const bottom = y(finite(profile.low_c) ? profile.low_c : low);
    root.append(
      el("rect", {
        class: "limit-band",
        x: plot.left,
        y: top,
        width: plotWidth,
        height: Math.max(0, bottom - top),
      }),
    );
  }

  const grid = el("g", { class: "grid" });
  const axis = el("g", { class: "axis" });
  for (const v of yTicks.ticks) {
    grid.append(el("line", { x1: plot.left, x2: plot.right, y1: y(v), y2: y(v) }));
    axis.append(
      el(
        "text",
        { x: plot.left - 6, y: y(v), "text-anchor": "end", "dominant-baseline": "middle" },
        String(v),
      ),
    );
  }
  const xTicks = timeTicks(t0, t1, plotWidth);
  for (const t of xTicks.ticks) {
    grid.append(el("line", { x1: x(t), x2: x(t), y1: plot.top, y2: plot.bottom }));
    axis.append(
      el(
        "text",
        { x: x(t), y: plot.bottom + 16, "text-anchor": "middle" },
        timeLabel(t, xTicks.step),
      ),
    );
  }
  axis.append(el("text", { x: 4, y: plot.top - 2, class: "unit" }, "°C"));
  root.append(grid, axis);

  const lines = [
    ["critical_low_c", "limit-critical limit-critical-low", texts.criticalLow],
    ["low_c", "limit-low", texts.low],
    ["high_c", "limit-high", texts.high],
    ["critical_high_c", "limit-critical limit-critical-high", texts.criticalHigh],
  ];
  for (const [key, cls, name] of lines) {
    const value = profile[key];
    if (!finite(value)) continue;
    root.append(
      el("line", {
        class: `limit-line ${cls}`,
        x1: plot.left,
        x2: plot.right,
        y1: y(value),
        y2: y(value),
        "data-value": value,
      }),
      el(
        "text",
        { class: `limit-label ${cls}`, x: plot.left + 4, y: y(value) - 4 },
        `${name || key} ${formatValue(value)}`,
      ),
    );
  }

  const data = el("g", { "clip-path": `url(#${clipId})` });
  const range = rangePath(series, x, y);
  if (range) data.append(el("path", { class: "series-range", d: range }));
  data.append(
    el("path", {
      class: "series-line",
      d: pathOf(series, x, y, Math.max(gap, ((t1 - t0) / plotWidth) * 2)),
    }),
  );
  const outside = series.filter(
    (p) =>
      (finite(profile.high_c) && p.v > profile.high_c) ||
      (finite(profile.low_c) && p.v < profile.low_c),
  );
  if (series.length <= 400 || outside.length <= 400) {
    for (const p of series.length <= 120 ? series : outside) {
      const out = outside.includes(p);
      data.append(
        el("circle", {
          class: out ? "series-point series-out" : "series-point",
          cx: x(p.t),
          cy: y(p.v),
          r: out ? 3 : 2,
        }),
      );
    }
  }
  root.append(data);
  root.append(hover(series, { x, y, plot, formatValue, formatTime, width }));
  return root;
}

/** A vertical cursor with the nearest reading's time and value. */
function hover(series, { x, y, plot, formatValue, formatTime, width }) {
  const cursor = el("line", { class: "cursor", y1: plot.top, y2: plot.bottom });
  const dot = el("circle", { class: "cursor-dot", r: 4 });
  const text = el("text", { class: "cursor-text" });
  const box = el("rect", { class: "cursor-box", rx: 3 });
  const group = el("g", { class: "hover", visibility: "hidden" }, cursor, dot, box, text);
  const hit = el("rect", {
    class: "hit",
    x: plot.left,
    y: plot.top,
    width: plot.right - plot.left,
    height: plot.bottom - plot.top,
  });
  const layer = el("g", {}, group, hit);
  if (!series.length) return layer;
  hit.addEventListener("pointermove", (event) => {
    const svg = hit.ownerSVGElement;
    const bounds = svg.getBoundingClientRect();
    const px = ((event.clientX - bounds.left) * width) / bounds.width;
    const wanted = invert(px, x, series);
    let lo = 0;
    let hi = series.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (series[mid].t < wanted) lo = mid;
      else hi = mid;
    }
    const p =
      Math.abs(series[lo].t - wanted) <= Math.abs(series[hi].t - wanted) ? series[lo] : series[hi];
    const cx = x(p.t);
    const cy = y(p.v);
    cursor.setAttribute("x1", cx);
    cursor.setAttribute("x2", cx);
    dot.setAttribute("cx", cx);
    dot.setAttribute("cy", cy);
    text.textContent = `${formatTime(p.t)} · ${formatValue(p.v)}`;
    group.setAttribute("visibility", "visible");
    const length = text.getComputedTextLength();
    const left = cx + 10 + length + 8 > plot.right ? cx - 10 - length - 8 : cx + 10;
    const top = Math.max(plot.top + 4, Math.min(cy - 24, plot.bottom - 24));
    text.setAttribute("x", left + 4);
    text.setAttribute("y", top + 14);
    box.setAttribute("x", left);
    box.setAttribute("y", top);
    box.setAttribute("width", length + 8);
    box.setAttribute("height", 20);
  });
  hit.addEventListener("pointerleave", () => group.setAttribute("visibility", "hidden"));
  return layer;
}

/** The time under pixel ``px`` (the inverse of ``x``, from two known points). */
function invert(px, x, series) {
  const a = series[0].t;
  const b = series[series.length - 1].t;
  if (a === b) return a;
  return a + ((px - x(a)) / (x(b) - x(a))) * (b - a);
}
