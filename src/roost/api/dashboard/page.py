"""The dashboard page: markup, style and script, assembled into one HTML document.

Kept as Python strings rather than package data so the page ships with the code in
every kind of install. Style and script stay separate constants because the route
pins both by hash in its Content-Security-Policy. Raw strings: the script's own
backslash escapes must reach the browser untouched.
"""

from __future__ import annotations

STYLE = r"""
*, *::before, *::after { box-sizing: border-box; }
:root {
  color-scheme: light dark;
  --bg: #f3f4f7; --panel: #ffffff; --panel-2: #f7f8fa; --text: #17202b; --muted: #5d6877;
  --border: #e0e4ea; --accent: #4f46e5; --accent-strong: #4338ca; --accent-ink: #ffffff;
  --accent-soft: #eef0ff; --focus: #818cf8;
  --ok: #15803d; --ok-bg: #dcfce7; --warn: #a16207; --warn-bg: #fef3c7;
  --bad: #b91c1c; --bad-bg: #fee2e2; --info: #1d4ed8; --info-bg: #dbeafe;
  --idle: #475569; --idle-bg: #e7ebf0;
  --shadow: 0 1px 2px rgba(16, 24, 40, .05), 0 1px 3px rgba(16, 24, 40, .07);
  --radius: 10px;
  --sans: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Liberation Sans",
    "DejaVu Sans", sans-serif;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
    "DejaVu Sans Mono", monospace;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0e1116; --panel: #161a21; --panel-2: #1c212a; --text: #e5e8ed; --muted: #98a2b0;
    --border: #2a303a; --accent: #818cf8; --accent-strong: #a5b4fc; --accent-ink: #0e1116;
    --accent-soft: #23264a; --ok: #4ade80; --ok-bg: #12301e; --warn: #fbbf24;
    --warn-bg: #392b0b; --bad: #f87171; --bad-bg: #3a1518; --info: #93c5fd;
    --info-bg: #152a46; --idle: #cbd5e1; --idle-bg: #262d38;
  }
}
html, body { margin: 0; }
body { font: 14px/1.45 var(--sans); background: var(--bg); color: var(--text); }
[hidden] { display: none !important; }
h1, h2, h3 { margin: 0; line-height: 1.25; }
code, .mono { font-family: var(--mono); font-size: 12.5px; }
button { font: inherit; color: inherit; }
:focus-visible { outline: 2px solid var(--focus); outline-offset: 2px; }
.muted { color: var(--muted); }
.visually-hidden {
  position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  white-space: nowrap;
}

.topbar {
  display: flex; align-items: center; gap: 16px; padding: 10px 20px;
  background: var(--panel); border-bottom: 1px solid var(--border);
  position: sticky; top: 0; z-index: 2;
}
.brand { display: flex; align-items: center; gap: 10px; font-weight: 650; font-size: 16px; }
.brand .sub { font-weight: 400; color: var(--muted); }
.logo {
  width: 24px; height: 24px; border-radius: 7px;
  background: linear-gradient(135deg, var(--accent), #06b6d4);
}
.live {
  margin-left: auto; display: flex; align-items: center; gap: 8px;
  color: var(--muted); font-size: 13px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; min-width: 0;
}
.live::before {
  content: ""; flex: none; width: 8px; height: 8px; border-radius: 50%;
  background: var(--muted);
}
.live[data-state="ok"]::before { background: var(--ok); box-shadow: 0 0 0 3px var(--ok-bg); }
.live[data-state="error"] { color: var(--bad); }
.live[data-state="error"]::before { background: var(--bad); }

.btn {
  display: inline-flex; align-items: center; justify-content: center; gap: 6px;
  border: 1px solid var(--border); background: var(--panel); color: var(--text);
  padding: 6px 12px; border-radius: 8px; font-weight: 550; font-size: 13px;
  cursor: pointer; white-space: nowrap;
}
.btn:hover:not(:disabled) { border-color: var(--muted); }
.btn:disabled { cursor: not-allowed; opacity: .45; }
.btn.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-ink); }
.btn.primary:hover:not(:disabled) { background: var(--accent-strong); }
.btn.small { padding: 4px 10px; font-size: 12.5px; }
.btn.start:not(:disabled) { color: var(--ok); }
.btn.stop:not(:disabled) { color: var(--bad); }
.btn[aria-busy="true"] { cursor: progress; }
.icon-btn {
  border: 0; background: none; cursor: pointer; color: var(--muted);
  font-size: 18px; line-height: 1; padding: 4px 8px; border-radius: 6px;
}
.icon-btn:hover { background: var(--panel-2); color: var(--text); }

.login-view { display: grid; place-items: center; padding: 12vh 16px 24px; }
.card {
  background: var(--panel); border: 1px solid var(--border); border-radius: var(--radius);
  box-shadow: var(--shadow);
}
.login { width: min(440px, 100%); padding: 28px; display: grid; gap: 12px; }
.login h1 { font-size: 20px; }
.login p { margin: 0; }
.login label { font-weight: 600; font-size: 13px; }
.login input {
  font: 13px var(--mono); padding: 9px 11px; border-radius: 8px; width: 100%;
  border: 1px solid var(--border); background: var(--panel-2); color: var(--text);
}
.login input:focus { outline: 2px solid var(--focus); outline-offset: 0; }
.login .btn { padding: 9px 12px; }
.form-error {
  margin: 0; padding: 10px 12px; border-radius: 8px; background: var(--bad-bg);
  color: var(--bad); font-size: 13px; display: grid; gap: 4px;
}
.form-error .error-detail {
  color: var(--text); opacity: .75; font-size: 12px; word-break: break-word;
}

.layout {
  display: grid; gap: 20px; padding: 20px; align-items: start;
  grid-template-columns: 220px minmax(0, 1fr);
  grid-template-areas: "apps main" "apps detail";
}
.sidebar { grid-area: apps; position: sticky; top: 70px; }
.main {
  grid-area: main; min-width: 0; display: grid; gap: 16px;
  grid-template-columns: minmax(0, 1fr);
}
.detail { grid-area: detail; min-width: 0; padding: 18px; display: grid; gap: 16px; }
@media (min-width: 1600px) {
  .layout.has-detail {
    grid-template-columns: 220px minmax(0, 1fr) minmax(380px, 26vw);
    grid-template-areas: "apps main detail";
  }
  .layout.has-detail .detail {
    position: sticky; top: 70px; max-height: calc(100vh - 90px); overflow: auto;
  }
}
.eyebrow {
  font-size: 11px; font-weight: 650; letter-spacing: .07em; text-transform: uppercase;
  color: var(--muted);
}
.sidebar h2 { margin: 4px 8px 10px; }
.app-list { list-style: none; margin: 0; padding: 0; display: grid; gap: 2px; }
.app {
  width: 100%; display: flex; align-items: center; justify-content: space-between; gap: 8px;
  padding: 8px 10px; border: 0; border-radius: 8px; background: none; cursor: pointer;
  text-align: left;
}
.app:hover { background: var(--panel); }
.app[aria-current="true"] { background: var(--accent-soft); color: var(--accent-strong); }
.app .app-name { font-weight: 550; overflow: hidden; text-overflow: ellipsis; }
.app .count {
  font-size: 12px; min-width: 22px; text-align: center; padding: 1px 7px;
  border-radius: 999px; background: var(--idle-bg); color: var(--idle);
}
.sidebar .muted { margin: 8px; font-size: 13px; }

.section-head { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; }
.section-head h2 { font-size: 20px; }
.section-head p { margin: 0; }
.banner {
  display: flex; align-items: flex-start; gap: 10px; padding: 10px 12px 10px 14px;
  border-radius: 8px; background: var(--bad-bg); color: var(--bad);
  border: 1px solid color-mix(in srgb, var(--bad) 25%, transparent);
}
.banner .banner-text { flex: 1; padding-top: 2px; word-break: break-word; }
.banner .icon-btn { color: inherit; }
.placeholder { padding: 28px; text-align: center; color: var(--muted); }

.region { overflow: hidden; }
.table-scroll { overflow-x: auto; }
.region-head {
  display: flex; align-items: baseline; gap: 10px; padding: 12px 16px;
  border-bottom: 1px solid var(--border); font-size: 15px;
}
.region-head .region-count { margin-left: auto; color: var(--muted); font-size: 13px;
  font-weight: 400; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; vertical-align: middle; }
.machines thead th {
  font-size: 11px; font-weight: 650; letter-spacing: .06em; text-transform: uppercase;
  color: var(--muted); padding: 8px 12px; background: var(--panel-2);
  border-bottom: 1px solid var(--border);
}
.machines .group-row th, .machines .group-row th:last-child {
  padding: 14px 16px 6px; font-weight: 400; color: var(--muted); font-size: 12.5px;
  text-align: left;
}
.machines .group-row .group-count { margin-left: 6px; }
.machines td { padding: 10px 12px; border-top: 1px solid var(--border); }
.machines tbody .group-row + tr td { border-top: 0; }
.machines th:first-child, .machines td:first-child { padding-left: 16px; }
.machines th:last-child, .machines td:last-child { padding-right: 16px; text-align: right; }
tr.machine { cursor: pointer; }
tr.machine:hover td { background: var(--panel-2); }
tr.machine.selected td { background: var(--accent-soft); }
tr.machine.selected td:first-child { box-shadow: inset 3px 0 0 var(--accent); }
.machine-select {
  border: 0; background: none; padding: 0; cursor: pointer; text-align: left;
  display: grid; gap: 1px;
}
.machine-select .name { font-weight: 600; white-space: nowrap; }
.ip, .version { white-space: nowrap; }
.machine-select:hover .name { color: var(--accent); text-decoration: underline; }
.machine-select .mid { color: var(--muted); font-size: 11.5px; }
.image { display: inline-block; max-width: 26ch; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; vertical-align: bottom; }
.actions { display: inline-flex; gap: 6px; }

.pill {
  display: inline-flex; align-items: center; gap: 6px; padding: 2px 9px;
  border-radius: 999px; font-size: 12px; font-weight: 600; white-space: nowrap;
  background: var(--idle-bg); color: var(--idle);
}
.pill::before {
  content: ""; width: 6px; height: 6px; border-radius: 50%; background: currentColor;
}
.state-started { background: var(--ok-bg); color: var(--ok); }
.state-created, .state-starting, .state-restarting, .state-replacing {
  background: var(--info-bg); color: var(--info);
}
.state-stopping, .state-suspending, .state-destroying {
  background: var(--warn-bg); color: var(--warn);
}
.state-failed { background: var(--bad-bg); color: var(--bad); }
.pill.transient::before { animation: pulse 1s ease-in-out infinite; }
@keyframes pulse { 50% { opacity: .25; } }
@media (prefers-reduced-motion: reduce) { .pill.transient::before { animation: none; } }
.badge {
  display: inline-block; padding: 1px 7px; border-radius: 6px; font-size: 11.5px;
  font-weight: 600; background: var(--idle-bg); color: var(--idle); white-space: nowrap;
}
.badge.cordoned { margin-left: 6px; background: var(--warn-bg); color: var(--warn); }
.health { display: inline-flex; gap: 4px; flex-wrap: wrap; }
.health .passing { background: var(--ok-bg); color: var(--ok); }
.health .warning { background: var(--warn-bg); color: var(--warn); }
.health .critical { background: var(--bad-bg); color: var(--bad); }
.health .none { background: none; color: var(--muted); font-weight: 400; padding: 0; }

.detail-head { display: flex; align-items: flex-start; gap: 10px; }
.detail-head > div { flex: 1; min-width: 0; display: grid; gap: 4px; }
.detail-head h2 { font-size: 18px; overflow: hidden; text-overflow: ellipsis; }
.facts {
  margin: 0; display: grid; grid-template-columns: max-content minmax(0, 1fr);
  gap: 6px 14px; font-size: 13px;
}
.facts dt { color: var(--muted); }
.facts dd { margin: 0; word-break: break-all; }
.detail h3 { font-size: 13px; margin-bottom: 8px; display: flex; gap: 8px; align-items: baseline; }
.detail h3 .muted { font-weight: 400; font-size: 12px; }
.events { font-size: 12.5px; }
.events th {
  font-size: 11px; font-weight: 650; text-transform: uppercase; letter-spacing: .06em;
  color: var(--muted); padding: 6px 8px; border-bottom: 1px solid var(--border);
}
.events td { padding: 6px 8px; border-bottom: 1px solid var(--border); }
.events td.when { white-space: nowrap; color: var(--muted); }
.events tr:last-child td { border-bottom: 0; }
.logs {
  font: 12px/1.55 var(--mono); background: #0f131a; color: #d6dce4; border-radius: 8px;
  padding: 10px 12px; max-height: 360px; min-height: 80px; overflow: auto;
}
.logs .line { white-space: pre-wrap; word-break: break-word; }
.logs .ts { color: #7c8796; margin-right: 8px; }
.logs .stream { color: #7c8796; margin-right: 8px; }
.logs .stderr .msg { color: #fca5a5; }
.logs .event .msg { color: #93c5fd; }
.logs .empty { color: #9aa4b2; margin: 0; font-family: var(--sans); }

/* Medium widths: the apps move above the machines, which keep the full width. */
@media (max-width: 1100px) {
  .layout { grid-template-columns: minmax(0, 1fr); grid-template-areas: "apps" "main" "detail"; }
  .sidebar { position: static; }
  .sidebar h2 { margin: 0 0 6px; }
  .app-list { display: flex; flex-wrap: wrap; gap: 6px; }
  .app { width: auto; background: var(--panel); border: 1px solid var(--border); }
}
@media (max-width: 600px) {
  .topbar { padding: 10px 12px; gap: 10px; }
  .brand .sub { display: none; }
  .layout { padding: 12px; gap: 12px; }
}
/* Narrow widths: each machine becomes a card of labelled facts. */
@media (max-width: 900px) {
  .machines thead { display: none; }
  .machines, .machines tbody, .machines tr, .machines th, .machines td { display: block; }
  .machines tbody .group-row th { padding: 12px 14px 4px; }
  tr.machine {
    display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px 12px;
    padding: 12px 14px; border-top: 1px solid var(--border);
  }
  tbody .group-row + tr.machine { border-top: 0; }
  .machines td, .machines td:first-child, .machines td:last-child {
    padding: 0; border: 0; text-align: left; background: none;
  }
  tr.machine.selected { background: var(--accent-soft); box-shadow: inset 3px 0 0 var(--accent); }
  tr.machine.selected td:first-child { box-shadow: none; }
  .machines td[data-label]::before {
    content: attr(data-label); display: block; font-size: 10.5px; font-weight: 650;
    letter-spacing: .06em; text-transform: uppercase; color: var(--muted);
  }
  .machines td.c-machine, .machines td.c-actions { grid-column: 1 / -1; }
  .machines td.c-machine::before, .machines td.c-actions::before { display: none; }
  .image { max-width: 100%; }
}
"""

