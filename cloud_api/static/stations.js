// Stations with their devices' online state and open alerts; live badges.

import { allPages } from "./api.js";
import { t } from "./i18n.js";
import { badge, fill, formatAgo, h, label, note, problemText, table } from "./dom.js";

export class StationsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.expanded = new Set();
    this.body = null;
    this.filter = null;
  }

  init() {
    this.body = document.getElementById("stations-body");
    this.filter = document.getElementById("station-filter");
    this.filter.addEventListener("input", () => this.render());
  }

  async show() {
    this.render();
    try {
      this.ctx.stations = await allPages("/stations");
      this.ctx.updateAlertCount();
      this.render();
    } catch (problem) {
      if (problem.status !== 401) this.ctx.toast(problemText(problem), "error");
    }
  }

  onStation(update) {
    const row = this.body && this.body.querySelector(`tr[data-station="${CSS.escape(update.id)}"]`);
    if (!row) return;
    const station = this.ctx.station(update.id);
    fill(row.querySelector(".cell-online .cell"), this.onlineCell(station));
    fill(row.querySelector(".cell-alerts .cell"), this.alertsCell(station));
  }

  visible() {
    const text = this.filter ? this.filter.value.trim().toLowerCase() : "";
    if (!text) return this.ctx.stations;
    return this.ctx.stations.filter((s) =>
      [s.id, s.name, s.division].some((field) => field.toLowerCase().includes(text)),
    );
  }

  render() {
    if (!this.body) return;
    const stations = this.visible();
    if (stations.length === 0) {
      fill(this.body, note(t(this.ctx.stations.length ? "stations.none_match" : "stations.none")));
      return;
    }
    const columns = [
      {
        label: t("common.station"),
        cell: (s) => [h("strong", {}, s.name), h("small", { class: "muted id" }, s.id)],
      },
      { label: t("stations.tier"), cell: (s) => label("tier", s.tier) },
      { label: t("stations.division"), cell: (s) => h("span", { class: "mono" }, s.division) },
      { label: t("stations.online"), class: "cell-online", cell: (s) => this.onlineCell(s) },
      { label: t("stations.open_alerts"), class: "cell-alerts", cell: (s) => this.alertsCell(s) },
      { label: t("stations.devices"), cell: (s) => this.devicesButton(s) },
    ];
    fill(
      this.body,
      table(columns, stations, {
        rowAttrs: (s) => ({ dataset: { station: s.id }, class: "station-row" }),
        after: (s) => (this.expanded.has(s.id) ? this.devices(s) : null),
      }),
    );
  }

  devicesButton(station) {
    if (station.devices.length === 0)
      return h("span", { class: "muted" }, t("stations.no_devices"));
    const open = this.expanded.has(station.id);
    return h(
      "button",
      {
        type: "button",
        class: "quiet",
        "aria-expanded": String(open),
        onclick: () => this.toggle(station.id),
      },
      t(open ? "stations.hide_devices" : "stations.show_devices", {
        count: station.devices.length,
      }),
    );
  }

  toggle(id) {
    if (this.expanded.has(id)) this.expanded.delete(id);
    else this.expanded.add(id);
    this.render();
  }

  onlineCell(station) {
    const total = station.devices.length;
    const state =
      total === 0 ? "none" : station.online === total ? "all" : station.online ? "some" : "down";
    return h(
      "span",
      {
        class: `status status-${state}`,
        title: t("stations.online_title", { online: station.online, total }),
      },
      h("span", { class: "dot", "aria-hidden": "true" }),
      `${station.online} / ${total}`,
    );
  }

  alertsCell(station) {
    if (!station.open_alerts) return h("span", { class: "muted" }, "0");
    return h(
      "a",
      {
        href: `#/alerts?station=${encodeURIComponent(station.id)}`,
        class: "badge badge-alerts",
        title: t("stations.alerts_link"),
      },
      String(station.open_alerts),
    );
  }

  devices(station) {
    if (station.devices.length === 0) return note(t("stations.no_devices"));
    const columns = [
      { label: t("common.device"), cell: (d) => h("span", { class: "mono" }, d.id) },
      { label: t("stations.role"), cell: (d) => label("device_role", d.role || "unknown") },
      {
        label: t("stations.status"),
        cell: (d) => badge("online", d.online ? "online" : "offline"),
      },
      {
        label: t("stations.last_seen"),
        cell: (d) => h("span", { title: d.last_seen || "" }, formatAgo(d.last_seen)),
      },
      {
        label: t("stations.probes"),
        cell: (d) =>
          d.probes.length
            ? d.probes.map((probe) =>
                h(
                  "a",
                  {
                    class: "chip probe-link",
                    href: `#/chart?${new URLSearchParams({ station: station.id, device: d.id, probe })}`,
                    title: t("stations.open_chart"),
                  },
                  probe,
                ),
              )
            : h("span", { class: "muted" }, "—"),
      },
    ];
    return h(
      "div",
      { class: "devices" },
      table(columns, station.devices, {
        rowAttrs: (d) => ({ dataset: { device: d.id } }),
      }),
    );
  }
}
