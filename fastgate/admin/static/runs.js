// Runs: requests grouped by x-fastgate-tag (GET /admin/runs), one run's figures,
// timeline and breakdowns (GET /admin/runs/{tag}), and two runs side by side
// (GET /admin/runs?compare=A,B). Percentiles are the store's, never computed here.
"use strict";

FG.runs = (function () {
  const { $, el, api, num, usd, ms, pct, iso, duration, charts } = FG;
  let shown = ""; // the run whose detail is open

  const p3 = (m) => (m ? `${ms(m.p50)} / ${ms(m.p95)} / ${ms(m.p99)}` : "–");

  function errorsText(r) {
    if (!r.errors) return "0";
    return `${num(r.errors)} (${pct(r.error_rate)})`;
  }

  function errorsTitle(r) {
    return r.errors_by_code.map((e) => `${e.status}${e.error_code ? " " + e.error_code : ""}: ${e.requests}`).join("\n");
  }

  const STAT_COLS = [
    ["Requests", (r) => num(r.requests)],
    ["Errors", errorsText],
    ["Prompt", (r) => num(r.prompt_tokens)],
    ["Completion", (r) => num(r.completion_tokens)],
    ["Cached", (r) => num(r.cached_tokens)],
    ["Cost", (r) => usd(r.cost_micros)],
    ["Cache hits", (r) => num(r.cache_hits)],
    ["Latency p50/95/99", (r) => p3(r.latency_ms)],
    ["TTFB p50/95/99", (r) => p3(r.ttfb_ms)],
  ];

  function statTable(table, first, rows, onPick) {
    const head = el("tr", {}, el("th", {}, first[0]));
    for (const [title] of STAT_COLS) head.append(el("th", { class: "num" }, title));
    const body = [head];
    if (!rows.length) body.push(el("tr", {}, el("td", { class: "empty", colspan: STAT_COLS.length + 1 }, "no runs in this range: send requests with an x-fastgate-tag header")));
    for (const r of rows) {
      const name = first[1](r);
      const label = onPick ? el("button", { type: "button", class: "link", onclick: () => onPick(name) }, name) : (name === "" ? el("span", { class: "muted" }, "(none)") : name);
      const tr = el("tr", { "data-row": name }, el("td", {}, label));
      for (const [, f] of STAT_COLS) tr.append(el("td", { class: "num", title: f === errorsText ? errorsTitle(r) : undefined }, f(r)));
      body.push(tr);
    }
    table.replaceChildren(...body);
  }

  function fillSelect(select, tags, want) {
    const keep = select.value || want || "";
    select.replaceChildren(...tags.map((t) => el("option", { value: t }, t)));
    if (tags.includes(keep)) select.value = keep;
  }

  async function refresh(w) {
    const list = await api(`/runs?since=${w.since}&limit=200`);
    const tags = list.data.map((r) => r.tag);
    $("tags").replaceChildren(...tags.map((t) => el("option", { value: t })));
    statTable($("runs"), ["Run", (r) => r.tag], list.data, show);
    fillSelect($("compare-a"), tags, tags[1]);
    fillSelect($("compare-b"), tags, tags[0]);
    const want = w.tag && tags.includes(w.tag) ? w.tag : shown;
    if (want) await show(want);
    return list;
  }

  async function show(tag) {
    const r = await api("/runs/" + encodeURIComponent(tag));
    shown = tag;
    const run = r.run;
    $("run-detail").hidden = false;
    $("run-title").textContent = `"${tag}"`;
    const items = [
      ["First request", iso(run.first_ts)],
      ["Duration", duration(run.duration_s)],
      ["Requests", num(run.requests)],
      ["Errors", errorsText(run)],
      ["Tokens in / out", `${num(run.prompt_tokens)} / ${num(run.completion_tokens)}`],
      ["Cost", usd(run.cost_micros)],
      ["Cache hits", num(run.cache_hits)],
    ];
    $("run-cards").replaceChildren(...items.map(([label, value]) =>
      el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value))));
    $("run-bucket").textContent = r.timeline_bucket;
    const xs = r.timeline.map((p) => p.bucket);
    charts.barChart($("chart-run-timeline"), xs, [
      { name: "requests", cls: "s0", values: r.timeline.map((p) => p.requests) },
      { name: "errors", cls: "s3", values: r.timeline.map((p) => p.errors) },
    ], { bucket: r.timeline_bucket, span: xs.length ? xs[xs.length - 1] - xs[0] : 0 });
    const head = el("tr", {}, el("th", {}, ""), ...["p50", "p95", "p99"].map((p) => el("th", { class: "num" }, p)));
    const rows = [["Latency", run.latency_ms], ["Time to first byte", run.ttfb_ms], ["Gateway overhead", run.gateway_ms]]
      .map(([name, m]) => el("tr", {}, el("td", {}, name), ...["p50", "p95", "p99"].map((p) => el("td", { class: "num" }, ms(m[p])))));
    $("run-percentiles").replaceChildren(head, ...rows);
    statTable($("run-by-model"), ["Model", (x) => x.model], r.by_model);
    statTable($("run-by-channel"), ["Channel", (x) => x.channel], r.by_channel);
    return r;
  }

  // The figures put side by side, as the API names them, and how to show each.
  const SHOWN = [
    ["requests", "Requests", num],
    ["error_rate", "Error rate", pct],
    ["prompt_tokens", "Prompt tokens", num],
    ["completion_tokens", "Completion tokens", num],
    ["cached_tokens", "Cached tokens", num],
    ["cost_usd", "Cost", (v) => usd(Math.round(v * 1e6))],
    ["cache_hits", "Cache hits", num],
    ["duration_s", "Duration", duration],
  ];
  for (const m of [["latency_ms", "Latency"], ["ttfb_ms", "TTFB"], ["gateway_ms", "Gateway overhead"]]) {
    for (const p of ["p50", "p95", "p99"]) SHOWN.push([`${m[0]}.${p}`, `${m[1]} ${p} (ms)`, ms]);
  }

  async function compare(a, b) {
    const r = await api("/runs?compare=" + encodeURIComponent(a) + "," + encodeURIComponent(b));
    const by = new Map(r.compared.map((c) => [c.metric, c]));
    const head = el("tr", {}, el("th", {}, ""), el("th", { class: "num" }, "A: " + a), el("th", { class: "num" }, "B: " + b), el("th", { class: "num" }, "B / A"));
    const rows = SHOWN.filter(([k]) => by.has(k)).map(([k, label, f]) => {
      const c = by.get(k);
      const show = (v) => (v === null || v === undefined ? "–" : f(v));
      return el("tr", { "data-metric": k }, el("td", {}, label), el("td", { class: "num" }, show(c.a)), el("td", { class: "num" }, show(c.b)),
        el("td", { class: "num" }, c.ratio === null ? "–" : c.ratio.toFixed(2) + "×"));
    });
    $("compare-table").replaceChildren(head, ...rows);
    const groups = [], va = [], vb = [];
    for (const m of [["latency_ms", "lat"], ["ttfb_ms", "ttfb"]]) {
      for (const p of ["p50", "p95", "p99"]) {
        const c = by.get(`${m[0]}.${p}`);
        groups.push(`${m[1]} ${p}`);
        va.push(c.a);
        vb.push(c.b);
      }
    }
    charts.groupedBars($("chart-compare"), groups, [
      { name: "A", cls: "s0", values: va },
      { name: "B", cls: "s2", values: vb },
    ], { fmt: ms });
    $("compare-out").hidden = false;
    return r;
  }

  function wire(onError) {
    $("compare-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      compare($("compare-a").value, $("compare-b").value).catch(onError);
    });
  }

  return { refresh, show, compare, wire };
})();
