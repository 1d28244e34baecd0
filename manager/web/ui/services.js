// Services view: each service with image, replicas running/desired, constraints, update
// state and the nodes its tasks run on, failed tasks with their error (GET /v1/services
// every 5 s); scale and rebalance (force update), each behind the confirmation dialog.
import { get, post } from "./api.js";
import { confirmAction } from "./dialog.js";
import { $, esc, colours, badge, ago, flash } from "./util.js";

let colour = () => "c11";

const POLL_MS = 5000;

function row(s) {
  const replicas = s.mode !== "replicated" ? s.replicas_running + " (" + s.mode + ")" : s.replicas_running + " / " + (s.replicas_desired == null ? "–" : s.replicas_desired);
  const failed = (s.failed_tasks || []).map((t) => '<div class="failed-task" data-failed-task="' + esc(t.id) + '">' + esc(t.service_name || t.service_id) +
    (t.slot == null ? "" : "." + t.slot) + " " + esc(t.state) + " " + ago(t.updated_ms) + ": " + esc(t.error || "no error given") + "</div>").join("");
  const healthy = s.mode !== "replicated" || s.replicas_desired == null || s.replicas_running >= s.replicas_desired;
  return '<tr data-service="' + esc(s.name) + '" data-id="' + esc(s.id) + '"><td><span class="chip ' + colour(s.id) + '">' + esc(s.name) + "</span></td>" +
    "<td>" + esc(s.image) + '</td><td class="num"><span class="badge ' + (healthy ? "s-ok" : "s-pause") + ' replicas">' + esc(replicas) + "</span></td>" +
    "<td>" + ((s.constraints || []).map(esc).join("<br>") || "–") + "</td>" +
    "<td>" + (s.update_state ? badge(s.update_state, s.update_message) : "–") + (s.update_message ? '<br><span class="muted">' + esc(s.update_message) + "</span>" : "") + "</td>" +
    '<td class="nodes">' + ((s.nodes || []).map(esc).join(", ") || "–") + "</td><td>" + (failed || "–") + "</td>" +
    '<td><div class="actions">' + (s.mode === "replicated" ? '<button type="button" data-act="scale">Scale</button>' : "") +
    '<button type="button" data-act="rebalance">Rebalance</button></div></td></tr>';
}

export function servicesView(root) {
  root.innerHTML = '<h2>Services</h2><div class="scroll"><table id="services"><thead><tr><th>Service</th><th>Image</th><th>Replicas</th>' +
    "<th>Constraints</th><th>Update</th><th>Nodes</th><th>Failed tasks</th><th></th></tr></thead><tbody></tbody></table></div>";
  let timer = null, stopped = false, list = [];

  async function poll() {
    clearTimeout(timer);
    try {
      list = await get("/v1/services");
      if (stopped) return;
      list.sort((a, b) => a.name.localeCompare(b.name));
      colour = colours(list);
      root.querySelector("tbody").innerHTML = list.length ? list.map(row).join("") : '<tr><td colspan="8" class="muted">No service.</td></tr>';
      $("error").textContent = "";
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (!stopped && e.status !== 401) $("error").textContent = "Cannot load the services: " + e.message;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  // The listener is on the shared view root: it is removed when the view is left, or
  // every later visit would add one more (a second rebalance per press, and the node
  // view's own action buttons reaching this handler).
  const onClick = async (ev) => {
    const what = ev.target.dataset && ev.target.dataset.act;
    if (!what) return;
    const tr = ev.target.closest("tr[data-id]");
    if (!tr) return;
    const s = list.find((x) => x.id === tr.dataset.id);
    if (!s) return;
    const path = "/v1/services/" + encodeURIComponent(s.id) + "/" + what;
    try {
      if (what === "scale") {
        const n = await confirmAction("Scale " + s.name + " to how many replicas?", { label: "Replicas", value: s.replicas_desired || 0, min: 0, max: 1000 });
        if (n == null) return;
        await post(path, { replicas: n });
        flash(s.name + " scaled to " + n);
      } else {
        if (!(await confirmAction("Force an update of " + s.name + "? Its tasks restart and swarm spreads them again."))) return;
        await post(path);
        flash(s.name + ": rebalance started");
      }
      poll();
    } catch (e) {
      flash(s.name + ": " + what + " failed: " + e.message, true);
    }
  };
  root.addEventListener("click", onClick);
  poll();
  return () => { stopped = true; clearTimeout(timer); root.removeEventListener("click", onClick); };
}
