"use strict";
const KEY = "armada-admin-token";
const $ = (id) => document.getElementById(id);
const m = location.hash.match(/token=([^&]+)/);
if (m) { localStorage.setItem(KEY, decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }

function esc(s) { return String(s == null ? "" : s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c])); }
function bytes(n) {
  if (n == null) return "–";
  const u = ["B","KiB","MiB","GiB","TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}
function ago(ms) {
  if (ms == null) return '<span class="muted">never</span>';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}
function bar(ratio, hot) {
  const pct = Math.max(0, Math.min(100, ratio * 100));
  // The width is set after insertion (see widen): the policy forbids inline styles.
  return '<span class="bar"><i class="' + (hot ? "hot" : "") + '" data-pct="' + pct.toFixed(0) + '"></i></span>';
}
function row(n) {
  const cpu = n.cpu_busy_ratio == null ? "–" : bar(n.cpu_busy_ratio, n.cpu_busy_ratio > 0.9) + (n.cpu_busy_ratio * 100).toFixed(0) + " %";
  const memRatio = n.memory_total_bytes ? n.memory_used_bytes / n.memory_total_bytes : null;
  const mem = memRatio == null ? "–" : bar(memRatio, memRatio > 0.9) + bytes(n.memory_used_bytes) + " / " + bytes(n.memory_total_bytes);
  const temp = n.temperature_celsius == null ? "–" : n.temperature_celsius.toFixed(1) + " °C";
  const labels = Object.entries(n.labels || {}).map(([k, v]) => "<span>" + esc(k) + "=" + esc(v) + "</span>").join("");
  return "<tr data-node=\"" + esc(n.node_id) + "\">" +
    "<td><b>" + esc(n.hostname) + "</b><br><span class=\"muted\">" + esc(n.node_id) + "</span></td>" +
    "<td><span class=\"status s-" + esc(n.status) + "\">" + esc(n.status) + "</span></td>" +
    "<td>" + esc(n.swarm_state || "–") + "</td>" +
    "<td>" + esc(n.board) + " <span class=\"muted\">" + esc(n.arch) + "</span></td>" +
    "<td>" + esc(n.role) + "</td><td>" + cpu + "</td><td>" + mem + "</td><td>" + temp + "</td>" +
    "<td>" + (n.containers == null ? "–" : n.containers) + "</td>" +
    "<td>" + ago(n.last_report_ms) + "</td><td class=\"labels\">" + labels + "</td></tr>";
}
function widen(root) {
  root.querySelectorAll(".bar i[data-pct]").forEach(i => { i.style.width = i.dataset.pct + "%"; });
}
async function refresh() {
  const token = localStorage.getItem(KEY);
  if (!token) { $("login").classList.remove("hidden"); $("nodes").classList.add("hidden"); return; }
  try {
    const r = await fetch("/v1/nodes", { headers: { "Authorization": "Bearer " + token }, cache: "no-store" });
    if (r.status === 401 || r.status === 403) {
      localStorage.removeItem(KEY); $("error").textContent = "The admin token was refused."; refresh(); return;
    }
    if (!r.ok) throw new Error("GET /v1/nodes: HTTP " + r.status);
    const nodes = await r.json();
    $("error").textContent = "";
    $("login").classList.add("hidden");
    $("nodes").classList.remove("hidden");
    $("nodes").querySelector("tbody").innerHTML = nodes.length ? nodes.map(row).join("")
      : '<tr><td colspan="11" class="muted">No node has registered yet.</td></tr>';
    widen($("nodes"));
    const c = {up:0, stale:0, down:0, registered:0};
    nodes.forEach(n => c[n.status] = (c[n.status] || 0) + 1);
    $("counts").innerHTML = "<span><b>" + nodes.length + "</b> nodes</span>" +
      Object.entries(c).map(([k, v]) => "<span>" + k + " <b>" + v + "</b></span>").join("");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("error").textContent = "Cannot reach the manager: " + e.message;
  }
}
$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (t) { localStorage.setItem(KEY, t); $("token").value = ""; refresh(); }
});
$("logout").addEventListener("click", (ev) => { ev.preventDefault(); localStorage.removeItem(KEY); refresh(); });
refresh();
setInterval(refresh, 5000);
