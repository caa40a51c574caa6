// receiptq dashboard: polls /api/dashboard and /api/dead-letters, draws with uPlot.
// Every figure comes from the server (receiptq.monitor); this file only shows them.
"use strict";

const REFRESH_MS = 2000;
const DEAD_REFRESH_MS = 5000;
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const COLORS = { ready: "#2f6fed", scheduled: "#9b59d0", running: "#1a9d5b", reserved: "#e0a526", dead: "#d33a3a" };

// -- small helpers ----------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);

function ms(v) {
  if (v === null || v === undefined) return "–";
  if (v < 1) return `${v.toFixed(2)} ms`;
  if (v < 1000) return `${v.toFixed(v < 10 ? 1 : 0)} ms`;
  return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
}

function age(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function bar(fraction, kind) {
  const width = fraction === null || fraction === undefined ? 0 : Math.max(0, Math.min(1, fraction));
  return el("span", { class: `bar ${kind || ""}` }, el("span", { style: `width:${(100 * width).toFixed(1)}%` }));
}

function td(text, attrs) {
  return el("td", attrs || {}, text);
}

function fillTable(id, rows, emptyText, columns) {
  const body = document.querySelector(`#${id} tbody`);
  const fresh = rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colSpan: columns }, emptyText))];
  body.replaceChildren(...fresh);
}

let toastTimer = null;
function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// -- charts -----------------------------------------------------------------------------

