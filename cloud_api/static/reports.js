// The compliance report of one station and one day or month: shown on the page, and
// downloaded as CSV or XLSX. Its fields are rendered generically (tables for lists of
// objects, key/value lists for objects), so fields added to the report show up as-is.

import { api, apiUrl } from "./api.js";
import { t } from "./i18n.js";
import {
  fill,
  formatNumber,
  formatPercent,
  formatTime,
  h,
  note,
  pairs,
  problemText,
} from "./dom.js";

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/;
const RATIO_KEY = /(coverage|ratio|rate|share|fraction)$/;
const PERCENT_KEY = /(_pct|_percent|percent)$/;

function pad(n) {
  return String(n).padStart(2, "0");
}

export class ReportsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.report = null;
  }

  init() {
    this.body = document.getElementById("report-body");
    this.form = document.getElementById("report-form");
    this.station = document.getElementById("report-station");
    this.period = document.getElementById("report-period");
    this.month = document.getElementById("report-month");
    this.day = document.getElementById("report-day");
    const now = new Date();
    this.month.value = `${now.getFullYear()}-${pad(now.getMonth() + 1)}`;
    this.day.value = `${this.month.value}-${pad(now.getDate())}`;
    for (const input of [this.station, this.period, this.month, this.day]) {
      input.addEventListener("change", () => this.updateLinks());
    }
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.load();
    });
  }

  show(params) {
    const selected = params.station || this.station.value || (this.ctx.stations[0] || {}).id || "";
    fill(
      this.station,
      this.ctx.stations.map((s) =>
        h("option", { value: s.id, selected: s.id === selected }, s.name),
      ),
    );
    if (params.month) {
      this.period.value = "month";
      this.month.value = params.month;
    } else if (params.day) {
      this.period.value = "day";
      this.day.value = params.day;
    }
    this.updateLinks();
    if (!this.report) fill(this.body, note(t("reports.hint")));
  }

  query(format) {
    const period =
      this.period.value === "day" ? { day: this.day.value } : { month: this.month.value };
    return { station: this.station.value, ...period, format };
  }

  updateLinks() {
    const byDay = this.period.value === "day";
    document.getElementById("report-day-field").hidden = !byDay;
    document.getElementById("report-month-field").hidden = byDay;
    this.month.required = !byDay;
    this.day.required = byDay;
    const ready = Boolean(this.station.value && (byDay ? this.day.value : this.month.value));
    for (const format of ["csv", "xlsx"]) {
      const link = document.getElementById(`report-${format}`);
      if (ready) link.href = apiUrl("/reports/compliance", this.query(format));
      else link.removeAttribute("href");
      link.setAttribute("aria-disabled", String(!ready));
    }
  }

  async load() {
    if (!this.form.reportValidity()) return;
    fill(this.body, note(t("common.loading"), "loading"));
    try {
      this.report = await api("/reports/compliance", { params: this.query("json") });
      this.error = null;
    } catch (problem) {
      if (problem.status === 401) return;
      this.report = null;
      this.error = problemText(problem);
    }
    this.render();
  }

  render() {
    if (!this.body) return;
    if (this.error) fill(this.body, note(this.error, "error"));
    else if (this.report) fill(this.body, renderReport(this.report));
  }
}

/** A field's label: the dictionary's (a report field, or an exception reason used as a
 * key), else the field name made readable. */
export function fieldLabel(key) {
  for (const name of [`report.${key}`, `reason.${key}`]) {
    const text = t(name);
    if (text !== name) return text;
  }
  const words = String(key).replace(/_/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const isScalar = (value) => value === null || typeof value !== "object";

/** One value, formatted by its type and its field's name. */
export function formatValue(value, key = "") {
  if (value === null || value === undefined) return "—";
  if (typeof value === "boolean") return t(value ? "common.yes" : "common.no");
  if (typeof value === "number") {
    if (RATIO_KEY.test(key) && value >= 0 && value <= 1) return formatPercent(value);
    if (PERCENT_KEY.test(key)) return `${formatNumber(value, 1)} %`;
    if (/_c$/.test(key) || key === "celsius" || key.startsWith("mkt"))
      return `${formatNumber(value, 2)} °C`;
    return formatNumber(value, 2);
  }
  if (typeof value === "string") return ISO_TIME.test(value) ? formatTime(value) : value;
  if (Array.isArray(value)) return value.map((item) => formatValue(item, key)).join(", ");
  return Object.entries(value)
    .map(([k, v]) => `${fieldLabel(k)}: ${formatValue(v, k)}`)
    .join("; ");
}

/** The report as page content: headline figures first, then a section per field. */
export function renderReport(report) {
  const entries = Object.entries(report);
  const scalars = entries.filter(([, value]) => isScalar(value));
  const sections = entries.filter(([, value]) => !isScalar(value));
  return h(
    "div",
    { class: "report" },
    h(
      "div",
      { class: "figures" },
      scalars.map(([key, value]) =>
        h(
          "div",
          { class: "figure", dataset: { field: key } },
          h("span", { class: "figure-label" }, fieldLabel(key)),
          h("strong", {}, formatValue(value, key)),
        ),
      ),
    ),
    sections.map(([key, value]) => section(key, value, 3)),
  );
}

function section(key, value, depth) {
  const heading = h(`h${Math.min(depth, 6)}`, {}, fieldLabel(key));
  return h(
    "section",
    { class: "report-section", dataset: { field: key } },
    heading,
    content(value, key, depth),
  );
}

function content(value, key, depth) {
  if (Array.isArray(value)) {
    if (!value.length) return note(t("reports.empty"));
    if (value.every(isObject)) return objectTable(value);
    return h("p", {}, formatValue(value, key));
  }
  if (isObject(value)) {
    const entries = Object.entries(value);
    if (!entries.length) return note(t("reports.empty"));
    const flat = entries.filter(([, v]) => isScalar(v) || (Array.isArray(v) && v.every(isScalar)));
    const deep = entries.filter((entry) => !flat.includes(entry));
    return [
      flat.length ? pairs(flat.map(([k, v]) => [fieldLabel(k), formatValue(v, k)])) : null,
      deep.map(([k, v]) => section(k, v, depth + 1)),
    ];
  }
  return h("p", {}, formatValue(value, key));
}

function objectTable(rows) {
  const columns = [];
  for (const row of rows)
    for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "responsive" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          columns.map((key) => h("th", { scope: "col" }, fieldLabel(key))),
        ),
      ),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            {},
            columns.map((key) =>
              h(
                "td",
                {
                  "data-label": fieldLabel(key),
                  class: typeof row[key] === "number" ? "num" : null,
                },
                formatValue(row[key], key),
              ),
            ),
          ),
        ),
      ),
    ),
  );
}