SCRIPT = r"""
"use strict";
(() => {
  const TOKEN_KEY = "roost.token";
  const POLL_MS = 1500;
  const EVENT_LIMIT = 25;
  const LOG_LIMIT = 200;
  const STATE_ORDER = [
    "started", "starting", "restarting", "replacing", "stopping", "suspending",
    "stopped", "suspended", "created", "failed", "destroying", "destroyed",
  ];
  const TRANSIENT = new Set([
    "starting", "stopping", "suspending", "restarting", "replacing", "destroying",
  ]);
  const STARTABLE = new Set(["created", "stopped", "suspended", "failed"]);
  const STOPPABLE = new Set(["started", "starting", "restarting", "replacing"]);
  const COLUMNS = ["Machine", "State", "Image", "Private IP", "Health", "Version", "Actions"];
  const MISSING = Symbol("missing");

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const ui = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    app: null,
    machine: null,
    machines: new Map(),  // id -> the machine as last polled, for the selected app
    rows: new Map(),      // id -> its <tr>, reused across polls
    busy: new Set(),      // ids with a start/stop request in flight
    appItems: new Map(),  // app name -> its <li>, reused across polls
    timer: 0,
    // Bumped whenever what we show changes (sign-in, selection, an action), so an
    // answer to a request made before then is dropped instead of painting stale data.
    generation: 0,
    eventsKey: null,
    logsKey: null,
  };

  // -- DOM helpers: only write what changed, so polling never flickers, never moves
  // focus and never loses a text selection.

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function setAttr(node, name, value) {
    if (value === null) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== value) {
      node.setAttribute(name, value);
    }
  }

  function setClass(node, value) {
    if (node.className !== value) node.className = value;
  }

  // Put `node` right after `prev` (first when prev is null), touching the DOM only
  // when it is not there already: moving a node would blur a focused button in it.
  function place(parent, node, prev) {
    const want = prev ? prev.nextSibling : parent.firstChild;
    if (want !== node) parent.insertBefore(node, want);
  }

  function pad(n, width = 2) {
    return String(n).padStart(width, "0");
  }

  function clock(date, millis = false) {
    if (Number.isNaN(date.getTime())) return "";
    const hms = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
    return millis ? `${hms}.${pad(date.getMilliseconds(), 3)}` : hms;
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  // -- API

  async function api(method, path, accept = "application/json") {
    let res;
    try {
      res = await fetch(path, {
        method,
        cache: "no-store",
        headers: { Authorization: `Bearer ${ui.token}`, Accept: accept },
      });
    } catch {
      throw new ApiError(0, "cannot reach the roost server");
    }
    if (res.ok) return res;
    const message = await errorText(res);
    if (res.status === 401) throw new AuthError(message);
    throw new ApiError(res.status, message);
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && typeof body.error === "string" && body.error) return body.error;
    } catch {
      // Not a JSON error body (a proxy in between, say): the status will do.
    }
    return `HTTP ${res.status}`;
  }

  function notFound(err) {
    if (err instanceof ApiError && err.status === 404) return MISSING;
    throw err;
  }

  async function fetchLogs(path) {
    try {
      const res = await api("GET", path, "application/x-ndjson");
      return { text: await res.text() };
    } catch (err) {
      if (err instanceof AuthError) throw err;
      if (err instanceof ApiError && err.status === 404) return { text: "" };
      return { error: err.message };
    }
  }

  // -- signing in and out

  function showLogin(message = "", detail = "") {
    clearTimeout(ui.timer);
    $("app-view").hidden = true;
    $("logout").hidden = true;
    $("live").hidden = true;
    $("login-view").hidden = false;
    const error = $("login-error");
    error.hidden = !message;
    error.replaceChildren(el("span", { text: message }));
    if (detail) error.append(el("span", { class: "error-detail", text: detail }));
    const input = $("token");
    input.focus();
    input.select();
  }

  function signOut(message = "", detail = "") {
    ui.generation++;
    sessionStorage.removeItem(TOKEN_KEY);
    Object.assign(ui, { token: "", app: null, machine: null });
    ui.busy.clear();
    $("apps").replaceChildren();
    ui.appItems.clear();
    clearMachines();
    hideBanner();
    history.replaceState(null, "", location.pathname);
    showLogin(message, detail);
  }

  function tokenRefused(err) {
    signOut("The server no longer accepts this token. Sign in again.", err.message);
  }

  async function login(event) {
    event.preventDefault();
    const input = $("token");
    const submit = $("login-submit");
    const token = input.value.trim();
    if (!token) {
      showLogin("Enter the API token.");
      return;
    }
    submit.disabled = true;
    submit.setAttribute("aria-busy", "true");
    ui.token = token;
    try {
      await api("GET", "/v1/apps");
    } catch (err) {
      ui.token = "";
      if (err instanceof AuthError) showLogin("That token was not accepted.", err.message);
      else showLogin("Could not sign in.", err.message);
      return;
    } finally {
      submit.disabled = false;
      submit.removeAttribute("aria-busy");
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    enterDashboard();
  }

  function enterDashboard() {
    $("login-view").hidden = true;
    $("login-error").hidden = true;
    $("app-view").hidden = false;
    $("logout").hidden = false;
    // The selection lives in the URL fragment, so a reload or a shared link keeps it.
    const params = new URLSearchParams(location.hash.slice(1));
    ui.app = params.get("app");
    ui.machine = ui.app ? params.get("machine") : null;
    showAppHeader();
    setPlaceholder(ui.app ? "Loading machines…" : "");
    refreshNow();
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (ui.app) params.set("app", ui.app);
    if (ui.machine) params.set("machine", ui.machine);
    const hash = params.toString();
    history.replaceState(null, "", hash ? `#${hash}` : location.pathname);
  }

  // -- polling: one request chain at a time; a new one starts on every change.

  function refreshNow() {
    ui.generation++;
    clearTimeout(ui.timer);
    return tick();
  }

  async function tick() {
    const generation = ui.generation;
    if (!document.hidden) {
      try {
        await refresh(generation);
        if (generation === ui.generation) setLive("");
      } catch (err) {
        if (generation !== ui.generation) return;
        if (err instanceof AuthError) {
          tokenRefused(err);
          return;
        }
        setLive(err.message);
      }
    }
    if (generation === ui.generation) ui.timer = setTimeout(tick, POLL_MS);
  }

  async function refresh(generation) {
    const { app, machine } = ui;
    const base = app ? `/v1/apps/${enc(app)}/machines` : "";
    const one = machine ? `${base}/${enc(machine)}` : "";
    const [apps, machines, events, logs] = await Promise.all([
      api("GET", "/v1/apps").then((res) => res.json()),
      app ? api("GET", base).then((res) => res.json(), notFound) : null,
      machine
        ? api("GET", `${one}/events?limit=${EVENT_LIMIT}`).then((res) => res.json(), notFound)
        : null,
      machine ? fetchLogs(`${one}/logs?follow=false&limit=${LOG_LIMIT}`) : null,
    ]);
    if (generation !== ui.generation) return;
    renderApps(apps.apps || []);
    if (!app) return;
    if (machines === MISSING) {
      ui.app = null;
      ui.machine = null;
      writeHash();
      clearMachines();
      showAppHeader();
      showBanner(`The app ${app} no longer exists.`);
      return;
    }
    renderMachines(machines);
    if (ui.machine && events !== MISSING) renderDetail(events, logs);
  }

  function setLive(error) {
    const live = $("live");
    live.hidden = false;
    if (error) {
      live.dataset.state = "error";
      setText(live, `Not updating: ${error}. Retrying…`);
    } else {
      live.dataset.state = "ok";
      setText(live, `Live · updated ${clock(new Date())}`);
    }
  }

  // -- apps

  function renderApps(apps) {
    apps.sort((a, b) => a.name.localeCompare(b.name));
    const list = $("apps");
    const keep = new Set();
    let prev = null;
    for (const app of apps) {
      keep.add(app.name);
      const item = ui.appItems.get(app.name) || appItem(app.name);
      place(list, item, prev);
      prev = item;
      const button = item.firstChild;
      setText(button.lastChild, String(app.machine_count));
      setAttr(button, "title", `${app.name}: ${plural(app.machine_count, "machine")}`);
      setAttr(button, "aria-current", app.name === ui.app ? "true" : null);
    }
    for (const [name, item] of ui.appItems) {
      if (!keep.has(name)) {
        item.remove();
        ui.appItems.delete(name);
      }
    }
    $("apps-empty").hidden = apps.length > 0;
    if (!ui.app) setPlaceholder(apps.length ? "Choose an app to see its machines." : "");
  }

  function appItem(name) {
    const button = el(
      "button",
      { type: "button", class: "app", "data-testid": "app", "data-app": name },
      el("span", { class: "app-name", text: name }),
      el("span", { class: "count" }),
    );
    button.addEventListener("click", () => selectApp(name));
    const item = el("li", {}, button);
    ui.appItems.set(name, item);
    return item;
  }

  function selectApp(name) {
    if (name === ui.app) return;
    ui.app = name;
    ui.machine = null;
    writeHash();
    clearMachines();
    for (const button of $("apps").querySelectorAll(".app")) {
      setAttr(button, "aria-current", button.dataset.app === name ? "true" : null);
    }
    hideBanner();
    showAppHeader();
    setPlaceholder("Loading machines…");
    refreshNow();
  }

  function showAppHeader() {
    setText($("app-title"), ui.app || "Machines");
    setText($("app-meta"), "");
  }

  // What the main column says instead of a machine list (nothing when empty).
  function setPlaceholder(text) {
    const placeholder = $("placeholder");
    setText(placeholder, text);
    placeholder.hidden = !text;
  }

  // -- machines, grouped by region, then by state

  function clearMachines() {
    $("groups").replaceChildren();
    ui.rows.clear();
    ui.machines.clear();
    hideDetail();
  }

  function rank(state) {
    const i = STATE_ORDER.indexOf(state);
    return i < 0 ? STATE_ORDER.length : i;
  }

  function groupBy(items, key) {
    const groups = new Map();
    for (const item of items) {
      const k = key(item);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(item);
    }
    return groups;
  }

  function renderMachines(list) {
    ui.machines = new Map(list.map((m) => [m.id, m]));
    const root = $("groups");
    const seenRegions = new Set();
    const seenGroups = new Set();
    const byRegion = groupBy(list, (m) => m.region || "unknown");
    let prevRegion = null;
    for (const region of [...byRegion.keys()].sort()) {
      const inRegion = byRegion.get(region);
      seenRegions.add(region);
      const section =
        root.querySelector(`:scope > [data-region="${CSS.escape(region)}"]`) ||
        regionSection(region);
      place(root, section, prevRegion);
      prevRegion = section;
      setText(section.querySelector(".region-count"), plural(inRegion.length, "machine"));
      const table = section.querySelector("table");
      const byState = groupBy(inRegion, (m) => m.state);
      let prevGroup = table.tHead;
      const states = [...byState.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
      for (const state of states) {
        const machines = byState.get(state);
        seenGroups.add(`${region}\n${state}`);
        const group =
          table.querySelector(`:scope > tbody[data-state="${CSS.escape(state)}"]`) ||
          stateGroup(state);
        place(table, group, prevGroup);
        prevGroup = group;
        setText(group.querySelector(".group-count"), String(machines.length));
        machines.sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
        let prevRow = group.firstChild;
        for (const machine of machines) {
          const row = ui.rows.get(machine.id) || machineRow(machine.id);
          updateRow(row, machine);
          place(group, row, prevRow);
          prevRow = row;
        }
      }
    }
    for (const [id, row] of ui.rows) {
      if (!ui.machines.has(id)) {
        row.remove();
        ui.rows.delete(id);
      }
    }
    for (const group of root.querySelectorAll("tbody[data-state]")) {
      const region = group.closest("[data-region]").dataset.region;
      if (!seenGroups.has(`${region}\n${group.dataset.state}`)) group.remove();
    }
    for (const section of [...root.children]) {
      if (!seenRegions.has(section.dataset.region)) section.remove();
    }

    const started = list.filter((m) => m.state === "started").length;
    setText(
      $("app-meta"),
      list.length ? `${plural(list.length, "machine")} · ${started} started` : "",
    );
    setPlaceholder(list.length ? "" : "No machines in this app yet.");

    if (ui.machine && !ui.machines.has(ui.machine)) selectMachine(null);
  }

  function regionSection(region) {
    // The actions need no visible heading; screen readers still get one.
    const heading = (label) =>
      label === "Actions"
        ? el("th", { scope: "col" }, el("span", { class: "visually-hidden", text: label }))
        : el("th", { scope: "col", text: label });
    const head = el("tr", {}, ...COLUMNS.map(heading));
    const table = el("table", { class: "machines" }, el("thead", {}, head));
    return el(
      "section",
      { class: "region card", "data-region": region, "data-testid": "region" },
      el(
        "h3",
        { class: "region-head" },
        el("span", { class: "eyebrow", text: "Region" }),
        el("span", { text: region }),
        el("span", { class: "region-count" }),
      ),
      el("div", { class: "table-scroll" }, table),
    );
  }

  function stateGroup(state) {
    const title = el(
      "th",
      { colspan: String(COLUMNS.length), scope: "rowgroup" },
      el("span", { class: `pill state-${state}`, text: state }),
      el("span", { class: "group-count" }),
    );
    return el(
      "tbody",
      { "data-state": state, "data-testid": "state-group" },
      el("tr", { class: "group-row" }, title),
    );
  }

  function machineRow(id) {
    const cell = (name, label, ...children) =>
      el("td", { class: `c-${name}`, "data-label": label }, ...children);
    const select = el(
      "button",
      { type: "button", class: "machine-select", "data-testid": "machine-select" },
      el("span", { class: "name" }),
      el("span", { class: "mid mono", text: id }),
    );
    const start = el("button", {
      type: "button", class: "btn small start", "data-testid": "machine-start", text: "Start",
    });
    const stop = el("button", {
      type: "button", class: "btn small stop", "data-testid": "machine-stop", text: "Stop",
    });
    const row = el(
      "tr",
      { class: "machine", "data-testid": "machine", "data-machine-id": id },
      cell("machine", "Machine", select),
      cell(
        "state",
        "State",
        el("span", { class: "pill", "data-testid": "machine-state" }),
        el("span", {
          class: "badge cordoned", "data-testid": "machine-cordoned", text: "cordoned", hidden: "",
        }),
      ),
      cell("image", "Image", el("span", { class: "image mono" })),
      cell("ip", "Private IP", el("span", { class: "ip mono" })),
      cell("health", "Health", el("span", { class: "health", "data-testid": "machine-health" })),
      cell("version", "Version", el("span", { class: "version mono" })),
      cell("actions", "Actions", el("div", { class: "actions" }, start, stop)),
    );
    start.addEventListener("click", () => act(id, "start"));
    stop.addEventListener("click", () => act(id, "stop"));
    // The whole row selects, for the mouse; the name is the button for the keyboard.
    row.addEventListener("click", (event) => {
      if (!event.target.closest(".actions")) selectMachine(id);
    });
    ui.rows.set(id, row);
    return row;
  }

  function imageText(m) {
    const ref = m.image_ref || {};
    if (!ref.repository) {
      // Not pulled yet: only the configured reference is known. Drop its registry
      // host (a first part with a dot, a port or "localhost") as for pulled images.
      const configured = (m.config && m.config.image) || "";
      const [first, ...rest] = configured.split("/");
      const hosted = rest.length > 0 && (/[.:]/.test(first) || first === "localhost");
      return { short: (hosted ? rest.join("/") : configured) || "—", full: configured };
    }
    const short = `${ref.repository}:${ref.tag || "latest"}`;
    const registry = ref.registry ? `${ref.registry}/` : "";
    return { short, full: `${registry}${short}${ref.digest ? `@${ref.digest}` : ""}` };
  }

  function updateRow(row, m) {
    const name = m.name || m.id;
    setText(row.querySelector(".name"), name);
    const state = row.querySelector('[data-testid="machine-state"]');
    setText(state, m.state);
    setClass(state, `pill state-${m.state}${TRANSIENT.has(m.state) ? " transient" : ""}`);
    row.querySelector(".cordoned").hidden = !m.cordoned;
    const image = imageText(m);
    const imageNode = row.querySelector(".image");
    setText(imageNode, image.short);
    setAttr(imageNode, "title", image.full || null);
    setText(row.querySelector(".ip"), m.private_ip || "—");
    renderHealth(row.querySelector(".health"), m.checks || []);
    const version = row.querySelector(".version");
    // ULIDs start with their timestamp; the random tail tells versions apart.
    setText(version, m.version ? `…${m.version.slice(-8)}` : "—");
    setAttr(version, "title", m.version || null);
    paintSelection(row, m.id === ui.machine);
    paintButtons(row, m);
  }

  function renderHealth(node, checks) {
    const counts = { passing: 0, warning: 0, critical: 0 };
    for (const check of checks) {
      if (check.status in counts) counts[check.status]++;
    }
    const key = JSON.stringify(checks.map((c) => [c.name, c.status]));
    if (node.dataset.key === key) return;
    node.dataset.key = key;
    const badges = Object.entries(counts)
      .filter(([, n]) => n > 0)
      .map(([status, n]) => el("span", { class: `badge ${status}`, text: `${n} ${status}` }));
    if (!badges.length) badges.push(el("span", { class: "badge none", text: "no checks" }));
    node.replaceChildren(...badges);
    setAttr(node, "title", checks.map((c) => `${c.name}: ${c.status}`).join("\n") || null);
  }

  function paintSelection(row, selected) {
    row.classList.toggle("selected", selected);
    setAttr(row.querySelector(".machine-select"), "aria-current", selected ? "true" : null);
  }

  function paintButtons(row, m) {
    const busy = ui.busy.has(m.id);
    const name = m.name || m.id;
    const start = row.querySelector('[data-testid="machine-start"]');
    const stop = row.querySelector('[data-testid="machine-stop"]');
    start.disabled = busy || !STARTABLE.has(m.state);
    stop.disabled = busy || !STOPPABLE.has(m.state);
    for (const [button, verb] of [[start, "Start"], [stop, "Stop"]]) {
      setAttr(button, "aria-label", `${verb} ${name}`);
      setAttr(button, "aria-busy", busy ? "true" : null);
    }
  }

  // Start or stop: the buttons stay disabled until the request is answered and one
  // poll has shown its effect; the state itself then follows through polling.
  async function act(id, action) {
    const app = ui.app;
    const machine = ui.machines.get(id);
    if (!app || !machine || ui.busy.has(id)) return;
    ui.busy.add(id);
    paintButtons(ui.rows.get(id), machine);
    hideBanner();
    try {
      await api("POST", `/v1/apps/${enc(app)}/machines/${enc(id)}/${action}`);
    } catch (err) {
      if (err instanceof AuthError) {
        tokenRefused(err);
        return;
      }
      showBanner(`Could not ${action} ${machine.name || id}: ${err.message}`);
    }
    try {
      await refreshNow();
    } finally {
      ui.busy.delete(id);
      const row = ui.rows.get(id);
      if (row && ui.machines.has(id)) paintButtons(row, ui.machines.get(id));
    }
  }

  function showBanner(message) {
    setText($("banner-text"), message);
    $("banner").hidden = false;
  }

  function hideBanner() {
    $("banner").hidden = true;
  }

  // -- the selected machine: facts, events, logs

  function selectMachine(id) {
    if (id === ui.machine) return;
    ui.machine = id;
    writeHash();
    for (const [rowId, row] of ui.rows) paintSelection(row, rowId === id);
    hideDetail();
    if (!id) return;
    openDetail();
    renderFacts(ui.machines.get(id));
    refreshNow();
  }

  function openDetail() {
    $("detail").hidden = false;
    $("app-view").classList.add("has-detail");
  }

  // Also empties the panel, so the next machine shown never starts with the last one's.
  function hideDetail() {
    $("detail").hidden = true;
    $("app-view").classList.remove("has-detail");
    ui.eventsKey = null;
    ui.logsKey = null;
    $("events").replaceChildren(placeholderRow("Loading events…"));
    $("logs").replaceChildren(el("p", { class: "empty", text: "Loading logs…" }));
  }

  function placeholderRow(text) {
    return el("tr", {}, el("td", { colspan: "5", class: "muted", text }));
  }

  function renderDetail(events, logs) {
    openDetail();
    renderFacts(ui.machines.get(ui.machine));
    renderEvents(events || []);
    renderLogs(logs || { text: "" });
  }

  function renderFacts(m) {
    if (!m) return;
    setText($("detail-title"), m.name || m.id);
    setText($("detail-id"), m.id);
    const state = $("detail-state");
    setText(state, m.state);
    setClass(state, `pill state-${m.state}${TRANSIENT.has(m.state) ? " transient" : ""}`);
    const image = imageText(m);
    const facts = {
      region: m.region || "—",
      image: image.full || image.short,
      ip: m.private_ip || "—",
      version: m.version || "—",
      cordoned: m.cordoned ? "yes" : "no",
      host: m.host_status || "—",
      created: m.created_at || "—",
      updated: m.updated_at || "—",
    };
    for (const [key, value] of Object.entries(facts)) setText($(`fact-${key}`), value);
  }

  function exitText(exit) {
    const parts = [`exit ${exit.exit_code}`];
    if (exit.signal > 0) parts.push(`signal ${exit.signal}`);
    if (exit.oom_killed) parts.push("OOM killed");
    if (exit.requested_stop) parts.push("requested");
    return parts.join(", ");
  }

  function eventDetails(event) {
    const request = event.request || {};
    if (request.exit_event) return exitText(request.exit_event);
    return event.message || "";
  }

  function renderEvents(events) {
    const key = events.map((e) => e.id).join(",");
    if (key === ui.eventsKey) return;
    ui.eventsKey = key;
    const body = $("events");
    if (!events.length) {
      body.replaceChildren(placeholderRow("No events yet."));
      return;
    }
    // The API already answers newest first.
    body.replaceChildren(
      ...events.map((event) => {
        const when = new Date(event.timestamp);
        return el(
          "tr",
          { "data-testid": "event", "data-event-type": event.type },
          el("td", { class: "when mono", title: when.toISOString(), text: clock(when) }),
          el("td", { text: event.type }),
          el("td", { text: event.status }),
          el("td", { class: "muted", text: event.source }),
          el("td", { class: "mono", "data-testid": "event-details", text: eventDetails(event) }),
        );
      }),
    );
  }

  function renderLogs(logs) {
    const box = $("logs");
    const key = logs.error ? `error:${logs.error}` : logs.text;
    if (key === ui.logsKey) return;
    // Follow the tail only if the reader is already there (or it is the first paint).
    const follow =
      ui.logsKey === null || box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    ui.logsKey = key;
    if (logs.error) {
      box.replaceChildren(el("p", { class: "empty", text: `Logs unavailable: ${logs.error}` }));
      return;
    }
    const entries = [];
    for (const line of logs.text.split("\n")) {
      if (!line.trim()) continue;
      try {
        entries.push(JSON.parse(line));
      } catch {
        // A line cut short mid-write: the next poll shows it whole.
      }
    }
    if (!entries.length) {
      const empty = el("p", { class: "empty", "data-testid": "logs-empty", text: "No logs yet." });
      box.replaceChildren(empty);
      return;
    }
    box.replaceChildren(
      ...entries.map((entry) => {
        const known = ["stdout", "stderr", "event"].includes(entry.stream);
        const stream = known ? entry.stream : "stdout";
        return el(
          "div",
          { class: `line ${stream}` },
          el("span", { class: "ts", text: clock(new Date(entry.timestamp), true) }),
          el("span", { class: "stream", text: stream }),
          el("span", { class: "msg", text: String(entry.message ?? "") }),
        );
      }),
    );
    if (follow) box.scrollTop = box.scrollHeight;
  }

  // -- wiring

  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => signOut());
  $("banner-close").addEventListener("click", hideBanner);
  $("detail-close").addEventListener("click", () => selectMachine(null));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && ui.token) refreshNow();
  });
  if (ui.token) enterDashboard();
  else showLogin();
})();
"""

