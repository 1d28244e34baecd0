// Node view (M/Monit's host page): charts of the stored history over 1 h / 24 h / 7 d
// (GET /v1/nodes/{id}/history), the containers of the latest snapshot
// (GET /v1/nodes/{id}/containers), the node's facts (GET /v1/nodes/{id}), and the
// admin actions on it, each behind the confirmation dialog.
import { get, post, del } from "./api.js";
import { lineChart } from "./charts.js";
import { confirmAction } from "./dialog.js";
import { $, esc, bytes, pct, num, ago, duration, badge, flash } from "./util.js";

const POLL_MS = 10000;
const RANGES = ["1h", "24h", "7d"];
let range = "1h";

const rate = (v) => bytes(v) + "/s";
const series = (h, key) => (h.series && h.series[key]) || [];

function charts(h) {
  const from = h.from_ms, to = h.to_ms;
  const scale = (pts, f) => pts.map(([t, v]) => [t, v == null ? null : v * f]);
  const used = series(h, "memory_used_bytes");
  return [
    lineChart("CPU busy", [{ name: "cpu", points: scale(series(h, "cpu_busy_ratio"), 100) }], from, to, (v) => num(v, 0) + " %", { max: 100 }),
    lineChart("Memory used", [{ name: "used", points: used }, { name: "total", points: series(h, "memory_total_bytes") }], from, to, bytes),
    lineChart("Load (1 min)", [{ name: "load1", points: series(h, "load1") }], from, to, (v) => num(v, 1)),
    lineChart("SoC temperature", [{ name: "°C", points: series(h, "temperature_celsius") }], from, to, (v) => num(v, 0) + " °C"),
    lineChart("Network", [{ name: "rx", points: series(h, "net_rx_bytes_per_s") }, { name: "tx", points: series(h, "net_tx_bytes_per_s") }], from, to, rate),
    lineChart("Disk writes (SD wear)", [{ name: "write", points: series(h, "disk_write_bytes_per_s") }], from, to, rate),
    lineChart("Fullest filesystem", [{ name: "used", points: scale(series(h, "fs_used_ratio_max"), 100) }], from, to, (v) => num(v, 0) + " %", { max: 100 }),
  ].join("");
}

function containers(list) {
  if (!list.length) return '<p class="muted">No container in the latest report.</p>';
  const rows = list.map((c) => "<tr data-container=\"" + esc(c.id) + "\"><td><b>" + esc(c.name) + '</b><br><span class="muted">' + esc(String(c.id).slice(0, 12)) + "</span></td>" +
    "<td>" + esc(c.service || "–") + "</td><td>" + badge(c.state || "–") + "</td><td>" + (c.health ? badge(c.health) : "–") + "</td>" +
    '<td class="num cpu">' + pct(c.cpu_ratio) + '</td><td class="num">' + bytes(c.memory_bytes) + '</td><td class="num">' + (c.restarts == null ? "–" : c.restarts) +
    '</td><td class="num">' + (c.oom_kills == null ? "–" : c.oom_kills) + "</td><td>" + (c.started_ms == null ? "–" : ago(c.started_ms)) + "</td></tr>").join("");
  return '<div class="scroll"><table id="containers"><thead><tr><th>Container</th><th>Service</th><th>State</th><th>Health</th><th>CPU</th><th>Memory</th>' +
    "<th>Restarts</th><th>OOM kills</th><th>Started</th></tr></thead><tbody>" + rows + "</tbody></table></div>";
}

function facts(d) {
  const f = d.facts || {}, s = d.summary || {};
  const pick = (k) => (d[k] !== undefined ? d[k] : f[k]);
  const clock = pick("clock");
  const clockText = clock == null ? "–" : (clock.synced ? "synced" : "NOT synced") + (clock.offset_s == null ? "" : ", offset " + num(clock.offset_s, 3) + " s");
  const labels = Object.entries(s.labels || {}).map(([k, v]) => esc(k) + "=" + esc(v)).join(", ") || "–";
  const rows = [
    ["Board", esc(f.board) + " · " + esc(f.arch) + " · " + esc(f.cpus) + " CPUs · " + bytes(f.memory_bytes)],
    ["Kernel", esc(pick("kernel") || "–")], ["Docker", esc(pick("docker_version") || "–")], ["Agent", esc(pick("agent_version") || "–")],
    ["Uptime", duration(pick("uptime_s"))], ["Clock", esc(clockText)],
    ["Role", esc(s.role) + (s.swarm_state ? " · swarm " + esc(s.swarm_state) : "")],
    ["armada ID", esc(s.node_id)], ["Swarm ID", esc(s.swarm_node_id || "–")], ["Labels", labels],
    ["Last report", ago(s.last_report_ms)], ["Reports", esc(d.reports_total) + (d.agent_dropped_total ? " (" + esc(d.agent_dropped_total) + " dropped by the agent)" : "")],
  ];
  return '<dl class="facts" id="facts">' + rows.map(([k, v]) => "<dt>" + k + "</dt><dd>" + v + "</dd>").join("") + "</dl>";
}

