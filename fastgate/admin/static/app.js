// fastgate dashboard: vanilla JS, inline SVG charts, no build step, nothing remote.
// It reads the admin API with the token pasted by the user (kept in localStorage).
// Every value from the server is written with textContent, never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "fastgate.adminToken";
  const SVG = "http://www.w3.org/2000/svg";
  // The API lives beside the dashboard: /dashboard/ -> /admin/ (prefix kept behind a proxy).
  const BASE = location.pathname.replace(/\/dashboard(\/.*)?$/, "").replace(/\/$/, "");
  const API = BASE + "/admin";
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ------------------------------------------------------------------ formatting

  const nf = new Intl.NumberFormat();
  function num(n) { return nf.format(n); }
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
  // Money arrives as integer micro-dollars; shown in USD.
  function usd(micros) {
    const v = micros / 1e6;
    if (v === 0) return "$0";
    if (Math.abs(v) < 0.01) return "$" + v.toFixed(6);
    return "$" + v.toFixed(2);
  }
  function when(ts, bucket) {
    const d = new Date(ts * 1000);
    if (bucket === "day") return d.toISOString().slice(5, 10);
    return d.toISOString().slice(11, 16);
  }

  // ------------------------------------------------------------------ API

  function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ "Authorization": "Bearer " + token() }, opts.headers);
    const resp = await fetch(API + path, opts);
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const msg = body && body.error ? body.error.message : resp.status + " " + resp.statusText;
      const err = new Error(msg);
      err.status = resp.status;
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

  // ------------------------------------------------------------------ charts

  // series: [{cls, values}] over the same x (bucket starts); fmt formats y ticks.
  function lineChart(host, xs, series, fmt, bucket) {
    const W = 600, H = 180, L = 48, R = 8, T = 8, B = 22;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const max = Math.max(0, ...series.flatMap((s) => s.values));
    root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    if (!xs.length || max === 0) {
      root.append(svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data in this range"));
      host.replaceChildren(root);
      return;
    }
    const top = niceMax(max);
    const x = (i) => L + (xs.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (xs.length - 1));
    const y = (v) => H - B - (v / top) * (H - B - T);
    for (let k = 0; k <= 4; k++) {
      const v = (top * k) / 4;
      if (k) root.append(svg("line", { class: "axis", x1: L, y1: y(v), x2: W - R, y2: y(v), opacity: 0.5 }));
      root.append(svg("text", { class: "tick", x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v)));
    }
    const every = Math.max(1, Math.ceil(xs.length / 8));
    xs.forEach((t, i) => {
      if (i % every === 0) {
        root.append(svg("text", { class: "tick", x: x(i), y: H - 6, "text-anchor": "middle" }, when(t, bucket)));
      }
    });
    for (const s of series) {
      const pts = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      if (s.area) {
        const area = `M${x(0)},${y(0)} L${pts.join(" L")} L${x(xs.length - 1)},${y(0)} Z`;
        root.append(svg("path", { class: "area " + s.cls, d: area }));
      }
      root.append(svg("polyline", { class: "line " + s.cls, points: pts.join(" ") }));
    }
    // Hover targets with native tooltips: one column per bucket.
    const colW = (W - L - R) / Math.max(1, xs.length);
    xs.forEach((t, i) => {
      const label = new Date(t * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC\n" +
        series.map((s) => `${s.name}: ${s.fmt ? s.fmt(s.values[i]) : num(s.values[i])}`).join("\n");
      const r = svg("rect", { class: "hit", x: x(i) - colW / 2, y: T, width: colW, height: H - B - T });
      r.append(svg("title", {}, label));
      root.append(r);
    });
    host.replaceChildren(root);
  }

  function niceMax(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function barCell(value, max) {
    const td = el("td", { class: "bar" });
    const s = svg("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none" });
    s.append(svg("rect", { x: 0, y: 1, height: 8, width: max > 0 ? Math.max(0.5, (100 * value) / max) : 0 }));
    td.append(s);
    return td;
  }

  // ------------------------------------------------------------------ tables

  const USAGE_COLS = [
    ["requests", "Requests", num],
    ["errors", "Errors", num],
    ["prompt_tokens", "Prompt", num],
    ["completion_tokens", "Completion", num],
    ["cost_micros", "Cost", usd],
  ];

  function usageTable(table, label, field, rows) {
    const head = el("tr", {}, el("th", {}, label));
    for (const [, title] of USAGE_COLS) head.append(el("th", { class: "num" }, title));
    head.append(el("th", {}, "Share of cost"));
    const body = [head];
    const max = Math.max(0, ...rows.map((r) => r.cost_micros));
    if (!rows.length) body.push(el("tr", {}, el("td", { class: "empty", colspan: USAGE_COLS.length + 2 }, "no requests in this range")));
    for (const r of rows) {
      const tr = el("tr", {}, el("td", {}, r[field] === "" ? el("span", { class: "muted" }, "(none)") : r[field]));
      for (const [k, , f] of USAGE_COLS) tr.append(el("td", { class: "num" }, f(r[k])));
      tr.append(barCell(r.cost_micros, max));
      body.push(tr);
    }
    table.replaceChildren(...body);
  }

  function channelTable(table, status) {
    const breakers = status.breakers || {};
    const head = el("tr", {}, ...["Channel", "Type", "Source", "State", "Priority", "Weight", "Breakers", "Probe"]
      .map((h) => el("th", {}, h)));
    const rows = [head];
    const channels = status.channels || [];
    if (!channels.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 8 }, "no channels")));
    for (const c of channels) {
      const pills = el("td", {});
      for (const m of c.models || []) {
        const b = breakers[c.name + "/" + m];
        const state = b ? b.state : "closed";
        const pill = el("span", { class: "pill " + state, title: b ? `${state}, ${b.failures} failures` : "no failures seen" }, m);
        pills.append(pill);
      }
      const result = el("span", {});
      const button = el("button", { type: "button", onclick: () => probe(c.name, button, result) }, "Test");
      rows.push(el("tr", {},
        el("td", {}, c.name),
        el("td", {}, c.type),
        el("td", {}, c.source || ""),
        el("td", {}, el("span", { class: "pill " + (c.enabled ? "on" : "off") }, c.enabled ? "enabled" : "disabled")),
        el("td", { class: "num" }, c.priority),
        el("td", { class: "num" }, c.weight),
        pills,
        el("td", {}, button, " ", result)));
    }
    table.replaceChildren(...rows);
  }

  async function probe(name, button, out) {
    button.disabled = true;
    out.textContent = "…";
    out.className = "muted";
    try {
      const r = await api("/channels/" + encodeURIComponent(name) + "/test", { method: "POST" });
      out.textContent = r.ok ? `ok ${r.status} in ${Math.round(r.latency_ms)} ms` : `failed: ${r.status || ""} ${r.error || ""}`;
      out.className = r.ok ? "probe-ok" : "probe-bad";
    } catch (e) {
      out.textContent = "failed: " + e.message;
      out.className = "probe-bad";
    } finally {
      button.disabled = false;
    }
  }

  function cards(totals) {
    const items = [
      ["Requests", num(totals.requests)],
      ["Errors", num(totals.errors)],
      ["Prompt tokens", compact(totals.prompt_tokens)],
      ["Completion tokens", compact(totals.completion_tokens)],
      ["Cached tokens", compact(totals.cached_tokens)],
      ["Cost", usd(totals.cost_micros)],
    ];
    $("totals").replaceChildren(...items.map(([label, value]) =>
      el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value))));
  }

  // ------------------------------------------------------------------ refresh

  async function refresh() {
    if (!token()) {
      say("Paste the admin token (the [admin] token of the gateway) to load the dashboard.", "info");
      return;
    }
    const span = Number($("range").value);
    const bucket = span <= 2 * 86400 ? "hour" : "day";
    const step = bucket === "hour" ? 3600 : 86400;
    const now = Date.now() / 1000;
    const since = Math.floor((now - span) / step) * step;
    const q = "since=" + since;
    try {
      const [series, byKey, byChannel, byModel, status] = await Promise.all([
        api(`/usage?bucket=${bucket}&${q}`),
        api(`/usage?group_by=key&${q}`),
        api(`/usage?group_by=channel&${q}`),
        api(`/usage?group_by=model&${q}`),
        api("/status"),
      ]);
      say("");
      const xs = [];
      for (let t = since; t <= now; t += step) xs.push(t);
      const at = new Map(series.data.map((r) => [r.bucket, r]));
      const pick = (k) => xs.map((t) => (at.get(t) ? at.get(t)[k] : 0));
      cards(series.totals);
      lineChart($("chart-requests"), xs, [
        { name: "requests", cls: "s0", values: pick("requests"), area: true },
        { name: "errors", cls: "s3", values: pick("errors") },
      ], compact, bucket);
      lineChart($("chart-tokens"), xs, [
        { name: "prompt", cls: "s1", values: pick("prompt_tokens"), area: true },
        { name: "completion", cls: "s2", values: pick("completion_tokens") },
      ], compact, bucket);
      lineChart($("chart-cost"), xs, [
        { name: "cost", cls: "s0", values: pick("cost_micros").map((m) => m / 1e6), area: true, fmt: (v) => "$" + v.toFixed(4) },
      ], money, bucket);
      usageTable($("by-key"), "Key", "key", byKey.data);
      usageTable($("by-channel"), "Channel", "channel", byChannel.data);
      usageTable($("by-model"), "Model", "model", byModel.data);
      channelTable($("channels"), status);
      footer(status);
    } catch (e) {
      if (e.status === 401) say("The admin API refused the token: " + e.message);
      else say("Could not load: " + e.message);
    }
  }

  function footer(status) {
    const st = status.store || {};
    const h = st.health || {};
    const parts = [
      `updated ${new Date().toLocaleTimeString()}`,
      `ready: ${status.ready === undefined ? "?" : status.ready}`,
      `snapshot version ${status.snapshot_version === undefined ? "?" : status.snapshot_version}`,
      `store: ${h.backend || "?"} ${h.ok ? "ok" : "DOWN"}` + (h.latency_ms !== undefined ? ` (${h.latency_ms} ms)` : ""),
    ];
    if (h.error) parts.push("store error: " + h.error);
    if (status.inflight !== undefined) parts.push(`in flight: ${status.inflight}`);
    $("footer").textContent = parts.join(" · ");
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = $("auto").checked ? setInterval(refresh, 30000) : null;
  }

  // ------------------------------------------------------------------ wiring

  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    refresh();
  });
  $("forget").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    say("Token removed from this browser.", "info");
  });
  $("refresh").addEventListener("click", refresh);
  $("range").addEventListener("change", refresh);
  $("auto").addEventListener("change", schedule);
  if (token()) $("token").placeholder = "admin token (saved)";
  schedule();
  refresh();
})();