MARKUP = r"""
<header class="topbar">
  <div class="brand"><span class="logo" aria-hidden="true"></span>roost
    <span class="sub">machines</span></div>
  <div id="live" class="live" data-testid="live-status" hidden></div>
  <button id="logout" type="button" class="btn" data-testid="logout" hidden>Log out</button>
</header>

<main id="login-view" class="login-view" hidden>
  <form id="login-form" class="card login" data-testid="login-form" novalidate>
    <h1>Sign in</h1>
    <p class="muted">Paste an API token for this server. The admin token is saved in
      <code>DATA/admin-token</code> (by default <code>/var/lib/roost/admin-token</code>).</p>
    <label for="token">API token</label>
    <input id="token" name="token" type="password" autocomplete="off" spellcheck="false"
      required data-testid="token-input">
    <p id="login-error" class="form-error" role="alert" data-testid="login-error" hidden></p>
    <button id="login-submit" type="submit" class="btn primary" data-testid="login-submit">
      Sign in</button>
  </form>
</main>

<noscript><p class="placeholder">The dashboard needs JavaScript.</p></noscript>

<div id="app-view" class="layout" hidden>
  <nav class="sidebar" aria-labelledby="apps-heading">
    <h2 id="apps-heading" class="eyebrow">Apps</h2>
    <ul id="apps" class="app-list" data-testid="apps"></ul>
    <p id="apps-empty" class="muted" hidden>No apps yet: create one with
      <code>roost apps create NAME</code>.</p>
  </nav>

  <main class="main" aria-labelledby="app-title">
    <div id="banner" class="banner" role="alert" data-testid="error" hidden>
      <span id="banner-text" class="banner-text"></span>
      <button id="banner-close" type="button" class="icon-btn" aria-label="Dismiss">&times;</button>
    </div>
    <div class="section-head">
      <h2 id="app-title">Machines</h2>
      <p id="app-meta" class="muted"></p>
    </div>
    <div id="groups" data-testid="machines"></div>
    <p id="placeholder" class="placeholder card" hidden></p>
  </main>

  <aside id="detail" class="detail card" aria-labelledby="detail-title" data-testid="detail"
    hidden>
    <div class="detail-head">
      <div>
        <span class="eyebrow">Machine</span>
        <h2 id="detail-title"></h2>
        <div><span id="detail-state" class="pill"></span>
          <span id="detail-id" class="mono muted"></span></div>
      </div>
      <button id="detail-close" type="button" class="icon-btn"
        aria-label="Close machine details">&times;</button>
    </div>
    <dl class="facts">
      <dt>Region</dt><dd id="fact-region"></dd>
      <dt>Image</dt><dd id="fact-image" class="mono"></dd>
      <dt>Private IP</dt><dd id="fact-ip" class="mono"></dd>
      <dt>Version</dt><dd id="fact-version" class="mono"></dd>
      <dt>Cordoned</dt><dd id="fact-cordoned"></dd>
      <dt>Host</dt><dd id="fact-host"></dd>
      <dt>Created</dt><dd id="fact-created"></dd>
      <dt>Updated</dt><dd id="fact-updated"></dd>
    </dl>
    <section aria-labelledby="events-heading">
      <h3 id="events-heading">Events <span class="muted">newest first</span></h3>
      <table class="events">
        <thead><tr><th scope="col">Time</th><th scope="col">Event</th>
          <th scope="col">Status</th><th scope="col">Source</th>
          <th scope="col">Details</th></tr></thead>
        <tbody id="events" data-testid="events"></tbody>
      </table>
    </section>
    <section aria-labelledby="logs-heading">
      <h3 id="logs-heading">Logs <span class="muted">last 200 lines</span></h3>
      <div id="logs" class="logs" role="log" tabindex="0" aria-labelledby="logs-heading"
        data-testid="logs"></div>
    </section>
  </aside>
</div>
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>roost dashboard</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
{MARKUP}
<script>{SCRIPT}</script>
</body>
</html>
"""
