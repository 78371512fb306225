// Herald admin console: polls the AdminService (Connect protocol, JSON) on
// the admin listener and draws its figures with uPlot. Counters and
// histograms come cumulative; rates and quantiles are differences between
// polls, as Prometheus computes them.
"use strict";

const API = "/herald.v1.AdminService/";
const POLL_MS = 1000;
const KEEP = 300; // points per chart: 5 minutes at 1 s
const TRANSPORTS = ["grpc", "grpcweb", "connect", "ws", "sse", "longpoll"];
const COLORS = ["#2563eb", "#9333ea", "#0891b2", "#16a34a", "#ea580c", "#db2777"];

let token = sessionStorage.getItem("herald-admin-token") || "";
const $ = (id) => document.getElementById(id);

async function call(method, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(API + method, { method: "POST", headers, body: JSON.stringify(body || {}) });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(json.message || resp.statusText);
    err.code = json.code;
    throw err;
  }
  return json;
}

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; return; }
  box.hidden = false;
  box.dataset.code = err.code || "";
  box.textContent = err.message;
  if (err.code === "unauthenticated" || err.code === "permission_denied") {
    $("auth").hidden = false;
    box.textContent += " — sign in with a credential that has the admin scope.";
  }
}

$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("herald-admin-token", token);
  $("auth").hidden = true;
  showError(null);
  refreshTables();
});

// ---- charts
function chart(el, series, opts = {}) {
  const width = () => Math.max(300, $(el).clientWidth);
  const u = new uPlot({
    width: width(), height: 200,
    scales: { x: { time: true }, ...(opts.scales || {}) },
    axes: (opts.axes || [{}, { size: 60 }]).map((ax, i) => i === 0 ? { ...ax, space: 90, values: (u, vals) => vals.map(clock) } : ax),
    legend: { live: true },
    series: [{}, ...series.map((s, i) => ({ stroke: s.color || COLORS[i % COLORS.length], width: 2, points: { show: false }, spanGaps: true, ...s }))],
  }, [[], ...series.map(() => [])], $(el));
  new ResizeObserver(() => u.setSize({ width: width(), height: 200 })).observe($(el));
  return u;
}

const data = { t: [], conns: TRANSPORTS.map(() => []), in: [], out: [], p50: [], p99: [], batch: [], lag: [] };
const charts = {
  conns: chart("c-conns", TRANSPORTS.map((t) => ({ label: t }))),
  rate: chart("c-rate", [{ label: "in /s", color: "#2563eb" }, { label: "out /s", color: "#16a34a" }]),
  lag: chart("c-lag", [{ label: "p50 ms", color: "#0891b2" }, { label: "p99 ms", color: "#ea580c" }]),
  writer: chart("c-writer", [{ label: "batch (events)", color: "#9333ea", scale: "b" }, { label: "hub lag (positions)", color: "#db2777", scale: "l" }],
    { scales: { b: {}, l: {} }, axes: [{}, { scale: "b", size: 50 }, { scale: "l", side: 1, size: 50, grid: { show: false } }] }),
};

function clock(t) { return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }); }

function push(arr, v) { arr.push(v); if (arr.length > KEEP) arr.shift(); }

// quantile of the observations between two cumulative histograms.
function quantile(q, prev, cur) {
  if (!cur || !cur.bounds) return null;
  const counts = cur.counts.map((c, i) => Number(c) - Number(prev && prev.counts ? prev.counts[i] : 0));
  const total = Number(cur.count || 0) - Number(prev ? prev.count || 0 : 0);
  if (total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] >= rank) {
      const lo = i === 0 ? 0 : cur.bounds[i - 1], below = i === 0 ? 0 : counts[i - 1];
      const inBucket = counts[i] - below;
      return lo + (cur.bounds[i] - lo) * (inBucket > 0 ? (rank - below) / inBucket : 1);
    }
  }
  return cur.bounds[cur.bounds.length - 1];
}

