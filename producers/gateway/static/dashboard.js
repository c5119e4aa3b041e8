// batchyard dashboard: live updates over server-sent events, and a small SVG throughput
// chart. No dependencies; the server renders every table row, so this file formats little.
(function () {
  "use strict";

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));
  const SVG = "http://www.w3.org/2000/svg";
  const FINISHED = ["completed", "failed", "expired", "cancelled"];
  const CONFIRM = {
    cancel: "Cancel this batch? Queued requests end cancelled without being sent.",
    retry: "Queue every failed request of this batch again?",
  };

  function localTimes(root) {
    for (const el of $$("time[datetime]", root)) {
      const at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at)) {
        el.title = el.textContent;
        el.textContent = at.toLocaleString();
      }
    }
  }

  function setLive(state, text) {
    const el = $("[data-live]");
    if (el) {
      el.dataset.state = state;
      el.textContent = text;
    }
  }

  // An EventSource that shows its state; `done` closes it (else the browser reconnects).
  function subscribe(url, handlers) {
    const source = new EventSource(url);
    source.addEventListener("open", () => setLive("live", "live"));
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) setLive("down", "reconnecting…");
    });
    for (const [event, handler] of Object.entries(handlers)) {
      source.addEventListener(event, (ev) => handler(JSON.parse(ev.data), source));
    }
    return source;
  }

  function swapRows(html, count) {
    const body = $("[data-rows]");
    body.innerHTML = html; // rendered and escaped by the gateway
    localTimes(body);
    const empty = $("[data-empty]");
    if (empty) empty.hidden = count > 0;
  }

  function batchesPage() {
    const query = document.body.dataset.query; // the page's `after` and search
    subscribe("/ui/events/batches" + (query ? "?" + query : ""), {
      batches: (data) => swapRows(data.html, data.data.length),
    });
  }

  function providersPage() {
    subscribe("/ui/events/providers", {
      providers: (data) => {
        $("[data-usage]").innerHTML = data.html.usage; // rendered and escaped by the gateway
        if ($("[data-rows]")) swapRows(data.html.rows, data.data.length);
      },
    });
  }

  // --- the batch page ---------------------------------------------------------------------

  function setField(name, text) {
    for (const el of $$('[data-field="' + name + '"]')) el.textContent = text;
  }

  // The status (from the batch's event stream, before the page's data has been fetched).
  function showStatus(status) {
    for (const el of $$('.title .status, progress[data-field="progress"]')) {
      el.classList.remove(...Array.from(el.classList).filter((c) => c.startsWith("s-")));
      el.classList.add("s-" + status);
    }
    for (const badge of $$(".title .status")) badge.textContent = status;
    const cancel = $('form[data-action="cancel"]');
    if (cancel) cancel.hidden = !["validating", "in_progress"].includes(status);
  }

  // Everything else comes from the gateway's page data, with its figures already formatted.
  function showDetail(detail) {
    showStatus(detail.status);
    for (const name of ["total", "completed", "failed", "cancelled", "expired", "percent"]) {
      setField(name, detail.html[name]);
    }
    for (const name of ["rate", "eta", "cost", "failures-range"]) setField(name, detail.html[name]);
    for (const bar of $$('progress[data-field="progress"]')) {
      bar.value = detail.percent;
      bar.textContent = detail.html.percent;
    }
    const retry = $('form[data-action="retry"]');
    if (retry) {
      const counts = detail.request_counts;
      retry.hidden = !(["completed", "expired"].includes(detail.status) && counts.failed + counts.expired > 0);
    }
    $("[data-files]").innerHTML = detail.html.files; // rendered and escaped by the gateway
    for (const name of ["causes", "failures"]) {
      const body = $("[data-" + name + "]");
      body.innerHTML = detail.html[name]; // rendered and escaped by the gateway
      $('[data-empty-for="data-' + name + '"]').hidden = detail.html[name] !== "";
    }
    drawChart($("[data-chart]"), detail.timeline);
  }

  function batchPage() {
    const id = document.body.dataset.batchId;
    let detail = JSON.parse($("#batch-data").textContent);
    let fetching = false;
    let again = false;
    let lastFetch = 0;

    async function refresh() {
      if (fetching) {
        again = true;
        return;
      }
      fetching = true;
      const wait = Math.max(0, lastFetch + 1000 - Date.now());
      await new Promise((resolve) => setTimeout(resolve, wait));
      lastFetch = Date.now();
      try {
        // the same filter and page of the failed-requests table as the page shows
        const resp = await fetch("/ui/api/batches/" + encodeURIComponent(id) + location.search, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (resp.ok) {
          detail = await resp.json();
          showDetail(detail);
        }
      } finally {
        fetching = false;
        if (again) {
          again = false;
          refresh();
        }
      }
    }

    drawChart($("[data-chart]"), detail.timeline);
    window.addEventListener("resize", () => drawChart($("[data-chart]"), detail.timeline));
    if (FINISHED.includes(detail.status)) {
      setLive("done", "finished");
      return;
    }
    const onEvent = (batch, source) => {
      showStatus(batch.status);
      refresh();
      if (FINISHED.includes(batch.status)) {
        source.close();
        setLive("done", "finished");
      }
    };
    subscribe("/v1/batches/" + encodeURIComponent(id) + "/events?interval=0.5", {
      progress: onEvent,
      done: onEvent,
    });
  }

  // --- the throughput chart ---------------------------------------------------------------

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  // Cumulative results at time t, interpolated between samples.
  function cumulative(points, t) {
    if (t <= points[0][0]) return points[0][1];
    for (let i = 1; i < points.length; i++) {
      const [t1, d1] = points[i];
      if (t <= t1) {
        const [t0, d0] = points[i - 1];
        return t1 > t0 ? d0 + ((d1 - d0) * (t - t0)) / (t1 - t0) : d1;
      }
    }
    return points[points.length - 1][1];
  }

  function fmtDuration(s) {
    const trim = (v) => v.toFixed(1).replace(/\.0$/, "");
    if (s >= 3600) return trim(s / 3600) + " h";
    if (s >= 60) return trim(s / 60) + " min";
    return Math.round(s) + " s";
  }

  // Results per second over the batch's life, in buckets, as an area chart.
  function drawChart(box, points) {
    if (!box || !points || points.length < 2) return;
    const start = points[0][0];
    const end = points[points.length - 1][0];
    const span = Math.max(end - start, 0.001);
    const n = Math.max(2, Math.min(60, Math.round(span)));
    const rates = [];
    for (let i = 0; i < n; i++) {
      const a = start + (span * i) / n;
      const b = start + (span * (i + 1)) / n;
      rates.push(Math.max(0, (cumulative(points, b) - cumulative(points, a)) / (b - a)));
    }
    const peak = Math.max(...rates, 0);
    const top = peak > 0 ? niceCeil(peak) : 1;
    const w = Math.max(box.clientWidth, 200);
    const h = 190;
    const m = { l: 44, r: 8, t: 8, b: 22 };
    const x = (i) => m.l + ((w - m.l - m.r) * i) / n;
    const y = (v) => h - m.b - ((h - m.t - m.b) * v) / top;
    const svg = el("svg", { viewBox: "0 0 " + w + " " + h, "aria-hidden": "true" });
    for (const f of [0, 0.5, 1]) {
      el("line", { class: "grid", x1: m.l, x2: w - m.r, y1: y(top * f), y2: y(top * f) }, svg);
      const label = el("text", { x: m.l - 6, y: y(top * f) + 4, "text-anchor": "end" }, svg);
      label.textContent = formatRate(top * f);
    }
    let line = "";
    rates.forEach((r, i) => {
      line += (i ? " L" : "M") + x(i) + " " + y(r) + " L" + x(i + 1) + " " + y(r);
    });
    el("path", { class: "area", d: line + " L" + x(n) + " " + y(0) + " L" + x(0) + " " + y(0) + " Z" }, svg);
    el("path", { class: "line", d: line }, svg);
    // Time since the start along the x-axis: a tick every "nice" step, about one per 110 px.
    const step = niceStep(span / Math.max(1, Math.floor((w - m.l - m.r) / 110)));
    const xt = (t) => m.l + ((w - m.l - m.r) * t) / span;
    for (let t = 0; t <= span + 1e-9; t += step) {
      const tick = el("text", { x: xt(t), y: h - 6, "text-anchor": t ? "middle" : "start" }, svg);
      tick.setAttribute("class", "tick");
      tick.textContent = t ? fmtDuration(t) : "0";
      if (t) el("line", { class: "grid", x1: xt(t), x2: xt(t), y1: h - m.b, y2: h - m.b + 4 }, svg);
    }
    const done = points[points.length - 1][1];
    const note = document.createElement("p");
    note.className = "chart-note";
    note.textContent =
      "Results per second over " + fmtDuration(span) + " · peak " + formatRate(peak) + " · average " + formatRate(done / span);
    box.replaceChildren(svg, note);
  }

  // A step of 1, 2, 5, 10, 15 or 30 s, min or h at least `v` seconds long.
  function niceStep(v) {
    for (const unit of [1, 60, 3600]) {
      for (const f of [1, 2, 5, 10, 15, 30]) if (v <= f * unit) return f * unit;
    }
    return Math.ceil(v / 86400) * 86400;
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const f of [1, 2, 2.5, 5, 10]) if (v <= f * p) return f * p;
    return 10 * p;
  }

  function formatRate(v) {
    return (v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1)) + "/s";
  }

  // --- every page ---------------------------------------------------------------------------

  document.addEventListener("submit", (ev) => {
    const message = CONFIRM[ev.target.dataset.action];
    if (message && !window.confirm(message)) ev.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    const page = document.body.dataset.page;
    if (page === "batches") batchesPage();
    else if (page === "batch") batchPage();
    else if (page === "providers") providersPage();
  });
})();
