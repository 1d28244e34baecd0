// Events view: GET /v1/events newest first (node registered/joined/down/up/removed,
// task failed, alert firing/resolved, admin actions), filtered by kind (server side)
// and by text (in the page), "older" pages through next_before_seq; the newest page is
// polled every 5 s. Below it, the audit log of admin actions (GET /v1/audit).
import { get } from "./api.js";
import { $, esc, when } from "./util.js";

const POLL_MS = 5000;
const GROUPS = [
  ["", "all kinds"],
  ["node_registered,node_joined,node_down,node_up,node_removed", "nodes"],
  ["task_failed", "failed tasks"],
  ["alert_firing,alert_resolved", "alerts"],
  ["admin_action", "admin actions"],
];
const KIND_CLASS = { node_down: "s-bad", task_failed: "s-bad", alert_firing: "s-bad", node_up: "s-ok", alert_resolved: "s-ok", node_joined: "s-ok", node_removed: "s-pause", admin_action: "s-manager" };

function row(e) {
  return '<tr data-kind="' + esc(e.kind) + '" data-seq="' + esc(e.seq) + '"><td>' + esc(when(e.at_ms)) + '</td><td><span class="badge ' + (KIND_CLASS[e.kind] || "") + '">' +
    esc(e.kind.replace(/_/g, " ")) + "</span></td><td>" +
    (e.node_id ? '<a href="#/node/' + encodeURIComponent(e.node_id) + '">' + esc(e.hostname || e.node_id) + "</a>" : esc(e.hostname || "–")) +
    "</td><td>" + esc(e.service || "–") + "</td><td>" + esc(e.message) + "</td></tr>";
}

function auditRow(a) {
  return "<tr><td>" + esc(when(a.at_ms)) + "</td><td>" + esc(a.actor) + "</td><td>" + esc(a.action) + "</td><td>" + esc(a.target) +
    "</td><td>" + esc(a.params == null ? "" : typeof a.params === "string" ? a.params : JSON.stringify(a.params)) + '</td><td><span class="badge ' +
    (a.result === "ok" ? "s-ok" : "s-bad") + '">' + esc(a.result) + "</span> " + esc(a.error || "") + "</td></tr>";
}

export function eventsView(root) {
  root.innerHTML = '<h2>Events</h2><div class="toolbar"><select id="ev-kind">' +
    GROUPS.map(([v, label]) => '<option value="' + v + '">' + label + "</option>").join("") +
    '</select><input id="ev-text" type="search" placeholder="filter host, service, message"><span class="muted" id="ev-count"></span></div>' +
    '<div class="scroll"><table id="events"><thead><tr><th>When</th><th>Kind</th><th>Node</th><th>Service</th><th>Message</th></tr></thead><tbody></tbody></table></div>' +
    '<div class="toolbar"><button type="button" id="ev-older" class="hidden">Older events</button></div>' +
    '<h3>Audit log</h3><div class="scroll"><table id="audit"><thead><tr><th>When</th><th>Actor</th><th>Action</th><th>Target</th><th>Parameters</th><th>Result</th></tr></thead><tbody></tbody></table></div>';
  let timer = null, stopped = false, newest = [], older = [], next = null;

  function draw() {
    const q = $("ev-text").value.trim().toLowerCase();
    const all = newest.concat(older.filter((o) => !newest.some((n) => n.seq === o.seq)));
    const shown = q ? all.filter((e) => [e.hostname, e.service, e.message, e.kind].some((v) => v && String(v).toLowerCase().includes(q))) : all;
    root.querySelector("#events tbody").innerHTML = shown.length ? shown.map(row).join("") : '<tr><td colspan="5" class="muted">No event.</td></tr>';
    $("ev-count").textContent = shown.length + " shown";
    $("ev-older").classList.toggle("hidden", next == null);
  }
  const query = (extra) => { const k = $("ev-kind").value; return "/v1/events?limit=100" + (k ? "&kind=" + k : "") + (extra || ""); };

  async function poll() {
    clearTimeout(timer);
    try {
      const [ev, audit] = await Promise.all([get(query()), get("/v1/audit?limit=50").catch((e) => (e.status === 401 ? Promise.reject(e) : null))]);
      if (stopped) return;
      newest = ev.events;
      if (!older.length) next = ev.next_before_seq;
      draw();
      root.querySelector("#audit tbody").innerHTML = audit == null ? '<tr><td colspan="6" class="muted">The audit log could not be read.</td></tr>' : audit.length ? audit.map(auditRow).join("") : '<tr><td colspan="6" class="muted">No admin action yet.</td></tr>';
      $("error").textContent = "";
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (!stopped && e.status !== 401) $("error").textContent = "Cannot load the events: " + e.message;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  $("ev-kind").addEventListener("change", () => { older = []; next = null; poll(); });
  $("ev-text").addEventListener("input", draw);
  $("ev-older").addEventListener("click", async () => {
    if (next == null) return;
    try { const ev = await get(query("&before_seq=" + next)); older = older.concat(ev.events); next = ev.next_before_seq; draw(); }
    catch (e) { $("error").textContent = "Cannot load older events: " + e.message; }
  });
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
