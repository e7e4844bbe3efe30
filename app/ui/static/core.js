// The dashboard's scripts (loaded in order by base.html: core, charts, tables, pages) read the JSON
// API (with the session's API key when one is needed) and draw charts as inline SVG. No
// dependencies, no network beyond this service. This one: API access and DOM helpers.
"use strict";

const KEY = "ctrw-api-key";
const POLL_MS = 2000;
const ACTIVE = new Set(["queued", "waiting", "running"]);

// ------------------------------------------------------------------ API access

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const resp = await fetch(path, Object.assign({}, opts, { headers }));
  if (resp.status === 401) {
    // Keys are required: ask once per browser session, then retry with it.
    const entered = window.prompt(key ? "That API key was refused. API key:" : "This service needs an API key:");
    if (entered) {
      sessionStorage.setItem(KEY, entered.trim());
      showAuth();
      return api(path, opts);
    }
  }
  return resp;
}

async function getJSON(path) {
  const resp = await api(path);
  const body = await resp.json().catch(() => null);
  return { ok: resp.ok, status: resp.status, body };
}

function showAuth() {
  const el = document.getElementById("auth-state");
  if (el) el.textContent = sessionStorage.getItem(KEY) ? "API key set for this session" : "";
}

function showError(msg) {
  const el = document.getElementById("error");
  if (!el) return;
  el.hidden = !msg;
  el.textContent = msg || "";
}

// ------------------------------------------------------------------ helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

const pct = (x, digits = 1) => (x === null || x === undefined ? "" : (100 * x).toFixed(digits));
const fmt = (x, digits = 2) => (x === null || x === undefined ? "" : Number(x).toFixed(digits));

function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function progressCell(p) {
  if (!p) return "";
  const percent = p.percent === null || p.percent === undefined ? null : p.percent;
  const label = p.phase + (p.epochs ? ` ${p.epoch}/${p.epochs}` : "") + (percent !== null ? ` ${percent.toFixed(0)}%` : "");
  return h("span", {}, h("span", { class: "bar" }, h("span", { style: `width:${percent || 0}%` })), " ", label);
}

const jobLink = (id) => h("a", { href: "/ui/jobs/" + id }, h("code", {}, id.slice(0, 8)));
const statusBadge = (s) => h("span", { class: "status " + s }, s);

