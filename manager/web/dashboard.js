// The dashboard's entry module: session (login exchanges the admin token for the
// HttpOnly session cookie: POST /v1/session; logout: DELETE /v1/session), the hash
// router (#/cluster, #/node/ID, #/services, #/events) and the header's node counts
// (GET /v1/nodes). Each view is a module under /ui/ that polls its own endpoints and
// returns a function that stops it.
import { resume, login, logout, setLoggedOutHandler, get } from "/ui/api.js";
import { $ } from "/ui/util.js";
import { clusterView } from "/ui/cluster.js";
import { nodeView } from "/ui/node.js";
import { servicesView } from "/ui/services.js";
import { eventsView } from "/ui/events.js";

const PATH_NODES = "/v1/nodes";
let stopView = null, stopCounts = null, loggedIn = false;

function showLogin(message) {
  loggedIn = false;
  if (stopView) { stopView(); stopView = null; }
  if (stopCounts) { stopCounts(); stopCounts = null; }
  $("view").innerHTML = ""; $("counts").innerHTML = ""; $("updated").textContent = ""; $("error").textContent = "";
  $("nav").classList.add("hidden"); $("logout").classList.add("hidden");
  $("login").classList.remove("hidden");
  $("login-error").textContent = message || "";
  $("token").focus();
}

function route() {
  if (!loggedIn) return;
  if (stopView) stopView();
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const name = parts[0] || "cluster";
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === name));
  $("error").textContent = "";
  const root = $("view");
  if (name === "node" && parts[1]) stopView = nodeView(root, decodeURIComponent(parts[1]));
  else if (name === "services") stopView = servicesView(root);
  else if (name === "events") stopView = eventsView(root);
  else stopView = clusterView(root);
}

// Node counts by status in the header, every 10 s, whatever the view.
function counts() {
  let timer = null, stopped = false;
  async function poll() {
    try {
      const nodes = await get(PATH_NODES);
      const c = {};
      nodes.forEach((n) => { c[n.status] = (c[n.status] || 0) + 1; });
      $("counts").innerHTML = "<span><b>" + nodes.length + "</b> nodes</span>" +
        Object.keys(c).sort().map((k) => '<span class="n-' + k.replace(/[^a-z]/g, "") + '">' + k + " <b>" + c[k] + "</b></span>").join("");
    } catch (_) { /* the view shows the error */ }
    if (!stopped) timer = setTimeout(poll, 10000);
  }
  // Later than the view's own first load: at 1,000 nodes both answers are large, and
  // the view's comes first.
  timer = setTimeout(poll, 1500);
  return () => { stopped = true; clearTimeout(timer); };
}

function start() {
  loggedIn = true;
  $("login").classList.add("hidden");
  $("nav").classList.remove("hidden"); $("logout").classList.remove("hidden");
  stopCounts = counts();
  route();
}

setLoggedOutHandler(() => { if (loggedIn) showLogin("The session ended: log in again."); });
window.addEventListener("hashchange", route);

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (!t) return;
  try {
    await login(t);
    $("token").value = "";
    start();
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? "The admin token was refused." : "Cannot log in: " + e.message;
  }
});
$("logout").addEventListener("click", async () => {
  try { await logout(); } catch (_) { /* the cookie is gone or the manager is away: show the form */ }
  showLogin("Logged out.");
});

(async () => {
  try {
    if (await resume()) start(); else showLogin();
  } catch (e) {
    showLogin("Cannot reach the manager: " + e.message);
  }
})();