const ACTIONS = [
  ["drain", "Drain", "Drain %s? Swarm moves its tasks to other nodes."],
  ["active", "Activate", "Make %s active again? Swarm may place tasks on it."],
  ["pause", "Pause", "Pause %s? Its tasks keep running but no new task is placed on it."],
  ["promote", "Promote", "Promote %s to a swarm manager?"],
  ["demote", "Demote", "Demote %s to a swarm worker?"],
  ["remove", "Remove", "Remove %s from armada? Its credential is revoked and it leaves the swarm."],
];

async function act(id, host, what) {
  const text = ACTIONS.find((a) => a[0] === what)[2].replace("%s", host);
  if (!(await confirmAction(text))) return false;
  try {
    if (what === "remove") await del("/v1/nodes/" + encodeURIComponent(id));
    else if (what === "promote" || what === "demote") await post("/v1/nodes/" + encodeURIComponent(id) + "/" + what);
    else await post("/v1/nodes/" + encodeURIComponent(id) + "/availability", { availability: what });
    flash(host + ": " + what + " done");
    return true;
  } catch (e) {
    flash(host + ": " + what + " failed: " + e.message, true);
    return false;
  }
}

export function nodeView(root, id) {
  root.innerHTML = '<p class="muted">Loading…</p>';
  let timer = null, stopped = false, host = id;
  const base = "/v1/nodes/" + encodeURIComponent(id);

  async function loadHistory() {
    const h = await get(base + "/history?range=" + range);
    if (stopped) return;
    $("nd-charts").innerHTML = charts(h);
    $("nd-step").textContent = "step " + h.step_s + " s";
  }
  async function poll(first) {
    clearTimeout(timer);
    try {
      const [d, h, c] = await Promise.all([get(base), get(base + "/history?range=" + range), get(base + "/containers")]);
      if (stopped) return;
      const s = d.summary || {};
      host = s.hostname || id;
      if (first) {
        root.innerHTML = '<h2 id="nd-title"></h2><div class="toolbar"><span id="nd-badges"></span>' +
          '<span class="actions" id="nd-actions">' + ACTIONS.map(([k, label]) => '<button type="button" data-act="' + k + '"' +
            (k === "remove" ? ' class="danger"' : "") + ">" + label + "</button>").join("") + "</span></div>" +
          '<h3>History <span class="ranges" id="nd-ranges">' + RANGES.map((r) => '<button type="button" data-range="' + r + '">' + r + "</button>").join("") +
          '</span> <span class="muted" id="nd-step"></span></h3><div class="charts" id="nd-charts"></div>' +
          '<h3>Containers</h3><div id="nd-containers"></div><h3>Facts</h3><div id="nd-facts"></div>';
        $("nd-ranges").addEventListener("click", (ev) => {
          const r = ev.target.dataset && ev.target.dataset.range;
          if (!r) return;
          range = r; markRange();
          loadHistory().catch((e) => { $("error").textContent = e.message; });
        });
        $("nd-actions").addEventListener("click", async (ev) => {
          const what = ev.target.dataset && ev.target.dataset.act;
          if (!what) return;
          if (await act(id, host, what)) {
            if (what === "remove") location.hash = "#/cluster"; else poll(false);
          }
        });
      }
      $("nd-title").textContent = host;
      $("nd-badges").innerHTML = badge(s.status) + " " + badge(s.swarm_state) + " " + badge(d.availability || s.availability);
      markRange();
      $("nd-charts").innerHTML = charts(h);
      $("nd-step").textContent = "step " + h.step_s + " s";
      $("nd-containers").innerHTML = containers(c);
      $("nd-facts").innerHTML = facts(d);
      $("error").textContent = "";
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (stopped) return;
      if (first && e.status === 404) { root.innerHTML = '<p class="error">No node ' + esc(id) + ' (removed?). <a href="#/cluster">Back to the cluster</a></p>'; return; }
      if (e.status !== 401) $("error").textContent = "Cannot load node " + id + ": " + e.message;
      if (first) { timer = setTimeout(() => poll(true), POLL_MS); return; }
    }
    if (!stopped) timer = setTimeout(() => poll(false), POLL_MS);
  }
  function markRange() {
    document.querySelectorAll("#nd-ranges button").forEach((b) => b.classList.toggle("on", b.dataset.range === range));
  }
  poll(true);
  return () => { stopped = true; clearTimeout(timer); };
}