const clock = (withSeconds) => (u, splits) => splits.map((ts) => new Date(ts * 1000).toLocaleTimeString(
  [], withSeconds ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" }));

function makeChart(target, series, withSeconds) {
  const box = document.getElementById(target);
  const opts = {
    width: Math.max(300, box.clientWidth),
    height: 240,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [{ stroke: "#6b7486", grid: { stroke: "#eef1f6" }, space: 80, values: clock(withSeconds) }, { stroke: "#6b7486", grid: { stroke: "#eef1f6" }, size: 50 }],
    series: [{}, ...series.map(([label, color, fill]) => ({
      label, stroke: color, width: 2, fill: fill ? `${color}22` : undefined, points: { show: false },
    }))],
  };
  const chart = new uPlot(opts, [[], ...series.map(() => [])], box);
  new ResizeObserver(() => chart.setSize({ width: Math.max(300, box.clientWidth), height: 240 })).observe(box);
  return chart;
}

const depthChart = makeChart("depth-chart", [
  ["ready", COLORS.ready, true], ["scheduled", COLORS.scheduled], ["running", COLORS.running, true],
  ["reserved", COLORS.reserved], ["dead", COLORS.dead],
], true);
const throughputChart = makeChart(
  "throughput-chart", [["done", COLORS.running, true], ["failed", COLORS.dead, true]], false);

const DEPTH_SERIES = ["queued", "scheduled", "running", "reserved", "dead"];

function drawDepth(samples) {
  const queue = document.getElementById("depth-queue").value;
  const xs = [], series = DEPTH_SERIES.map(() => []);
  for (const sample of samples) {
    const figures = (queue ? sample.queues[queue] : sample.totals) || {};
    xs.push(Date.parse(sample.t) / 1000);
    DEPTH_SERIES.forEach((key, i) => series[i].push(figures[key] ?? 0));
  }
  depthChart.setData([xs, ...series]);
}

function drawThroughput(history) {
  throughputChart.setData([
    history.map((m) => Date.parse(m.minute) / 1000),
    history.map((m) => m.done),
    history.map((m) => m.failed),
  ]);
}

function updateQueuePicker(names) {
  const picker = document.getElementById("depth-queue");
  const known = new Set([...picker.options].map((o) => o.value));
  for (const name of names) {
    if (!known.has(name)) picker.append(el("option", { value: name }, name));
  }
}

// -- tables -----------------------------------------------------------------------------

function queueRow(name, f, isTotal) {
  const cell = (field, text) => td(text, { class: "num", "data-queue": name, "data-field": field });
  return el("tr", { class: isTotal ? "total" : "" },
    td(name),
    cell("queued", num(f.queued)),
    cell("scheduled", num(f.scheduled)),
    cell("running", num(f.running)),
    cell("reserved", num(f.reserved)),
    cell("dead", num(f.dead)),
    cell("oldest_ready_s", age(f.oldest_ready_s)),
    cell("done", `${num(f.done_1m)} / ${num(f.done_5m)} / ${num(f.done_60m)}`),
    cell("failed", `${num(f.failed_1m)} / ${num(f.failed_5m)} / ${num(f.failed_60m)}`),
    cell("throughput_per_s_1m", f.throughput_per_s_1m.toFixed(1)),
    cell("latency", `${ms(f.latency_p50_ms)} / ${ms(f.latency_p95_ms)}`),
    cell("run", `${ms(f.run_p50_ms)} / ${ms(f.run_p95_ms)}`),
    cell("success_rate_5m", pct(f.success_rate_5m)),
    td(isTotal ? "" : settingsText(f), { "data-queue": name, "data-field": "settings" }),
  );
}

// A queue's settings in a few words: "paused, cap 4, ocr_receipt cap 2" ("–": none).
function settingsText(f) {
  const parts = f.paused ? ["paused"] : [];
  if (f.max_running !== null && f.max_running !== undefined) parts.push(`cap ${f.max_running}`);
  for (const [actor, cap] of Object.entries(f.actor_caps || {})) parts.push(`${actor} cap ${cap.max_running}`);
  return parts.length ? parts.join(", ") : "–";
}

function drawStatus(status) {
  const totals = status.totals;
  const shown = {
    queued: num(totals.queued), scheduled: num(totals.scheduled), running: num(totals.running),
    reserved: num(totals.reserved), dead: num(totals.dead), oldest_ready_s: age(totals.oldest_ready_s),
    throughput_per_s_1m: totals.throughput_per_s_1m.toFixed(1),
    success_rate_5m: pct(totals.success_rate_5m),
  };
  for (const [field, text] of Object.entries(shown)) {
    document.querySelector(`[data-total="${field}"]`).textContent = text;
  }
  const alive = status.workers.filter((w) => w.alive).length;
  document.getElementById("workers-alive").textContent = `${alive} / ${status.workers.length}`;

  const rows = Object.entries(status.queues).map(([name, f]) => queueRow(name, f, false));
  rows.push(queueRow("total", totals, true));
  fillTable("queues", rows, "", 14);
  updateQueuePicker(Object.keys(status.queues));

  fillTable("workers", status.workers.map((w) => el("tr", { "data-worker": w.id },
    td(w.id), td(w.queues.join(", ")), td(num(w.running), { class: "num" }),
    td(num(w.reserved), { class: "num" }),
    td(percent(w.cpu_percent), { class: "num" }), td(percent(w.memory_percent), { class: "num" }),
    td(`${age(w.heartbeat_age_s)} ago`, { class: "num" }),
    td(workerBadge(w)),
  )), "no worker has a heartbeat", 8);

  drawBreakers(status.breakers);
  const stamp = new Date(status.generated_at);
  document.getElementById("updated").textContent = `as of ${stamp.toLocaleTimeString()}`;
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value)}%`;
}

function workerBadge(w) {
  if (!w.alive) return el("span", { class: "badge badge-bad" }, "lost");
  if (w.throttled) return el("span", { class: "badge badge-warn", title: w.throttled }, "throttled");
  return el("span", { class: "badge badge-ok" }, "alive");
}

function breakerList(breakers) {
  if (!breakers) return [];
  if (Array.isArray(breakers)) return breakers;
  return Object.entries(breakers).map(([name, value]) => (
    typeof value === "object" && value !== null ? { name, ...value } : { name, state: value }
  ));
}

function breakerDetails(b, state) {
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–");
  if (!("fail_counter" in b)) {  // an unknown shape: show what there is
    return Object.entries(b).filter(([k]) => k !== "name" && k !== "state")
      .map(([k, v]) => `${k.replaceAll("_", " ")}: ${v ?? "–"}`).join(" · ");
  }
  const parts = [`failures ${b.fail_counter} / ${b.fail_max}`];
  if (state === "open") parts.push(`opened ${time(b.opened_at)}`, `may close ${time(b.closes_at)}`);
  return parts.join(" · ");
}

function drawBreakers(breakers) {
  const items = breakerList(breakers);
  const box = document.getElementById("breakers");
  if (!items.length) {
    box.replaceChildren(el("span", { class: "muted" }, "no breaker reported"));
    return;
  }
  box.replaceChildren(...items.map((b) => {
    const state = String(b.state || "unknown").toLowerCase();
    const kind = state === "closed" ? "badge-ok" : state === "open" ? "badge-bad" : "badge-warn";
    const details = breakerDetails(b, state);
    return el("div", { class: "breaker", "data-breaker": b.name },
      el("div", { class: "name" }, b.name), el("span", { class: `badge ${kind}` }, state),
      details ? el("div", { class: "muted" }, details) : "");
  }));
}

function drawActors(actors) {
  fillTable("actors", Object.entries(actors).map(([name, a]) => el("tr", { "data-actor": name },
    td(name), td(num(a.done_5m), { class: "num" }), td(num(a.failed_5m), { class: "num" }),
    td(`${ms(a.latency_p50_ms)} / ${ms(a.latency_p95_ms)}`, { class: "num" }),
    td(`${ms(a.run_p50_ms)} / ${ms(a.run_p95_ms)}`, { class: "num" }),
    td(el("span", {}, bar(a.success_rate_5m), pct(a.success_rate_5m)), { "data-field": "success_rate_5m" }),
  )), "no job finished in the last 5 minutes", 6);
}

function drawTiers(tiers) {
  fillTable("tiers", tiers.map((t) => el("tr", { "data-tier": t.tier ?? "" },
    td(t.tier ?? "(none)"), td(num(t.queued), { class: "num" }), td(num(t.scheduled), { class: "num" }),
    td(num(t.running), { class: "num" }), td(num(t.reserved), { class: "num" }),
    td(age(t.oldest_ready_s), { class: "num" }),
    td(el("span", {}, bar(t.ready_share, "share"), pct(t.ready_share))),
  )), "nothing waiting", 7);
}

// -- dead letters -------------------------------------------------------------------------

let shownDeadIds = [];

async function loadDeadLetters() {
  const params = new URLSearchParams({
    actor: document.getElementById("search-actor").value.trim(),
    error: document.getElementById("search-error").value.trim(),
  });
  const { dead_letters: rows } = await getJSON(`/api/dead-letters?${params}`);
  shownDeadIds = rows.map((r) => r.id);
  document.getElementById("dead-count").textContent = rows.length ? `(${rows.length} shown)` : "";
  fillTable("dead-letters", rows.map((r) => el("tr", { "data-dead-letter": String(r.id) },
    td(String(r.id), { class: "num" }), td(new Date(r.failed_at).toLocaleString()), td(r.queue), td(r.actor),
    td(num(r.attempts), { class: "num" }),
    td([r.error_type, r.error].filter(Boolean).join(": ") || r.reason, { class: "error" }),
    td(el("span", {},
      el("button", { class: "btn retry", type: "button", onclick: () => act("retry", [r.id], `dead letter ${r.id} (${r.actor})`) }, "Retry"),
      el("button", { class: "btn btn-danger purge", type: "button", onclick: () => act("purge", [r.id], `dead letter ${r.id} (${r.actor})`) }, "Purge"),
    )),
  )), "no dead letters", 7);
}

async function act(verb, ids, what) {
  if (!ids.length) { toast("no dead letters shown"); return; }
  const question = verb === "retry"
    ? `Queue ${what} again as a fresh job?`
    : `Delete ${what} for good? This cannot be undone.`;
  if (!window.confirm(question)) return;
  try {
    const response = await fetch(`/api/dead-letters/${verb}`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
      body: JSON.stringify({ ids }),
    });
    const result = await response.json();
    if (!response.ok) throw new Error(result.error || `HTTP ${response.status}`);
    const done = verb === "retry" ? result.retried : result.purged;
    const skipped = result.skipped.length ? `, ${result.skipped.length} skipped` : "";
    toast(`${verb === "retry" ? "retried" : "purged"} ${done.length}${skipped}`);
  } catch (error) {
    toast(`${verb} failed: ${error.message}`);
  }
  await Promise.allSettled([loadDeadLetters(), refresh()]);
}

let searchTimer = null;
for (const id of ["search-actor", "search-error"]) {
  document.getElementById(id).addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => loadDeadLetters().catch(() => {}), 250);
  });
}
document.getElementById("dead-search").addEventListener("submit", (e) => e.preventDefault());
document.getElementById("retry-shown").addEventListener("click",
  () => act("retry", shownDeadIds, `the ${shownDeadIds.length} dead letter(s) shown`));
document.getElementById("purge-shown").addEventListener("click",
  () => act("purge", shownDeadIds, `the ${shownDeadIds.length} dead letter(s) shown`));

// -- the refresh loop -----------------------------------------------------------------------

let lastDepth = [];

async function refresh() {
  const pill = document.getElementById("connection");
  try {
    const data = await getJSON("/api/dashboard");
    drawStatus(data.status);
    drawActors(data.actors);
    drawTiers(data.tiers);
    lastDepth = data.depth;
    drawDepth(lastDepth);
    drawThroughput(data.history);
    pill.textContent = "live";
    pill.className = "pill pill-ok";
  } catch (error) {
    pill.textContent = "disconnected";
    pill.className = "pill pill-bad";
  }
}

document.getElementById("depth-queue").addEventListener("change", () => drawDepth(lastDepth));

async function loop(task, every) {
  await task().catch(() => {});
  setTimeout(() => loop(task, every), every);
}
loop(refresh, REFRESH_MS);
loop(loadDeadLetters, DEAD_REFRESH_MS);
