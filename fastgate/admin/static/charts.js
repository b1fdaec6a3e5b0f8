// fastgate dashboard charts: inline SVG, no library. Margins are measured from
// the labels they hold (the y axis is as wide as its widest tick, the x axis
// shows as many bucket labels as fit), so labels never overlap or get cut.
// Each chart keeps one element per data point (polyline vertex, dot or bar)
// and a hover column with a <title> naming every value of its bucket.
"use strict";

FG.charts = (function () {
  const { svg, num, when } = FG;
  const W = 600, H = 190, R = 12, T = 10, B = 24;
  const CHAR = 6.2; // px per character of a 10px tick label (upper bound)

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function empty(host, text) {
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    root.append(svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, text || "no data in this range"));
    host.replaceChildren(root);
  }

  // The frame: y ticks (their width sets the left margin) and x labels that fit.
  // centered: each label in the middle of its own slot (bars), else edge to edge (lines).
  function frame(max, fmt, labels, centered) {
    const top = niceMax(max);
    const ticks = [0, 1, 2, 3, 4].map((k) => (top * k) / 4);
    const texts = ticks.map(fmt);
    const L = Math.ceil(Math.max(...texts.map((t) => t.length)) * CHAR) + 10;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const y = (v) => H - B - (v / top) * (H - B - T);
    ticks.forEach((v, k) => {
      root.append(svg("line", { class: k ? "grid" : "axis", x1: L, y1: y(v), x2: W - R, y2: y(v) }));
      root.append(svg("text", { class: "tick y", x: L - 5, y: y(v) + 3.5, "text-anchor": "end" }, texts[k]));
    });
    const n = labels.length;
    const plot = W - L - R;
    const step = centered ? plot / Math.max(1, n) : plot / Math.max(1, n - 1);
    const x = (i) => (centered ? L + (i + 0.5) * step : n === 1 ? L + plot / 2 : L + i * step);
    const widest = Math.max(1, ...labels.map((s) => s.length)) * CHAR + 12;
    const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plot / widest))));
    let right = -Infinity; // a label is skipped rather than drawn over the previous one
    for (let i = 0; i < n; i += every) {
      const w = labels[i].length * CHAR;
      let anchor = "middle", left = x(i) - w / 2;
      if (left < L - 4) { anchor = "start"; left = x(i); }
      else if (x(i) + w / 2 > W - 2) { anchor = "end"; left = x(i) - w; }
      if (left < right + 6) continue;
      right = left + w;
      root.append(svg("text", { class: "tick x", x: x(i), y: H - 7, "text-anchor": anchor }, labels[i]));
    }
    return { root, x, y, L, top, step };
  }

  function hover(root, f, n, titleFor) {
    const colW = f.step;
    for (let i = 0; i < n; i++) {
      const r = svg("rect", { class: "hit", x: f.x(i) - colW / 2, y: T, width: colW, height: H - B - T });
      r.append(svg("title", {}, titleFor(i)));
      root.append(r);
    }
  }

  function stamp(t) {
    return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  // Lines over time. series: [{name, cls, values (null = no data), area, fmt}].
  // opts: {fmt (y ticks), bucket, span, dots (a dot per defined value)}.
  function lineChart(host, xs, series, opts) {
    const o = opts || {};
    const defined = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
    const max = Math.max(0, ...defined);
    if (!xs.length || !defined.length || (max === 0 && !o.dots)) return empty(host);
    const f = frame(max, o.fmt || FG.compact, xs.map((t) => when(t, o.bucket, o.span)));
    const { root, x, y } = f;
    for (const s of series) {
      const g = svg("g", { class: "series " + s.cls, "data-series": s.name });
      let run = [];
      const flush = () => {
        if (run.length > 1 && s.area) {
          const [a] = run[0], [b] = run[run.length - 1];
          g.append(svg("path", { class: "area " + s.cls, d: `M${a},${y(0)} L${run.map((p) => p.join(",")).join(" L")} L${b},${y(0)} Z` }));
        }
        if (run.length) g.append(svg("polyline", { class: "line " + s.cls, points: run.map((p) => p.join(",")).join(" ") }));
        run = [];
      };
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) { flush(); return; }
        const p = [x(i).toFixed(1), y(v).toFixed(1)];
        run.push(p);
        if (o.dots) g.append(svg("circle", { class: "dot " + s.cls, cx: p[0], cy: p[1], r: 2.2 }));
      });
      flush();
      root.append(g);
    }
    hover(root, f, xs.length, (i) => stamp(xs[i]) + "\n" + series.map((s) => {
      const v = s.values[i];
      return `${s.name}: ${v === null || v === undefined ? "no data" : s.fmt ? s.fmt(v) : num(v)}`;
    }).join("\n"));
    host.replaceChildren(root);
  }

  // Bars over time, drawn over each other (e.g. requests, then errors in front).
  function barChart(host, xs, series, opts) {
    const o = opts || {};
    const max = Math.max(0, ...series.flatMap((s) => s.values));
    if (!xs.length) return empty(host);
    const f = frame(max, o.fmt || FG.compact, xs.map((t) => when(t, o.bucket, o.span)), true);
    const { root, x, y } = f;
    const bw = Math.max(1, Math.min(28, f.step * 0.8));
    for (const s of series) {
      const g = svg("g", { class: "series " + s.cls, "data-series": s.name });
      s.values.forEach((v, i) => {
        g.append(svg("rect", { class: "bar " + s.cls, x: (x(i) - bw / 2).toFixed(1), y: y(v).toFixed(1), width: bw.toFixed(1), height: (y(0) - y(v)).toFixed(1) }));
      });
      root.append(g);
    }
    hover(root, f, xs.length, (i) => stamp(xs[i]) + "\n" + series.map((s) => `${s.name}: ${num(s.values[i])}`).join("\n"));
    host.replaceChildren(root);
  }

  // Groups of bars side by side (compare): groups: labels; series: [{name, cls, values}].
  function groupedBars(host, groups, series, opts) {
    const o = opts || {};
    const vals = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
    if (!groups.length || !vals.length) return empty(host, "no timed requests");
    const f = frame(Math.max(0, ...vals), o.fmt || FG.compact, groups, true);
    const { root, x, y } = f;
    const bw = Math.max(2, Math.min(24, (f.step * 0.7) / series.length));
    series.forEach((s, k) => {
      const g = svg("g", { class: "series " + s.cls, "data-series": s.name });
      s.values.forEach((v, i) => {
        const cx = x(i) + (k - (series.length - 1) / 2) * bw;
        const h = v === null || v === undefined ? 0 : y(0) - y(v);
        const r = svg("rect", { class: "bar " + s.cls, x: (cx - bw / 2).toFixed(1), y: (y(0) - h).toFixed(1), width: bw.toFixed(1), height: h.toFixed(1) });
        r.append(svg("title", {}, `${s.name} ${groups[i]}: ${v === null || v === undefined ? "no data" : (o.fmt || num)(v)}`));
        g.append(r);
      });
      root.append(g);
    });
    host.replaceChildren(root);
  }

  // A cell with a horizontal bar (share of the column's largest value).
  function barCell(value, max) {
    const td = FG.el("td", { class: "bar" });
    const s = svg("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none" });
    s.append(svg("rect", { x: 0, y: 1, height: 8, width: max > 0 ? Math.max(0.5, (100 * value) / max) : 0 }));
    td.append(s);
    return td;
  }

  return { lineChart, barChart, groupedBars, barCell, niceMax };
})();
