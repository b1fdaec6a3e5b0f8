// Overview: totals, requests / tokens / cost / latency / TTFB over the range (the
// tag filter applies to all of them), usage by key, channel and model, and the
// channels' health (breaker chips, probe, enable/disable for store channels).
"use strict";

FG.overview = (function () {
  const { $, el, api, num, compact, money, usd, ms, query, charts } = FG;

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
      tr.append(charts.barCell(r.cost_micros, max));
      body.push(tr);
    }
    table.replaceChildren(...body);
  }

  function channelTable(table, status, onChange) {
    const breakers = status.breakers || {};
    const head = el("tr", {}, ...["Channel", "Type", "Source", "State", "Priority", "Weight", "Breakers", "Actions"]
      .map((h) => el("th", {}, h)));
    const rows = [head];
    const channels = status.channels || [];
    if (!channels.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 8 }, "no channels")));
    for (const c of channels) {
      const pills = el("td", {});
      for (const m of c.models || []) {
        const b = breakers[c.name + "/" + m];
        const pill = el("span", { class: "pill " + (b ? b.state : ""), title: b ? `${b.state}, ${b.failures} failures in a row` : "no failures seen" }, m);
        pills.append(pill);
      }
      const result = el("span", {});
      const test = el("button", { type: "button", onclick: () => probe(c.name, test, result) }, "Test");
      const isFile = c.source === "file";
      const toggle = el("button", {
        type: "button",
        class: "toggle",
        "data-channel": c.name,
        disabled: isFile,
        title: isFile ? "a config file entry: edit the file to change it" : undefined,
        onclick: () => setEnabled(c.name, !c.enabled, toggle, result, onChange),
      }, c.enabled ? "Disable" : "Enable");
      rows.push(el("tr", { "data-channel": c.name },
        el("td", {}, c.name),
        el("td", {}, c.type),
        el("td", {}, c.source || ""),
        el("td", {}, el("span", { class: "pill " + (c.enabled ? "on" : "off") }, c.enabled ? "enabled" : "disabled")),
        el("td", { class: "num" }, c.priority),
        el("td", { class: "num" }, c.weight),
        pills,
        el("td", {}, test, " ", toggle, " ", result)));
    }
    table.replaceChildren(...rows);
  }

  async function setEnabled(name, enabled, button, out, onChange) {
    button.disabled = true;
    try {
      await api("/channels/" + encodeURIComponent(name), { method: "PATCH", json: { enabled } });
      out.textContent = enabled ? "enabled" : "disabled";
      out.className = "probe-ok";
      // every gateway reloads within a second; then the status shows it
      setTimeout(onChange, 1200);
    } catch (e) {
      out.textContent = "failed: " + e.message;
      out.className = "probe-bad";
      button.disabled = false;
    }
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

  async function refresh(w, status, onChange) {
    const q = query(w);
    const [series, latency, byKey, byChannel, byModel] = await Promise.all([
      api(`/usage?bucket=${w.bucket}&${q}`),
      api(`/usage/latency?bucket=${w.bucket}&${q}`),
      api(`/usage?group_by=key&${q}`),
      api(`/usage?group_by=channel&${q}`),
      api(`/usage?group_by=model&${q}`),
    ]);
    $("scope").textContent = (w.tag ? `Run "${w.tag}"` : "All requests") +
      `, last ${$("range").selectedOptions[0].textContent}, one point per ${w.bucket} (UTC)`;
    for (const n of document.querySelectorAll(".bucket-name")) n.textContent = w.bucket;
    const at = new Map(series.data.map((r) => [r.bucket, r]));
    const pick = (k) => w.xs.map((t) => (at.has(t) ? at.get(t)[k] : 0));
    const o = { bucket: w.bucket, span: w.span };
    cards(series.totals);
    charts.lineChart($("chart-requests"), w.xs, [
      { name: "requests", cls: "s0", values: pick("requests"), area: true },
      { name: "errors", cls: "s3", values: pick("errors") },
    ], Object.assign({ fmt: compact }, o));
    charts.lineChart($("chart-tokens"), w.xs, [
      { name: "prompt", cls: "s1", values: pick("prompt_tokens"), area: true },
      { name: "completion", cls: "s2", values: pick("completion_tokens") },
    ], Object.assign({ fmt: compact }, o));
    charts.lineChart($("chart-cost"), w.xs, [
      { name: "cost", cls: "s0", values: pick("cost_micros").map((m) => m / 1e6), area: true, fmt: (v) => "$" + v.toFixed(6) },
    ], Object.assign({ fmt: money }, o));
    const lat = new Map(latency.data.map((r) => [r.bucket, r]));
    const pcts = (metric, p) => w.xs.map((t) => (lat.has(t) ? lat.get(t)[metric][p] : null));
    for (const [id, metric] of [["chart-latency", "latency_ms"], ["chart-ttfb", "ttfb_ms"]]) {
      charts.lineChart($(id), w.xs, [
        { name: "p50", cls: "s0", values: pcts(metric, "p50"), fmt: ms },
        { name: "p95", cls: "s2", values: pcts(metric, "p95"), fmt: ms },
        { name: "p99", cls: "s3", values: pcts(metric, "p99"), fmt: ms },
      ], Object.assign({ fmt: ms, dots: true }, o));
    }
    usageTable($("by-key"), "Key", "key", byKey.data);
    usageTable($("by-channel"), "Channel", "channel", byChannel.data);
    usageTable($("by-model"), "Model", "model", byModel.data);
    channelTable($("channels"), status, onChange);
  }

  return { refresh };
})();
