// The dashboard's shell: login, navigation (#/view?params), the live event stream, and
// the language toggle. Each view lives in its own module and is driven through ``ctx``.

import { api, allPages, whenUnauthorized } from "./api.js";
import { applyTranslations, initialLanguage, language, setLanguage, t } from "./i18n.js";
import { fill, h, label, problemText } from "./dom.js";
import { AlertsView } from "./alerts.js";
import { ChartView } from "./probes.js";
import { ParcelsView } from "./parcels.js";
import { ReportsView } from "./reports.js";
import { StationsView } from "./stations.js";

const $ = (id) => document.getElementById(id);

/** What the views share: the user, the stations, navigation and messages. */
const ctx = {
  me: null,
  stations: [],
  can(permission) {
    return Boolean(this.me && this.me.permissions.includes(permission));
  },
  station(id) {
    return this.stations.find((station) => station.id === id);
  },
  stationName(id) {
    const station = this.station(id);
    return station ? station.name : id;
  },
  /** Go to a view: ctx.navigate("chart", { station, device, probe }). */
  navigate(view, params = {}) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") query.set(key, value);
    }
    const text = query.toString();
    const hash = `#/${view}${text ? `?${text}` : ""}`;
    if (window.location.hash === hash) route();
    else window.location.hash = hash;
  },
  toast(text, kind = "info") {
    const item = h("div", { class: `toast toast-${kind}` }, text);
    $("toasts").append(item);
    window.setTimeout(() => item.remove(), kind === "error" ? 8000 : 5000);
  },
  /** Refresh the alert count in the navigation (open + acknowledged, all stations). */
  updateAlertCount() {
    const count = this.stations.reduce((sum, station) => sum + station.open_alerts, 0);
    const element = $("alert-count");
    element.hidden = count === 0;
    element.textContent = String(count);
    element.title = t("alerts.count_title", { count });
  },
};

const views = {
  stations: new StationsView(ctx),
  alerts: new AlertsView(ctx),
  chart: new ChartView(ctx),
  parcels: new ParcelsView(ctx),
  reports: new ReportsView(ctx),
};

// -- live events ----------------------------------------------------------------------

/** The Server-Sent Events stream. The API sends only changes after its ``hello`` (no
 * replay), so after a lost connection the lists are fetched again. EventSource reconnects
 * by itself after a network error; after an error answer (e.g. a restart) it is reopened
 * here, unless the session has ended. */
const live = {
  source: null,
  retry: null,
  lost: false,
  start() {
    this.stop();
    const source = new EventSource("/api/v1/events", { withCredentials: true });
    this.source = source;
    setLive("connecting");
    source.addEventListener("hello", () => {
      setLive("on");
      if (this.lost) refresh();
      this.lost = false;
    });
    source.addEventListener("alert", (event) => onAlert(JSON.parse(event.data)));
    source.addEventListener("station", (event) => onStation(JSON.parse(event.data)));
    source.addEventListener("error", () => {
      this.lost = true;
      if (source.readyState !== EventSource.CLOSED) {
        setLive("reconnecting");
        return;
      }
      setLive("off");
      this.retry = window.setTimeout(() => this.reopen(), 5000);
    });
  },
  async reopen() {
    try {
      ctx.me = await api("/me");
      this.start();
    } catch (problem) {
      if (problem.status !== 401) this.retry = window.setTimeout(() => this.reopen(), 10000);
    }
  },
  stop() {
    window.clearTimeout(this.retry);
    if (this.source) this.source.close();
    this.source = null;
    $("live").hidden = true;
  },
};

function setLive(state) {
  const element = $("live");
  element.hidden = false;
  element.dataset.state = state;
  element.dataset.i18nTitle = `live.${state}`;
  element.title = t(`live.${state}`);
  $("live-text").dataset.i18n = `live.${state}`;
  $("live-text").textContent = t(`live.${state}`);
}

function onAlert(alert) {
  const known = views.alerts.knows(alert.id);
  views.alerts.onAlert(alert);
  if (!known && alert.state === "open") {
    ctx.toast(
      t(alert.escalated_at ? "alerts.escalated_toast" : "alerts.new_toast", {
        kind: label("kind", alert.kind),
        station: ctx.stationName(alert.station),
      }),
      alert.severity === "critical" ? "error" : "warning",
    );
  }
}

/** Fetch what may have changed while the stream was down. */
async function refresh() {
  try {
    ctx.stations = await allPages("/stations");
  } catch (problem) {
    if (problem.status !== 401) ctx.toast(problemText(problem), "error");
    return;
  }
  ctx.updateAlertCount();
  views.stations.render();
  views.alerts.refresh();
}

function onStation(update) {
  const station = ctx.station(update.id);
  if (!station) return;
  station.online = update.online;
  station.open_alerts = update.open_alerts;
  ctx.updateAlertCount();
  views.stations.onStation(update);
}

// -- login ----------------------------------------------------------------------------

function showLogin(message = "") {
  live.stop();
  ctx.me = null;
  $("app-view").hidden = true;
  $("logout").hidden = true;
  $("who").hidden = true;
  $("login-view").hidden = false;
  const error = $("login-error");
  error.textContent = message;
  error.hidden = !message;
  $("login-username").focus();
}

async function submitLogin(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $("login-error");
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password) {
    error.textContent = t("login.missing");
    error.hidden = false;
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const answer = await api("/login", { method: "POST", body: { username, password } });
    form.password.value = "";
    error.hidden = true;
    ctx.me = answer.user;
    await enter();
  } catch (problem) {
    error.textContent = problem.status === 401 ? t("login.failed") : problemText(problem);
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  try {
    await api("/logout", { method: "POST" });
  } finally {
    showLogin();
  }
}

/** After login (or with a live session): load the stations, show the app, go live. */
async function enter() {
  ctx.stations = await allPages("/stations");
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("logout").hidden = false;
  renderWho();
  ctx.updateAlertCount();
  live.start();
  route();
}

function renderWho() {
  const who = $("who");
  who.hidden = !ctx.me;
  if (ctx.me) fill(who, ctx.me.name, " · ", label("role", ctx.me.role));
}

// -- navigation -----------------------------------------------------------------------

function route() {
  if (!ctx.me) return;
  const [path, query = ""] = window.location.hash.replace(/^#\/?/, "").split("?");
  const name = views[path] ? path : "stations";
  const params = Object.fromEntries(new URLSearchParams(query));
  for (const key of Object.keys(views)) {
    $(`view-${key}`).hidden = key !== name;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  views[name].show(params);
}

// -- language -------------------------------------------------------------------------

function switchLanguage() {
  setLanguage(language() === "zh" ? "en" : "zh", { remember: true });
  applyTranslations(document);
  renderWho();
  ctx.updateAlertCount();
  for (const view of Object.values(views)) view.render();
}

// -- start ----------------------------------------------------------------------------

async function start() {
  setLanguage(initialLanguage());
  applyTranslations(document);
  whenUnauthorized(() => {
    if (ctx.me) showLogin(t("login.expired"));
  });
  $("login-form").addEventListener("submit", submitLogin);
  $("logout").addEventListener("click", logout);
  $("lang-toggle").addEventListener("click", switchLanguage);
  window.addEventListener("hashchange", route);
  for (const view of Object.values(views)) view.init();
  try {
    ctx.me = await api("/me");
    await enter();
  } catch (problem) {
    showLogin(problem.status === 401 ? "" : problemText(problem));
  }
}

start();