function delta(cur, prev, f) {
  if (!prev) return null;
  const dt = (Date.parse(cur.time) - Date.parse(prev.time)) / 1000;
  return dt > 0 ? (Number(f(cur) || 0) - Number(f(prev) || 0)) / dt : null;
}

function kpi(label, value) {
  return `<div class="kpi"><div class="v">${value}</div><div class="l">${label}</div></div>`;
}

let prev = null;
async function pollStats() {
  let s;
  try { s = await call("GetStats"); } catch (err) { showError(err); return; }
  showError(null);
  const t = Date.parse(s.time) / 1000;
  push(data.t, t);
  TRANSPORTS.forEach((tr, i) => push(data.conns[i], Number((s.connections || {})[tr] || 0)));
  push(data.in, delta(s, prev, (x) => x.eventsPublished));
  push(data.out, delta(s, prev, (x) => x.eventsDelivered));
  const p50 = quantile(0.5, prev && prev.deliveryLagSeconds, s.deliveryLagSeconds);
  const p99 = quantile(0.99, prev && prev.deliveryLagSeconds, s.deliveryLagSeconds);
  push(data.p50, p50 == null ? null : p50 * 1000);
  push(data.p99, p99 == null ? null : p99 * 1000);
  const bc = delta(s, prev, (x) => x.writerBatchEvents && x.writerBatchEvents.count);
  const bs = delta(s, prev, (x) => x.writerBatchEvents && x.writerBatchEvents.sum);
  push(data.batch, bc ? bs / bc : null);
  push(data.lag, Number(s.hubLag || 0));
  charts.conns.setData([data.t, ...data.conns]);
  charts.rate.setData([data.t, data.in, data.out]);
  charts.lag.setData([data.t, data.p50, data.p99]);
  charts.writer.setData([data.t, data.batch, data.lag]);

  const conns = Object.values(s.connections || {}).reduce((a, b) => a + Number(b), 0);
  const subs = Object.values(s.subscriptions || {}).reduce((a, b) => a + Number(b), 0);
  const last = (arr) => { const v = arr[arr.length - 1]; return v == null ? "–" : v.toFixed(v < 10 ? 1 : 0); };
  $("kpis").innerHTML = kpi("connections", conns) + kpi("subscriptions", subs) + kpi("events in /s", last(data.in)) +
    kpi("events out /s", last(data.out)) + kpi("delivery lag p99 ms", last(data.p99)) + kpi("hub head", s.hubHead || 0) +
    kpi("hub lag (positions)", s.hubLag || 0) + kpi("writer queue", s.writerQueueDepth || 0);
  $("instance").textContent = `instance ${s.instanceId} · ${s.version || "version unknown"} · up ${age(s.startTime)}`;
  const pill = $("ready");
  pill.textContent = s.ready ? "ready" : "not ready";
  pill.className = "pill " + (s.ready ? "ok" : "bad");
  pill.title = s.notReadyReason || "";
  prev = s;
}

