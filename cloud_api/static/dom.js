// Building DOM without innerHTML (no markup from data ever reaches the parser),
// and formatting times and numbers in the chosen language.

import { language, t } from "./i18n.js";

/**
 * An element: h("td", { class: "num", dataset: { id: 3 }, onclick: fn }, "text", child).
 * Children may be strings, numbers, nodes, arrays, or null/false (left out).
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "class") element.className = value;
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** Replace the children of ``element``. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

function locale() {
  return language() === "zh" ? "zh-CN" : "en-GB";
}

/** A time from the API (ISO 8601) as "2026-11-25 08:30" in the browser's time zone. */
export function formatTime(iso, { seconds = false } = {}) {
  if (!iso) return "—";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}`;
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}${seconds ? `:${pad(at.getSeconds())}` : ""}`;
  return `${day} ${time}`;
}

/** How long ago, e.g. "5 min ago" / "5分钟前"; the date and time beyond a week. */
export function formatAgo(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  if (Number.isNaN(seconds) || Math.abs(seconds) > 7 * 86400) return formatTime(iso);
  const format = new Intl.RelativeTimeFormat(locale(), { numeric: "auto" });
  const steps = [
    [60, "second"],
    [3600, "minute"],
    [86400, "hour"],
    [Infinity, "day"],
  ];
  let unit = 1;
  for (const [limit, name] of steps) {
    if (Math.abs(seconds) < limit) return format.format(Math.round(seconds / unit), name);
    unit = limit;
  }
  return formatTime(iso);
}

export function formatNumber(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return new Intl.NumberFormat(locale(), {
    maximumFractionDigits: digits,
    minimumFractionDigits: Number.isInteger(value) ? 0 : Math.min(digits, 1),
  }).format(value);
}

export function formatCelsius(value) {
  return value === null || value === undefined ? "—" : `${formatNumber(value, 1)} °C`;
}

export function formatPercent(ratio) {
  return new Intl.NumberFormat(locale(), { style: "percent", maximumFractionDigits: 1 }).format(
    ratio,
  );
}

/** A translated label for an enumerated value (kind, state, tier...), or the value itself. */
export function label(group, value) {
  if (value === null || value === undefined) return "—";
  const key = `${group}.${value}`;
  const text = t(key);
  return text === key ? String(value) : text;
}

/** A small coloured badge for an enumerated value: class "badge badge-{value}". */
export function badge(group, value, extra = "") {
  return h("span", { class: `badge badge-${value} ${extra}`.trim() }, label(group, value));
}

/** A message line for empty lists and errors. */
export function note(text, kind = "empty") {
  return h("p", { class: `note note-${kind}`, role: kind === "error" ? "alert" : null }, text);
}

/**
 * A table that becomes a list of cards on a phone (each cell labelled by its column).
 * columns: [{ label, cell: (row) => child, class }]; rowAttrs: (row) => attributes.
 */
export function table(columns, rows, { rowAttrs = () => ({}), after = () => null } = {}) {
  const head = h(
    "thead",
    {},
    h(
      "tr",
      {},
      columns.map((c) => h("th", { scope: "col" }, c.label)),
    ),
  );
  const body = h("tbody");
  for (const row of rows) {
    body.append(
      h(
        "tr",
        rowAttrs(row),
        columns.map((c) =>
          h(
            "td",
            { class: c.class, "data-label": c.label },
            h("div", { class: "cell" }, c.cell(row)),
          ),
        ),
      ),
    );
    const extra = after(row);
    if (extra)
      body.append(h("tr", { class: "detail-row" }, h("td", { colspan: columns.length }, extra)));
  }
  return h("div", { class: "table-wrap" }, h("table", { class: "responsive" }, head, body));
}

/** "Page 2 of 5" with previous and next buttons; nothing when everything fits one page. */
export function pager(page, perPage, total, onPage) {
  const pages = Math.max(1, Math.ceil(total / perPage));
  if (pages === 1) return null;
  return h(
    "nav",
    { class: "pager", "aria-label": t("pager.label") },
    h(
      "button",
      { type: "button", disabled: page <= 1, onclick: () => onPage(page - 1) },
      t("pager.previous"),
    ),
    h("span", {}, t("pager.status", { page, pages, total })),
    h(
      "button",
      { type: "button", disabled: page >= pages, onclick: () => onPage(page + 1) },
      t("pager.next"),
    ),
  );
}

/** Key/value pairs as a description list; values are children (already formatted). */
export function pairs(entries) {
  return h(
    "dl",
    { class: "pairs" },
    entries.map(([key, value]) => h("div", {}, h("dt", {}, key), h("dd", {}, value))),
  );
}

/** An API error for people: what went wrong in their language, then the API's words. */
export function problemText(problem) {
  const status = problem && problem.status;
  const key = `error.${status}`;
  const known = t(key) !== key ? t(key) : t("error.other", { status });
  const said = problem && problem.title && problem.title !== "network" ? problem.title : "";
  return said ? `${known} (${said})` : known;
}
