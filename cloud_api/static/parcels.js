// Parcel search by waybill prefix and station, and the trace of one waybill.

import { api } from "./api.js";
import { language, t } from "./i18n.js";
import {
  badge,
  fill,
  formatTime,
  h,
  label,
  note,
  pager,
  pairs,
  problemText,
  table,
} from "./dom.js";

const PER_PAGE = 50;

export class ParcelsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.result = null;
    this.trace = null;
    this.page = 1;
  }

  init() {
    this.list = document.getElementById("parcels-body");
    this.detail = document.getElementById("trace-body");
    this.waybill = document.getElementById("parcel-waybill");
    this.station = document.getElementById("parcel-station");
    document.getElementById("parcel-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (!this.waybill.checkValidity()) {
        this.waybill.reportValidity();
        return;
      }
      this.ctx.navigate("parcels", {
        waybill: this.waybill.value.trim(),
        station: this.station.value,
      });
    });
  }

  fillStations(selected) {
    fill(
      this.station,
      h("option", { value: "" }, t("common.all_stations")),
      this.ctx.stations.map((s) =>
        h("option", { value: s.id, selected: s.id === selected }, s.name),
      ),
    );
  }

  show(params) {
    this.fillStations(params.station || "");
    this.waybill.value = params.waybill || "";
    this.page = Number(params.page) || 1;
    this.search();
    if (params.trace) this.loadTrace(params.trace);
    else {
      this.trace = null;
      fill(this.detail);
    }
  }

  async search() {
    try {
      this.result = await api("/parcels", {
        params: {
          waybill: this.waybill.value.trim(),
          station: this.station.value,
          page: this.page,
          per_page: PER_PAGE,
        },
      });
      this.error = null;
    } catch (problem) {
      if (problem.status === 401) return;
      this.result = null;
      this.error = problemText(problem);
    }
    this.renderList();
  }

  async loadTrace(waybill) {
    fill(this.detail, note(t("common.loading"), "loading"));
    try {
      this.trace = await api(`/parcels/${encodeURIComponent(waybill)}/trace`);
      this.traceError = null;
    } catch (problem) {
      if (problem.status === 401) return;
      this.trace = null;
      this.traceError =
        problem.status === 404 ? t("parcels.unknown", { waybill }) : problemText(problem);
    }
    this.renderTrace();
    this.detail.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  render() {
    this.fillStations(this.station.value);
    this.renderList();
    this.renderTrace();
  }

  renderList() {
    if (!this.list) return;
    if (this.error) {
      fill(this.list, note(this.error, "error"));
      return;
    }
    if (!this.result) return;
    if (!this.result.items.length) {
      fill(this.list, note(t("parcels.none")));
      return;
    }
    const columns = [
      {
        label: t("parcels.waybill"),
        cell: (p) =>
          h("a", { class: "mono trace-link", href: this.traceHref(p.waybill) }, p.waybill),
      },
      { label: t("common.station"), cell: (p) => this.ctx.stationName(p.station) },
      { label: t("parcels.destination"), cell: (p) => h("span", { class: "mono" }, p.destination) },
      { label: t("parcels.accepted_at"), cell: (p) => formatTime(p.accepted_at) },
      { label: t("parcels.clearance"), cell: (p) => clearanceBadge(p.cleared, p.hold) },
    ];
    fill(
      this.list,
      h("p", { class: "muted" }, t("parcels.found", { total: this.result.total })),
      table(columns, this.result.items, { rowAttrs: (p) => ({ dataset: { waybill: p.waybill } }) }),
      pager(this.page, PER_PAGE, this.result.total, (page) => {
        this.page = page;
        this.search();
      }),
    );
  }

  traceHref(waybill) {
    const params = new URLSearchParams({
      waybill: this.waybill.value.trim(),
      station: this.station.value,
      trace: waybill,
    });
    return `#/parcels?${params}`;
  }

  renderTrace() {
    if (!this.detail) return;
    if (this.traceError) {
      fill(this.detail, note(this.traceError, "error"));
      return;
    }
    const trace = this.trace;
    if (!trace) return;
    const c = trace.clearance;
    const facts = pairs([
      [t("common.station"), trace.station ? this.ctx.stationName(trace.station) : "—"],
      [t("parcels.destination"), trace.destination || "—"],
      [t("parcels.accepted_at"), formatTime(trace.accepted_at)],
      [t("parcels.clerk"), trace.clerk || "—"],
      [t("parcels.clearance"), clearanceBadge(c.cleared, c.hold !== null)],
      [t("parcels.realname"), badge("check", c.realname ? "yes" : "no")],
      [t("parcels.xray"), c.xray ? badge("xray", c.xray) : badge("check", "pending")],
      [t("parcels.hold"), c.hold ? label("reason", c.hold) : "—"],
    ]);
    const realname = trace.realname
      ? pairs([
          [t("parcels.id_type"), label("id_type", trace.realname.id_type)],
          [t("parcels.id_number"), h("span", { class: "mono" }, trace.realname.masked_number)],
          [t("parcels.name"), trace.realname.masked_name],
          [t("parcels.phone"), trace.realname.masked_phone || "—"],
        ])
      : note(t("parcels.no_realname"));
    fill(
      this.detail,
      h(
        "article",
        { class: "card trace", "aria-labelledby": "trace-title" },
        h("h3", { id: "trace-title" }, t("parcels.trace_of", { waybill: trace.waybill })),
        facts,
        h("h4", {}, t("parcels.realname_record")),
        realname,
        h("h4", {}, t("parcels.events")),
        trace.events.length ? this.timeline(trace.events) : note(t("parcels.no_events")),
        h("h4", {}, t("parcels.decisions")),
        trace.decisions.length ? this.decisions(trace.decisions) : note(t("parcels.no_decisions")),
      ),
    );
  }

  timeline(events) {
    return h(
      "ol",
      { class: "timeline" },
      events.map((event) =>
        h(
          "li",
          { dataset: { kind: event.kind } },
          h("time", { datetime: event.at }, formatTime(event.at, { seconds: true })),
          h("strong", {}, label("event", event.kind)),
          event.station || event.device
            ? h(
                "small",
                { class: "muted" },
                [event.station && this.ctx.stationName(event.station), event.device]
                  .filter(Boolean)
                  .join(" · "),
              )
            : null,
          // The API's summary is an English sentence; Chinese readers get the details.
          language() === "en" ? h("p", {}, event.summary) : null,
          detailLine(event.details),
        ),
      ),
    );
  }

  decisions(decisions) {
    const columns = [
      { label: t("parcels.decided_at"), cell: (d) => formatTime(d.decided_at, { seconds: true }) },
      { label: t("parcels.decision"), cell: (d) => label("decision", d.kind) },
      { label: t("parcels.outcome"), cell: (d) => badge("outcome", d.outcome) },
      { label: t("parcels.reason"), cell: (d) => (d.reason ? label("reason", d.reason) : "—") },
      { label: t("common.device"), cell: (d) => h("span", { class: "mono" }, d.device) },
      {
        label: t("parcels.facts"),
        cell: (d) =>
          Object.keys(d.facts).length
            ? h("details", {}, h("summary", {}, t("parcels.show_facts")), detailLine(d.facts))
            : "—",
      },
    ];
    return table(columns, decisions);
  }
}

function clearanceBadge(cleared, hold) {
  if (hold) return badge("clearance", "hold");
  return badge("clearance", cleared ? "cleared" : "pending");
}

function detailLine(details) {
  const entries = Object.entries(details || {}).filter(
    ([, v]) => v !== null && v !== undefined && v !== "",
  );
  if (!entries.length) return null;
  return h(
    "dl",
    { class: "details" },
    entries.map(([key, value]) =>
      h("div", {}, h("dt", {}, label("detail", key)), h("dd", {}, detailValue(key, value))),
    ),
  );
}

/** Values named by a dictionary group (verdicts, reasons, yes/no) in the reader's language. */
const VALUE_GROUPS = { verdict: "xray", reason: "reason" };

function detailValue(key, value) {
  if (typeof value === "boolean") return t(value ? "common.yes" : "common.no");
  if (typeof value === "object") return JSON.stringify(value);
  return VALUE_GROUPS[key] ? label(VALUE_GROUPS[key], value) : String(value);
}
