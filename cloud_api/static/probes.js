// The temperature chart of one probe, with its profile's limits.

import { ApiError, api } from "./api.js";
import { drawChart } from "./chart.js";
import { t } from "./i18n.js";
import {
  fill,
  formatCelsius,
  formatNumber,
  formatTime,
  h,
  note,
  pairs,
  problemText,
} from "./dom.js";

const HOUR = 3600 * 1000;

/** Downsampling asked of the API per range (hours → every); raw readings below a day. */
function everyFor(hours) {
  if (hours <= 24) return null;
  return hours <= 24 * 7 ? "5m" : "1h";
}

/** "2026-11-25T08:30" for a datetime-local input, in the browser's time zone. */
function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export class ChartView {
  constructor(ctx) {
    this.ctx = ctx;
    this.series = null;
    this.range = null;
    this.request = 0;
  }

  init() {
    this.body = document.getElementById("chart-body");
    this.probe = document.getElementById("chart-probe");
    this.hours = document.getElementById("chart-range");
    this.until = document.getElementById("chart-until");
    document.getElementById("chart-form").addEventListener("submit", (e) => e.preventDefault());
    for (const input of [this.probe, this.hours, this.until]) {
      input.addEventListener("change", () => this.navigate());
    }
    this.resize = new ResizeObserver(() => this.drawOnly());
    this.resize.observe(this.body);
  }

  probes() {
    const found = [];
    for (const station of this.ctx.stations) {
      for (const device of station.devices) {
        for (const probe of device.probes) found.push({ station, device: device.id, probe });
      }
    }
    return found;
  }

  fillProbes(selected) {
    const groups = new Map();
    for (const p of this.probes()) {
      if (!groups.has(p.station.id))
        groups.set(p.station.id, h("optgroup", { label: p.station.name }));
      const value = `${p.station.id}/${p.device}/${p.probe}`;
      groups
        .get(p.station.id)
        .append(h("option", { value, selected: value === selected }, `${p.device} · ${p.probe}`));
    }
    fill(this.probe, [...groups.values()]);
    if (selected && this.probe.value !== selected) {
      const [, device, probe] = selected.split("/");
      this.probe.append(h("option", { value: selected, selected: true }, `${device} · ${probe}`));
    }
  }

  navigate() {
    const [station, device, probe] = this.probe.value.split("/");
    this.ctx.navigate("chart", {
      station,
      device,
      probe,
      hours: this.hours.value,
      until: this.until.value,
    });
  }

  show(params) {
    const first = this.probes()[0];
    let selected = "";
    if (params.station && params.device && params.probe)
      selected = `${params.station}/${params.device}/${params.probe}`;
    else if (first) selected = `${first.station.id}/${first.device}/${first.probe}`;
    this.fillProbes(selected);
    const hours = Number(params.hours) || 24;
    this.hours.value = String(hours);
    if (params.around) {
      const end = Math.min(Date.now(), Date.parse(params.around) + hours * HOUR * 0.25);
      this.until.value = end < Date.now() - 60_000 ? localInput(new Date(end)) : "";
    } else this.until.value = params.until || "";
    if (!selected) {
      this.series = null;
      fill(this.body, note(t("chart.no_probes")));
      return;
    }
    this.load(selected, hours);
  }

  async load(selected, hours) {
    const [station, device, probe] = selected.split("/");
    const end = this.until.value ? new Date(this.until.value) : new Date();
    const start = new Date(end.getTime() - hours * HOUR);
    const path = `/probes/${encodeURIComponent(station)}/${encodeURIComponent(device)}/${encodeURIComponent(probe)}/temperature`;
    const params = { start: start.toISOString(), end: end.toISOString() };
    const every = everyFor(hours);
    const request = ++this.request;
    fill(this.body, note(t("common.loading"), "loading"));
    let series;
    try {
      try {
        series = await api(path, { params: { ...params, every } });
      } catch (problem) {
        // Downsampling needs the store's bucket query; raw readings are drawn (thinned
        // by the chart) when the API cannot do it.
        if (!every || !(problem instanceof ApiError) || problem.status < 500) throw problem;
        series = await api(path, { params });
      }
    } catch (problem) {
      if (request !== this.request || problem.status === 401) return;
      this.series = null;
      fill(
        this.body,
        note(problem.status === 404 ? t("chart.no_probe") : problemText(problem), "error"),
      );
      return;
    }
    if (request !== this.request) return;
    this.series = series;
    this.range = { start, end };
    this.render();
  }

  render() {
    if (!this.body || !this.series) return;
    const s = this.series;
    const station = this.ctx.stationName(s.station);
    const count = s.points.length;
    const last = s.points[count - 1];
    const low = s.points.reduce((m, p) => Math.min(m, p.min ?? p.celsius), Infinity);
    const high = s.points.reduce((m, p) => Math.max(m, p.max ?? p.celsius), -Infinity);
    const summary = pairs([
      [t("chart.profile"), this.profileText(s.profile)],
      [t("chart.last"), last ? `${formatCelsius(last.celsius)} (${formatTime(last.ts)})` : "—"],
      [t("chart.min"), count ? formatCelsius(low) : "—"],
      [t("chart.max"), count ? formatCelsius(high) : "—"],
      [
        t("chart.points"),
        `${formatNumber(count, 0)}${s.every ? ` (${t("chart.every", { every: s.every })})` : ""}`,
      ],
    ]);
    this.chartBox = h("div", { class: "chart-box", id: "chart-box" });
    fill(
      this.body,
      h("h3", { class: "chart-title" }, `${station} · ${s.device} · ${s.probe}`),
      summary,
      s.points.length ? this.chartBox : note(t("chart.empty")),
      s.points.length ? this.legend(s.profile) : null,
    );
    this.drawOnly();
  }

  drawOnly() {
    if (!this.series || !this.chartBox || !this.chartBox.isConnected || !this.series.points.length)
      return;
    const width = this.chartBox.clientWidth;
    if (width === this.drawnWidth && this.chartBox.firstChild) return;
    this.drawnWidth = width;
    const s = this.series;
    fill(
      this.chartBox,
      drawChart({
        width,
        points: s.points,
        profile: s.profile,
        start: this.range.start.getTime(),
        end: this.range.end.getTime(),
        title: t("chart.aria", { probe: `${s.device}/${s.probe}` }),
        formatValue: formatCelsius,
        formatTime: (ms) => formatTime(new Date(ms).toISOString()),
        texts: {
          low: t("chart.low"),
          high: t("chart.high"),
          criticalLow: t("chart.critical_low"),
          criticalHigh: t("chart.critical_high"),
        },
      }),
    );
  }

  profileText(profile) {
    if (!profile) return t("chart.no_profile");
    const range = (low, high) => `${low ?? "−∞"} … ${high ?? "+∞"} °C`;
    const critical =
      profile.critical_low_c !== null || profile.critical_high_c !== null
        ? `; ${t("chart.critical")} ${range(profile.critical_low_c, profile.critical_high_c)}`
        : "";
    return `${profile.name}: ${range(profile.low_c, profile.high_c)}${critical}`;
  }

  legend(profile) {
    const item = (cls, text) =>
      h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text);
    return h(
      "ul",
      { class: "legend" },
      item("swatch-line", t("chart.reading")),
      this.series.every ? item("swatch-range", t("chart.minmax")) : null,
      profile ? item("swatch-band", t("chart.band")) : null,
      profile && (profile.critical_low_c !== null || profile.critical_high_c !== null)
        ? item("swatch-critical", t("chart.critical"))
        : null,
    );
  }
}
