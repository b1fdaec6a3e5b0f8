// fastgate dashboard, shared parts: DOM helpers, number formats, the admin API
// client and the view state (range, time buckets, tag). Vanilla JS, nothing
// remote, no build step. Every value from the server is written with
// textContent (el/svg below), never as HTML.
"use strict";

window.FG = (function () {
  const TOKEN_KEY = "fastgate.adminToken";
  const SVG_NS = "http://www.w3.org/2000/svg";
  // The API lives beside the dashboard: /dashboard/ -> /admin/ (prefix kept behind a proxy).
  const BASE = location.pathname.replace(/\/dashboard(\/.*)?$/, "").replace(/\/$/, "");
  const API = BASE + "/admin";

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ------------------------------------------------------------------ formatting

  const nf = new Intl.NumberFormat("en-US");
  const num = (n) => (n === null || n === undefined ? "–" : nf.format(n));
  function compact(n) {
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n * 100) / 100);
  }
  // Dollars on a chart axis: enough digits to tell the ticks apart.
  function money(v) {
    if (v === 0) return "$0";
    if (Math.abs(v) >= 100) return "$" + compact(v);
    if (Math.abs(v) >= 1) return "$" + v.toFixed(2);
    return "$" + Number(v.toPrecision(2));
  }
  // Money arrives as integer micro-dollars; shown in USD with every digit it has
  // (at least two decimals): the CLI's rule (fastgate/cli/render.py usd), so a
  // cost reads the same in a table and on this page (1234567 -> "$1.234567").
  function usd(micros) {
    const m = Math.abs(Math.trunc(Number(micros) || 0));
    const sign = Number(micros) < 0 ? "-" : "";
    let frac = String(m % 1e6).padStart(6, "0").replace(/0+$/, "");
    if (frac.length < 2) frac = frac.padEnd(2, "0");
    return sign + "$" + Math.floor(m / 1e6) + "." + frac;
  }
  const ms = (v) => (v === null || v === undefined ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(1));
  const pct = (v) => (v * 100).toFixed(v && v < 0.1 ? 2 : 1) + "%";
  const iso = (ts) => new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  function duration(s) {
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }
  // A bucket start as an axis label (UTC): minutes and hours by clock time, days by date.
  function when(ts, bucket, span) {
    const t = new Date(ts * 1000).toISOString();
    if (bucket === "day") return t.slice(5, 10);
    if (bucket === "hour" && span > 86400) return t.slice(5, 10) + " " + t.slice(11, 13) + "h";
    return t.slice(11, 16);
  }

  // ------------------------------------------------------------------ API

  const token = () => localStorage.getItem(TOKEN_KEY) || "";
  const setToken = (v) => (v ? localStorage.setItem(TOKEN_KEY, v) : localStorage.removeItem(TOKEN_KEY));

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ "Authorization": "Bearer " + token() }, opts.headers);
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      opts.headers["Content-Type"] = "application/json";
      delete opts.json;
    }
    const resp = await fetch(API + path, opts);
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const msg = body && body.error ? body.error.message : resp.status + " " + resp.statusText;
      const err = new Error(msg);
      err.status = resp.status;
      err.fields = body && body.error ? body.error.fields : undefined;
      throw err;
    }
    return body;
  }

  function say(text, kind) {
    const m = $("message");
    if (!text) { m.hidden = true; return; }
    m.textContent = text;
    m.className = "message" + (kind ? " " + kind : "");
    m.hidden = false;
  }

  // ------------------------------------------------------------------ view state

  // Buckets by range: minutes up to 6 hours (a 1-hour range is 60 points),
  // hours up to 7 days, then days. xs: every bucket start of the range, the
  // current bucket last; the API is asked from xs[0].
  const STEPS = { minute: 60, hour: 3600, day: 86400 };
  function windowFor(span, now) {
    const bucket = span <= 6 * 3600 ? "minute" : span <= 7 * 86400 ? "hour" : "day";
    const step = STEPS[bucket];
    const n = Math.max(1, Math.round(span / step));
    const last = Math.floor(now / step) * step;
    const xs = [];
    for (let i = n - 1; i >= 0; i--) xs.push(last - i * step);
    return { span, bucket, step, since: xs[0], xs };
  }

  function current() {
    const span = Number($("range").value);
    const w = windowFor(span, Date.now() / 1000);
    w.tag = $("tag").value.trim();
    return w;
  }

  // ?since=...&tag=... for the current state (tag only when set).
  function query(w, extra) {
    const q = new URLSearchParams(Object.assign({ since: String(w.since) }, extra || {}));
    if (w.tag) q.set("tag", w.tag);
    return q.toString();
  }

  return {
    $, el, svg, num, compact, money, usd, ms, pct, iso, duration, when,
    token, setToken, api, say, windowFor, current, query, STEPS,
  };
})();