// ---- tables
function age(ts) {
  if (!ts) return "–";
  let s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function fill(id, rows, cols, empty) {
  const body = document.querySelector(`#${id} tbody`);
  if (!rows.length) { body.innerHTML = `<tr><td colspan="${cols}" class="empty">${empty}</td></tr>`; return; }
  body.innerHTML = rows.join("");
}

function retention(st) {
  const parts = [];
  if (st && st.maxEvents && Number(st.maxEvents) > 0) parts.push(`${st.maxEvents} events`);
  if (st && st.maxAge && st.maxAge !== "0s") parts.push(st.maxAge);
  return parts.length ? "keep " + parts.join(", ") : "forever";
}

async function refreshTables() {
  try {
    const [ins, chs, conns] = await Promise.all([
      call("ListInstances"), call("ListChannelStats", { prefix: $("prefix").value, pageSize: 100 }), call("ListConnections"),
    ]);
    fill("instances", (ins.instances || []).map((i) => `<tr class="${i.self ? "self" : ""}"><td>${esc(i.id)}</td><td>${esc(i.hostname)}</td>
      <td>${esc(i.addr)}</td><td>${esc(i.version)}</td><td>${age(i.startTime)}</td><td class="num">${i.connections || 0}</td>
      <td class="num">${i.subscriptions || 0}</td><td>${age(i.heartbeatTime)} ago</td></tr>`), 8, "no instances");
    fill("channels", (chs.channels || []).map((c) => `<tr><td>${esc(c.channel.name)}</td><td class="num">${c.events || 0}</td>
      <td class="num">${c.head || 0}</td><td>${esc(retention(c.channel.settings))}</td>
      <td>${c.lastActivityTime ? age(c.lastActivityTime) + " ago" : "never"}</td>
      <td><button data-tail="${esc(c.channel.name)}">tail</button></td></tr>`), 6, "no channels");
    fill("connections", (conns.connections || []).map((c) => `<tr><td>${c.id}</td><td>${esc(c.transport)}</td>
      <td>${esc(c.user) || '<span class="empty">anonymous</span>'}</td><td class="num">${c.subscriptions || 0}</td>
      <td class="num">${c.channels || 0}</td><td>${age(c.startTime)}</td>
      <td><button class="danger" data-disconnect="${c.id}">disconnect</button></td></tr>`), 7, "no connections");
  } catch (err) { showError(err); }
}

document.addEventListener("click", async (e) => {
  const id = e.target.dataset.disconnect;
  if (id) {
    try { await call("Disconnect", { id }); } catch (err) { showError(err); }
    refreshTables();
  }
  const ch = e.target.dataset.tail;
  if (ch) { $("tail-channel").value = ch; startTail(ch); }
});
$("prefix").addEventListener("input", () => refreshTables());

// ---- channel inspector: the SSE stream of the channel, through this listener
let source = null;
function stopTail() {
  if (source) source.close();
  source = null;
  $("tail-stop").disabled = true;
  $("tail-state").textContent = "";
}
function startTail(ch) {
  stopTail();
  document.querySelector("#tail-events tbody").innerHTML = "";
  // event=message: every event arrives as a plain message, whatever its type.
  let url = "/v1/sse?event=message&channel=" + encodeURIComponent(ch);
  if (token) url += "&access_token=" + encodeURIComponent(token);
  source = new EventSource(url);
  $("tail-stop").disabled = false;
  $("tail-state").textContent = "connecting…";
  source.addEventListener("@subscribed", () => { $("tail-state").textContent = "live: " + ch; });
  source.onmessage = (m) => addEvent(m);
  source.onerror = () => { $("tail-state").textContent = "reconnecting…"; };
  source.addEventListener("@end", (m) => { $("tail-state").textContent = "ended: " + m.data; });
}
// readable shows base64 data (protobuf JSON's bytes) as text when it is
// UTF-8 without control characters, else as it came.
function readable(b64) {
  try {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return /[\x00-\x08\x0e-\x1f]/.test(text) ? b64 : text;
  } catch { return b64; }
}

function addEvent(m) {
  let ev;
  try { ev = JSON.parse(m.data); } catch { ev = { data: m.data }; }
  const body = document.querySelector("#tail-events tbody");
  const data = ev.data === undefined ? "" : typeof ev.data === "string" ? readable(ev.data) : JSON.stringify(ev.data);
  const row = `<tr><td class="num">${esc(ev.position || m.lastEventId)}</td><td>${esc(ev.type || "")}</td>
    <td>${esc(ev.createTime ? new Date(ev.createTime).toLocaleTimeString() : "")}</td><td class="data">${esc(data)}</td></tr>`;
  body.insertAdjacentHTML("afterbegin", row);
  while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
}
$("tail").addEventListener("submit", (e) => { e.preventDefault(); startTail($("tail-channel").value.trim()); });
$("tail-stop").addEventListener("click", stopTail);

pollStats();
refreshTables();
setInterval(pollStats, POLL_MS);
setInterval(refreshTables, 3000);
