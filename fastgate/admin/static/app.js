// fastgate dashboard: the wiring. Views (Overview, Runs, Manage) are chosen by
// the tabs and kept in the URL's #hash; the range and the tag filter apply to
// every view; the admin token is pasted once and kept in localStorage.
"use strict";

(function () {
  const { $, api, say, token, setToken, current } = FG;
  const VIEWS = ["overview", "runs", "manage"];
  let timer = null;
  let loading = null;

  function view() {
    const v = location.hash.replace(/^#/, "");
    return VIEWS.includes(v) ? v : "overview";
  }

  function showView() {
    const v = view();
    for (const name of VIEWS) $("view-" + name).hidden = name !== v;
    for (const b of document.querySelectorAll("#tabs .tab")) b.classList.toggle("active", b.dataset.view === v);
  }

  function failed(e) {
    if (e.status === 401) say("The admin API refused the token: " + e.message);
    else say("Could not load: " + e.message);
  }

  async function load() {
    if (!token()) {
      say("Paste the admin token (the [admin] token of the gateway) to load the dashboard.", "info");
      return;
    }
    const w = current();
    document.body.dataset.loading = "1";
    try {
      const status = await api("/status");
      const v = view();
      // the runs list feeds the tag filter's suggestions on every view
      await FG.runs.refresh(w);
      if (v === "overview") await FG.overview.refresh(w, status, refresh);
      if (v === "manage") await FG.manage.refresh();
      say("");
      footer(status);
    } catch (e) {
      failed(e);
    } finally {
      delete document.body.dataset.loading;
      document.body.dataset.loaded = String(Date.now());
    }
  }

  // One load at a time; a refresh asked for meanwhile runs after it.
  function refresh() {
    if (loading) {
      loading.then(refresh);
      return loading;
    }
    loading = load().finally(() => { loading = null; });
    return loading;
  }

  function footer(status) {
    const st = status.store || {};
    const h = st.health || {};
    const parts = [
      `updated ${new Date().toISOString().slice(11, 19)} UTC`,
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

  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (value) setToken(value);
    $("token").value = "";
    $("token").placeholder = "admin token (saved)";
    refresh();
  });
  $("forget").addEventListener("click", () => {
    setToken("");
    $("token").placeholder = "admin token";
    say("Token removed from this browser.", "info");
  });
  for (const b of document.querySelectorAll("#tabs .tab")) {
    b.addEventListener("click", () => { location.hash = b.dataset.view; });
  }
  window.addEventListener("hashchange", () => { showView(); refresh(); });
  $("refresh").addEventListener("click", refresh);
  $("range").addEventListener("change", refresh);
  $("tag").addEventListener("change", refresh);
  $("auto").addEventListener("change", schedule);
  FG.runs.wire(failed);
  FG.manage.wire(refresh);
  if (token()) $("token").placeholder = "admin token (saved)";
  showView();
  schedule();
  refresh();
})();
