// Alerts: filter by state and station, acknowledge and resolve, live updates.

import { api } from "./api.js";
import { t } from "./i18n.js";
import {
  badge,
  fill,
  formatAgo,
  formatCelsius,
  formatTime,
  h,
  label,
  note,
  pager,
  problemText,
  table,
} from "./dom.js";

const PER_PAGE = 50;
const FILTERS = {
  active: ["open", "acknowledged"],
  open: ["open"],
  acknowledged: ["acknowledged"],
  resolved: ["resolved"],
  all: [],
};

export class AlertsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.items = [];
    this.total = 0;
    this.page = 1;
    this.station = "";
    this.seen = new Set();
    this.loaded = false;
    this.error = null;
  }

  init() {
    this.body = document.getElementById("alerts-body");
    this.select = document.getElementById("alert-filter");
    this.select.addEventListener("change", () => {
      this.page = 1;
      this.load();
    });
  }

  knows(id) {
    return this.seen.has(id);
  }

  show(params) {
    this.station = params.station || "";
    this.page = 1;
    this.load();
  }

  /** Fetch the list again, if it has been shown. */
  refresh() {
    if (this.loaded) this.load();
  }

  states() {
    return FILTERS[this.select.value] || FILTERS.active;
  }

  async load() {
    try {
      const answer = await api("/alerts", {
        params: {
          state: this.states(),
          station: this.station,
          page: this.page,
          per_page: PER_PAGE,
        },
      });
      this.items = answer.items;
      this.total = answer.total;
      this.error = null;
      for (const alert of this.items) this.seen.add(alert.id);
    } catch (problem) {
      if (problem.status === 401) return;
      this.error = problemText(problem);
    }
    this.loaded = true;
    this.render();
  }

  matches(alert) {
    const states = this.states();
    return (
      (!states.length || states.includes(alert.state)) &&
      (!this.station || alert.station === this.station)
    );
  }

  /** A new or changed alert from the live stream. */
  onAlert(alert) {
    this.seen.add(alert.id);
    const index = this.items.findIndex((item) => item.id === alert.id);
    if (this.matches(alert)) {
      if (index >= 0) this.items[index] = alert;
      else if (this.page === 1) {
        this.items.unshift(alert);
        this.total += 1;
      }
    } else if (index >= 0) {
      this.items.splice(index, 1);
      this.total -= 1;
    }
    this.render();
  }

  render() {
    if (!this.body || !this.loaded) return;
    const parts = [];
    if (this.station) {
      parts.push(
        h(
          "p",
          { class: "chips" },
          h(
            "a",
            { class: "chip chip-filter", href: "#/alerts", title: t("alerts.clear_station") },
            `${t("common.station")}: ${this.ctx.stationName(this.station)} ✕`,
          ),
        ),
      );
    }
    if (this.error) parts.push(note(this.error, "error"));
    if (this.items.length === 0 && !this.error) parts.push(note(t("alerts.none")));
    if (this.items.length) parts.push(this.table());
    parts.push(
      pager(this.page, PER_PAGE, this.total, (page) => {
        this.page = page;
        this.load();
      }),
    );
    fill(this.body, parts);
  }

  table() {
    const columns = [
      { label: t("alerts.severity"), cell: (a) => badge("severity", a.severity) },
      {
        label: t("alerts.kind"),
        cell: (a) => [
          h("strong", {}, label("kind", a.kind)),
          h("small", { class: "muted id" }, a.ref),
        ],
      },
      { label: t("common.station"), cell: (a) => this.ctx.stationName(a.station) },
      { label: t("alerts.subject"), cell: (a) => this.subject(a) },
      {
        label: t("alerts.raised"),
        cell: (a) =>
          h("span", { title: formatTime(a.raised_at, { seconds: true }) }, formatAgo(a.raised_at)),
      },
      { label: t("alerts.state"), class: "cell-state", cell: (a) => this.state(a) },
      { label: t("alerts.actions"), class: "cell-actions", cell: (a) => this.actions(a) },
    ];
    return table(columns, this.items, {
      rowAttrs: (a) => ({
        class: `alert-row severity-${a.severity}`,
        dataset: { alert: a.id, state: a.state },
      }),
    });
  }

  subject(alert) {
    const parts = [];
    const [device, probe] = (alert.subject || "").split("/");
    if (probe && alert.device) {
      parts.push(
        h(
          "a",
          {
            class: "probe-link",
            href: `#/chart?${new URLSearchParams({
              station: alert.station,
              device: alert.device,
              probe,
              around: alert.raised_at,
            })}`,
            title: t("stations.open_chart"),
          },
          alert.subject,
        ),
      );
    } else parts.push(alert.subject || device || alert.device || "—");
    if (alert.waybill)
      parts.push(
        " ",
        h("a", { href: `#/parcels?trace=${encodeURIComponent(alert.waybill)}` }, alert.waybill),
      );
    const details = this.details(alert.details || {});
    if (details) parts.push(h("small", { class: "muted block" }, details));
    return parts;
  }

  details(details) {
    return Object.entries(details)
      .map(([key, value]) => {
        const shown =
          key === "celsius" || key.endsWith("_c")
            ? formatCelsius(value)
            : typeof value === "object"
              ? JSON.stringify(value)
              : String(value);
        return `${label("detail", key)}: ${shown}`;
      })
      .join(" · ");
  }

  state(alert) {
    const who =
      alert.state === "acknowledged"
        ? alert.acknowledged_by
        : alert.state === "resolved"
          ? alert.resolved_by
          : null;
    const at = alert.state === "acknowledged" ? alert.acknowledged_at : alert.resolved_at;
    return [
      badge("state", alert.state),
      alert.escalated_at && alert.state !== "resolved" ? [" ", badge("alerts", "escalated")] : null,
      who
        ? h("small", { class: "muted block", title: formatTime(at) }, t("alerts.by", { who }))
        : null,
    ];
  }

  actions(alert) {
    if (!this.ctx.can("alerts") || alert.state === "resolved") return null;
    const buttons = [];
    if (alert.state === "open") {
      buttons.push(
        h(
          "button",
          {
            type: "button",
            class: "primary act-acknowledge",
            onclick: (e) => this.act(alert, "acknowledge", e),
          },
          t("alerts.acknowledge"),
        ),
      );
    }
    buttons.push(
      h(
        "button",
        { type: "button", class: "act-resolve", onclick: (e) => this.act(alert, "resolve", e) },
        t("alerts.resolve"),
      ),
    );
    return h("span", { class: "actions" }, buttons);
  }

  async act(alert, action, event) {
    event.currentTarget.disabled = true;
    try {
      const changed = await api(`/alerts/${alert.id}/${action}`, { method: "POST" });
      this.onAlert(changed);
      this.ctx.toast(t(`alerts.${action}d`, { ref: changed.ref }), "success");
    } catch (problem) {
      if (problem.status === 401) return;
      this.ctx.toast(problemText(problem), "error");
      this.load();
    }
  }
}
