// Cluster view (the Swarm Visualizer's job): one column per node with its health badges
// and a chip per task, coloured by service, from GET /v1/cluster every 3 s. A chip that
// was not on that node at the previous poll is outlined, so moves are seen.
import { get } from "./api.js";
import { $, esc, badge, colours, num, pct } from "./util.js";

let colour = () => "c11";

const POLL_MS = 3000;

function pill(text, cls, title) {
  return '<span class="badge ' + cls + '" title="' + esc(title) + '">' + esc(text) + "</span>";
}

function nodeBadges(n) {
  const b = n.badges || {}, out = [];
  const t = b.temperature_celsius;
  if (t != null) out.push(pill(num(t, 0) + " °C", t >= 80 ? "s-bad" : t >= 70 ? "s-pause" : "", "SoC temperature"));
  if (b.under_voltage_now) out.push(pill("under-voltage", "s-bad", "under-voltage now"));
  else if (b.under_voltage_since_boot) out.push(pill("uv since boot", "s-pause", "under-voltage seen since boot"));
  const f = b.fs_used_ratio_max;
  if (f != null) out.push(pill("disk " + pct(f), f >= 0.9 ? "s-bad" : f >= 0.8 ? "s-pause" : "", "fullest filesystem"));
  if (b.fs_read_only) out.push(pill("read-only fs", "s-bad", "a filesystem is read-only"));
  return out.join("");
}

function chip(t, fresh) {
  const slot = t.slot == null ? "" : "." + t.slot;
  const title = t.service_name + slot + " · " + t.state + (t.error ? " · " + t.error : "") + " · " + t.image;
  return '<span class="chip ' + colour(t.service_id) + " t-" + esc(String(t.state).replace(/[^a-z]/g, "")) +
    (fresh ? " t-new" : "") + '" data-task="' + esc(t.id) + '" data-service="' + esc(t.service_name) +
    '" title="' + esc(title) + '">' + esc(t.service_name + slot) + "</span>";
}

function column(n, tasks, prev) {
  const role = n.swarm_role ? n.swarm_role + (n.leader ? " (leader)" : "") : n.role;
  const name = n.node_id
    ? '<a href="#/node/' + encodeURIComponent(n.node_id) + '">' + esc(n.hostname) + "</a>"
    : esc(n.hostname) + ' <span class="muted">(not in armada)</span>';
  const chips = tasks.map((t) => chip(t, prev && prev.get(t.id) !== n.swarm_node_id)).join("");
  return '<div class="col st-' + esc(n.status) + " av-" + esc(n.availability || "none") + '" data-hostname="' + esc(n.hostname) +
    '" data-swarm="' + esc(n.swarm_node_id || "") + '" data-node="' + esc(n.node_id || "") + '">' +
    "<h4>" + name + "</h4>" +
    '<div class="meta">' + esc(n.board || "") + " · " + esc(role || "") + "</div>" +
    '<div class="badges">' + badge(n.status) + badge(n.availability) + nodeBadges(n) + "</div>" +
    '<div class="chips">' + chips + "</div></div>";
}

function order(a, b) {
  const ra = a.swarm_role === "manager" ? 0 : 1, rb = b.swarm_role === "manager" ? 0 : 1;
  return ra - rb || String(a.hostname).localeCompare(String(b.hostname));
}

export function clusterView(root) {
  root.innerHTML = '<h2>Cluster</h2><div class="toolbar"><input id="cl-filter" type="search" placeholder="filter hosts or services">' +
    '<span class="muted" id="cl-summary"></span></div><div class="legend" id="cl-legend"></div><div class="board" id="cl-board"></div>';
  let timer = null, stopped = false, last = "", prev = null, data = null;
  const filter = $("cl-filter");

  function draw() {
    colour = colours(data.services);
    const q = filter.value.trim().toLowerCase();
    const byNode = new Map();
    const unplaced = [];
    for (const t of data.tasks) {
      if (!t.swarm_node_id) { unplaced.push(t); continue; }
      if (!byNode.has(t.swarm_node_id)) byNode.set(t.swarm_node_id, []);
      byNode.get(t.swarm_node_id).push(t);
    }
    for (const list of byNode.values()) list.sort((a, b) => a.service_name.localeCompare(b.service_name) || (a.slot || 0) - (b.slot || 0));
    const nodes = data.nodes.slice().sort(order);
    const html = [];
    for (const n of nodes) {
      const tasks = (n.swarm_node_id && byNode.get(n.swarm_node_id)) || [];
      if (q && !String(n.hostname).toLowerCase().includes(q) && !tasks.some((t) => t.service_name.toLowerCase().includes(q))) continue;
      html.push(column(n, tasks, prev));
    }
    if (unplaced.length) {
      html.push(column({ hostname: "not placed", status: "pending", swarm_node_id: "", node_id: null, board: "tasks waiting for a node" }, unplaced, null)
        .replace("(not in armada)", ""));
    }
    $("cl-board").innerHTML = html.join("") || '<p class="muted">No node yet.</p>';
    $("cl-legend").innerHTML = data.services.slice().sort((a, b) => a.name.localeCompare(b.name))
      .map((s) => '<span class="chip ' + colour(s.id) + '">' + esc(s.name) + "</span>").join("");
    const running = data.tasks.filter((t) => t.state === "running").length;
    $("cl-summary").textContent = data.nodes.length + " nodes · " + data.services.length + " services · " + running + " tasks running";
  }

  async function poll() {
    try {
      let c, note = "";
      try {
        c = await get("/v1/cluster");
      } catch (e) {
        if (e.status !== 503) throw e;
        // The manager's engine is away: armada's own nodes still show, without tasks.
        c = { nodes: await get("/v1/nodes"), services: [], tasks: [] };
        note = "The swarm's engine is not reachable (" + e.message + "): nodes without tasks.";
      }
      if (stopped) return;
      // Names the engine may not give (a task of a service just removed): ids instead.
      for (const t of c.tasks) { t.service_name = t.service_name || String(t.service_id).slice(0, 12); t.image = t.image || ""; }
      for (const n of c.nodes) n.hostname = n.hostname || n.swarm_node_id || n.node_id || "?";
      const key = JSON.stringify([c.nodes, c.tasks, c.services]);
      if (key !== last) {
        const before = data ? new Map(data.tasks.map((t) => [t.id, t.swarm_node_id])) : null;
        prev = before; data = c; last = key;
        performance.mark("cluster-data");
        draw();
        performance.mark("cluster-drawn");
      }
      $("error").textContent = note;
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (!stopped && e.status !== 401) $("error").textContent = "Cannot load the cluster: " + e.message;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  filter.addEventListener("input", () => { if (data) draw(); });
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
