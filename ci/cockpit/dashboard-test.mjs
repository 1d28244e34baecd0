// The cockpit in a real browser: Debian's Chromium driven by playwright-core, against a
// manager fed by a real dockerd swarm (set up by ci/dashboard-test.sh, which runs this
// inside the manager's network namespace). Each check compares what the page shows
// with the engine itself (the docker CLI on the manager's engine socket).
//
// Env: COCKPIT_NPM (folder with node_modules), COCKPIT_URL (https://IP:PORT),
// COCKPIT_ADMIN_FILE (the admin-token file), COCKPIT_SPKI (the manager key's pin),
// COCKPIT_DOCKER (unix://... of the manager's engine), COCKPIT_OUT (screenshots),
// COCKPIT_DRAIN (hostname of the node to drain), COCKPIT_SCALE (service to scale),
// COCKPIT_BUSY (a container on that node held to 0.2 CPU), COCKPIT_OTHER (hostname of
// the node to pause, activate, promote, demote and remove).
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import { readFileSync, mkdirSync } from "node:fs";

const env = (k) => { const v = process.env[k]; if (!v) { console.error("dashboard-test.mjs: " + k + " is not set"); process.exit(2); } return v; };
const require = createRequire(env("COCKPIT_NPM") + "/");
const { chromium } = require("playwright-core");
const URL = env("COCKPIT_URL"), OUT = env("COCKPIT_OUT"), DOCKER = env("COCKPIT_DOCKER");
const DRAIN = env("COCKPIT_DRAIN"), SCALE = env("COCKPIT_SCALE"), BUSY = env("COCKPIT_BUSY"), OTHER = env("COCKPIT_OTHER");
const ADMIN = readFileSync(env("COCKPIT_ADMIN_FILE"), "utf8").split("\n").find((l) => l && !l.startsWith("#")).trim();
mkdirSync(OUT, { recursive: true });

// The parts of the run, in order. Each needs endpoints of the cockpit API (issue #13):
// a part joins this list when its endpoints are on main, so the test always covers
// everything the manager serves and fails on anything that breaks.
const STAGES = ["login", "cluster", "node", "drain", "services", "scale", "admin", "events", "logout"];
const on = (stage) => STAGES.includes(stage);

const t0 = Date.now();
let passed = 0, failed = 0;
const log = (m) => console.log("[cockpit " + String(Math.round((Date.now() - t0) / 1000)).padStart(3) + "s] " + m);
const pass = (m) => { passed++; log("PASS " + m); };
const fail = (m) => { failed++; log("FAIL " + m); };
const check = (ok, m, detail) => (ok ? pass(m) : fail(m + (detail ? ": " + detail : "")));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/// Polls f (async, truthy = done) every `every` ms for at most `secs` seconds.
async function until(secs, f, every = 500) {
  const end = Date.now() + secs * 1000;
  for (;;) {
    const v = await f().catch(() => null);
    if (v) return v;
    if (Date.now() > end) return null;
    await sleep(every);
  }
}
const docker = (...a) => execFileSync("docker", ["-H", DOCKER, ...a], { encoding: "utf8", timeout: 20000 }).trim();

/// The engine's placement: running tasks of every service -> node hostname.
function enginePlacement() {
  const m = new Map();
  for (const id of docker("service", "ls", "-q").split("\n").filter(Boolean)) {
    const out = docker("service", "ps", id, "--no-trunc", "--filter", "desired-state=running", "--format", "{{.ID}} {{.Node}} {{.CurrentState}}");
    for (const line of out.split("\n").filter(Boolean)) {
      const [task, node, state] = line.split(" ");
      if (state === "Running") m.set(task, node);
    }
  }
  return m;
}
async function pagePlacement(page) {
  const pairs = await page.$$eval(".col .chip.t-running", (els) => els.map((e) => [e.dataset.task, e.closest(".col").dataset.hostname]));
  return new Map(pairs);
}
function diff(a, b) {
  const out = [];
  for (const [k, v] of a) if (b.get(k) !== v) out.push(k.slice(0, 12) + ": engine " + v + ", page " + (b.get(k) || "absent"));
  for (const [k, v] of b) if (!a.has(k)) out.push(k.slice(0, 12) + ": page " + v + ", engine absent");
  return out;
}
const same = (a, b) => a.size > 0 && diff(a, b).length === 0;

async function shot(page, name) {
  const path = OUT + "/" + name + ".png";
  await page.screenshot({ path, fullPage: true });
  log("screenshot " + name + ": " + path);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--ignore-certificate-errors-spki-list=" + env("COCKPIT_SPKI")],
});
try {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await ctx.newPage();
  const cspViolations = [], pageErrors = [];
  page.on("console", (m) => { if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text()); });
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.setDefaultTimeout(15000);

  // ---- login: a wrong token is refused, the right one gives an HttpOnly cookie
  await page.goto(URL + "/");
  await page.waitForSelector("#login:not(.hidden)");
  await page.fill("#token", "not-the-admin-token");
  await page.click("#login button[type=submit]");
  const refused = await until(10, async () => /refused/.test(await page.textContent("#login-error")));
  check(refused && (await page.$$(".col")).length === 0, "a wrong token is refused and shows no data");
  await shot(page, "login");
  await page.fill("#token", ADMIN);
  await page.click("#login button[type=submit]");
  await page.waitForSelector("#login.hidden", { state: "attached" });
  const cookie = (await ctx.cookies()).find((c) => c.name === "armada_session");
  check(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === "Strict", "login sets the session cookie HttpOnly, Secure, SameSite=Strict", JSON.stringify(cookie));
  const stored = await page.evaluate(() => [localStorage.length + sessionStorage.length, document.cookie.includes("armada_session")]);
  check(stored[0] === 0 && !stored[1], "nothing in Web Storage and the cookie is invisible to scripts", JSON.stringify(stored));
  const csrf = await page.evaluate(async () => [(await fetch("/v1/session", { method: "DELETE" })).status, (await fetch("/v1/session")).status]);
  check(csrf[0] === 403 && csrf[1] === 200, "logout without X-Armada-CSRF is refused (403) and the session lives on", JSON.stringify(csrf));

  // ---- cluster view: placement equals `docker service ps` on the manager's engine
  let engine = null, shown = null;
  const placed = await until(60, async () => {
    engine = enginePlacement(); shown = await pagePlacement(page);
    return same(engine, shown);
  }, 1000);
  check(placed, "cluster view placement equals docker service ps (" + (engine ? engine.size : 0) + " running tasks)", placed ? "" : diff(engine, shown).join("; "));
  const cols = await page.$$eval(".col", (els) => els.map((e) => e.dataset.hostname));
  log("columns: " + cols.join(", "));
  const colours = await page.$$eval("#cl-legend .chip", (els) => els.map((e) => e.className));
  check(new Set(colours).size === colours.length && colours.length > 0, "one colour per service (" + colours.length + " services)");
  await shot(page, "cluster");

  const drainId = await page.$eval('.col[data-hostname="' + DRAIN + '"]', (e) => e.dataset.node);
  const otherId = await page.$eval('.col[data-hostname="' + OTHER + '"]', (e) => e.dataset.node);
  const tasksBefore = [...engine.values()].filter((n) => n === DRAIN).length;

  if (on("node")) {
    // ---- node view of the node to drain: charts have points, containers, facts
    await page.click('.col[data-hostname="' + DRAIN + '"] h4 a');
    await page.waitForSelector("#nd-charts svg");
    const points = await until(40, async () => {
      await page.click('#nd-ranges button[data-range="1h"]');
      await sleep(300);
      const p = await page.$$eval("#nd-charts .chart", (els) => els.map((e) => [e.querySelector("svg").getAttribute("aria-label"), Number(e.querySelector("svg").dataset.points)]));
      return p.find((x) => x[0] === "CPU busy")[1] > 0 && p.find((x) => x[0] === "Memory used")[1] > 0 ? p : null;
    }, 2000);
    check(points, "node view charts have points (" + (points ? points.map((p) => p[0] + " " + p[1]).join(", ") : "none") + ")");
    // The page polls every 10 s; the agent reports every 2 s and finds a new container at
    // its next cycle. On a miss, print what the API answered (the rows the page drew from).
    const tRows = Date.now();
    const containers = await until(20, async () => { const n = (await page.$$("#containers tbody tr")).length; return n >= tasksBefore && n > 0 ? n : null; }, 1000);
    let apiRows = "";
    if (!containers) {
      apiRows = await page.evaluate(async (id) => {
        const [c, d] = await Promise.all(["/containers", ""].map((p) => fetch("/v1/nodes/" + encodeURIComponent(id) + p).then((r) => r.text())));
        const node = JSON.parse(d), now = Date.now();
        return "GET /v1/nodes/" + id + "/containers at " + now + " (last report " + (node.summary ? node.summary.last_report_ms : node.last_report_ms) + "): " + c.slice(0, 3000);
      }, drainId).catch((e) => "GET /v1/nodes/" + drainId + "/containers failed: " + e);
    }
    check(containers, "node view lists the node's containers (" + containers + " rows after " + ((Date.now() - tRows) / 1000).toFixed(1) + " s, " + tasksBefore + " swarm tasks on it)", apiRows);
    // The busy container's CPU: a rate between its last two snapshots, in the API and in
    // its row (its CFS quota holds it to 0.2 CPU; a loaded machine may give it less).
    let busy = null;
    const busyOk = await until(25, async () => {
      const rows = await page.evaluate(async (id) => (await fetch("/v1/nodes/" + encodeURIComponent(id) + "/containers")).json(), drainId);
      const api = rows.find((c) => c.name === BUSY);
      const cell = await page.$$eval("#containers tbody tr", (trs, name) => {
        const tr = trs.find((t) => t.querySelector("b").textContent === name);
        return tr ? tr.querySelector("td.cpu").textContent : null;
      }, BUSY);
      busy = { api: api ? api.cpu_ratio : "absent", page: cell };
      const shown = cell && /^\d+ %$/.test(cell) ? Number(cell.split(" ")[0]) : null;
      return api && typeof api.cpu_ratio === "number" && api.cpu_ratio > 0.02 && api.cpu_ratio < 0.3 && shown >= 2 && shown <= 30;
    }, 1000);
    check(busyOk, "a busy container's row shows its CPU (" + BUSY + ": API " + JSON.stringify(busy) + ")");
    const facts = await page.textContent("#facts");
    check(facts.includes("Docker") && facts.includes(drainId), "node view shows the facts");
    await shot(page, "node");
    for (const r of ["24h", "7d"]) {
      await page.click('#nd-ranges button[data-range="' + r + '"]');
      const ok = await until(10, async () => (await page.textContent("#nd-step")).includes("step"));
      check(ok, "history range " + r + " loads (" + (await page.textContent("#nd-step")) + ")");
    }
  }

  if (on("drain")) {
    // ---- CSRF on an action, then drain from the page
    const noCsrf = await page.evaluate(async (id) => (await fetch("/v1/nodes/" + encodeURIComponent(id) + "/availability",
      { method: "POST", headers: { "Content-Type": "application/json" }, body: '{"availability":"drain"}' })).status, drainId);
    check(noCsrf === 403, "a state change without X-Armada-CSRF gets 403 (got " + noCsrf + ")");
    check(docker("node", "inspect", DRAIN, "--format", "{{.Spec.Availability}}") === "active", "... and the node stays active in the engine");

    // ---- drain from the page, through the confirmation dialog
    await page.click('#nd-actions button[data-act="drain"]');
    await page.waitForSelector("#confirm[open]");
    const question = await page.textContent("#confirm-text");
    check(question.includes(DRAIN), "drain asks for confirmation: " + question);
    const tDrain = Date.now();
    await page.click("#confirm-ok");
    const drained = await until(15, async () => docker("node", "inspect", DRAIN, "--format", "{{.Spec.Availability}}") === "drain");
    check(drained, "the engine shows " + DRAIN + " drained");
    await page.click('nav a[data-view="cluster"]');
    const moved = await until(90, async () => {
      engine = enginePlacement(); shown = await pagePlacement(page);
      const left = await page.$$('.col[data-hostname="' + DRAIN + '"] .chip.t-running');
      return left.length === 0 && ![...engine.values()].includes(DRAIN) && same(engine, shown);
    }, 1000);
    check(moved, "draining in the page moved " + tasksBefore + " tasks off " + DRAIN + ": page and engine agree after " + ((Date.now() - tDrain) / 1000).toFixed(1) + " s",
      moved ? "" : diff(engine || new Map(), shown || new Map()).join("; "));
    check(await page.$('.col[data-hostname="' + DRAIN + '"] .badge.s-drain'), "the node's column shows the drain badge");
    await shot(page, "cluster-drained");
  }

  if (on("services")) {
    // ---- services view: replicas as the engine counts them
    await page.click('nav a[data-view="services"]');
    await page.waitForSelector('#services tr[data-service="' + SCALE + '"]');
    let engineServices = [];
    // Re-read the engine each time: just after the drain it still counts a global task
    // that is shutting down on the drained node (e.g. mon 3/2) until that one is gone.
    const rows = await until(30, async () => {
      engineServices = docker("service", "ls", "--format", "{{.Name}} {{.Replicas}}").split("\n").map((l) => l.split(" "));
      const shownRows = await page.$$eval("#services tbody tr[data-service]", (els) => els.map((e) => [e.dataset.service, e.querySelector(".replicas").textContent]));
      return engineServices.every(([n, r]) => shownRows.some(([sn, sr]) => {
        // "6/6" (running/desired) from the engine; "6 / 6" or "3 (global)" in the page.
        const en = r.match(/\d+/g) || [], pn = sr.match(/\d+/g) || [];
        return sn === n && pn.length > 0 && pn.every((x, i) => x === en[i]);
      })) ? shownRows : null;
    }, 1000);
    check(rows, "services view shows each service's replicas as docker service ls (" + engineServices.map((s) => s.join(" ")).join(", ") + ")");
    const db = await page.textContent('#services tr[data-service="db"]');
    const dbNodes = new Set(docker("service", "ps", "db", "--filter", "desired-state=running", "--format", "{{.Node}}").split("\n"));
    check(db.includes("node.labels.armada.board==pine64") && [...dbNodes].every((n) => db.includes(n)),
      "services view shows db's constraint and the nodes it runs on (" + [...dbNodes].join(", ") + ")");
    await shot(page, "services");
  }

  if (on("scale")) {
    // ---- scale through the dialog
    const before = Number(docker("service", "inspect", SCALE, "--format", "{{.Spec.Mode.Replicated.Replicas}}"));
    await page.click('#services tr[data-service="' + SCALE + '"] button[data-act="scale"]');
    await page.waitForSelector("#confirm[open]");
    await page.fill("#confirm-input", String(before + 1));
    await page.click("#confirm-ok");
    const scaled = await until(15, async () => Number(docker("service", "inspect", SCALE, "--format", "{{.Spec.Mode.Replicated.Replicas}}")) === before + 1);
    check(scaled, "scaling " + SCALE + " in the page from " + before + " to " + (before + 1) + " changes the engine's service");
    await until(20, async () => (await page.textContent('#services tr[data-service="' + SCALE + '"] .replicas')).includes("/ " + (before + 1)), 1000);
    await shot(page, "services-scaled");
  }

  if (on("admin")) {
    // ---- every other admin action, pressed in the page: each asks for confirmation,
    // writes an audit entry, and the engine shows its effect (docker node/service inspect).
    const audit = async () => page.evaluate(async () => (await fetch("/v1/audit?limit=50")).json());
    const inspect = (what, id, fmt) => { try { return docker(what, "inspect", id, "--format", fmt); } catch (e) { return "absent"; } };
    /// Presses button `act` (in `scope`), checks the dialog names `name`, confirms, waits
    /// for `effect()` and for an ok audit entry of `action` on `target` newer than the press.
    async function press(scope, act, name, action, target, effect, what) {
      const t = Date.now();
      await page.click(scope + ' button[data-act="' + act + '"]');
      await page.waitForSelector("#confirm[open]");
      const question = await page.textContent("#confirm-text");
      await page.click("#confirm-ok");
      const done = await until(30, async () => effect(), 500);
      const entry = await until(10, async () => (await audit()).find((a) => a.action === action && a.target === target && a.at_ms >= t - 1000 && a.result === "ok"), 500);
      check(question.includes(name) && done && entry, what + " (" + ((Date.now() - t) / 1000).toFixed(1) + " s; audit " + (entry ? entry.action + " " + JSON.stringify(entry.params) + " by " + entry.actor : "absent") + ")",
        "dialog: " + question + "; engine: " + done);
    }
    const nodeScope = "#nd-actions";
    await page.goto(URL + "/#/node/" + encodeURIComponent(otherId));
    await page.waitForSelector(nodeScope + ' button[data-act="pause"]');
    const avail = () => inspect("node", OTHER, "{{.Spec.Availability}}");
    const role = () => inspect("node", OTHER, "{{.Spec.Role}}");
    await press(nodeScope, "pause", OTHER, "availability", otherId, async () => avail() === "pause", "pausing " + OTHER + " in the page pauses it in the engine");
    await press(nodeScope, "active", OTHER, "availability", otherId, async () => avail() === "active", "activating " + OTHER + " in the page makes it active in the engine");
    // Promotion goes through the manager's Engine API (operator only); the engine's raft
    // must count the new manager reachable, then the demotion takes it back.
    await press(nodeScope, "promote", OTHER, "promote", otherId,
      async () => role() === "manager" && inspect("node", OTHER, "{{if .ManagerStatus}}{{.ManagerStatus.Reachability}}{{end}}") === "reachable", "promoting " + OTHER + " in the page makes it a reachable swarm manager");
    await press(nodeScope, "demote", OTHER, "demote", otherId, async () => role() === "worker", "demoting " + OTHER + " in the page makes it a worker again");

    // Rebalance (force update): the service's ForceUpdate counter goes up.
    await page.click('nav a[data-view="services"]');
    await page.waitForSelector('#services tr[data-service="' + SCALE + '"] button[data-act="rebalance"]');
    const svcId = docker("service", "inspect", SCALE, "--format", "{{.ID}}");
    const force = () => Number(inspect("service", SCALE, "{{.Spec.TaskTemplate.ForceUpdate}}"));
    const forceBefore = force();
    await press('#services tr[data-service="' + SCALE + '"]', "rebalance", SCALE, "rebalance", svcId,
      async () => force() === forceBefore + 1, "rebalancing " + SCALE + " in the page bumps its ForceUpdate " + forceBefore + " -> " + (forceBefore + 1));

    // Remove (revoke) last: the node leaves armada and the swarm.
    await page.goto(URL + "/#/node/" + encodeURIComponent(otherId));
    await page.waitForSelector(nodeScope + ' button[data-act="remove"]');
    await press(nodeScope, "remove", OTHER, "remove", otherId, async () => {
      const gone = !docker("node", "ls", "--format", "{{.Hostname}}").split("\n").includes(OTHER);
      const listed = await page.evaluate(async (id) => (await fetch("/v1/nodes/" + encodeURIComponent(id))).status, otherId);
      return gone && listed === 404 ? "gone" : null;
    }, "removing " + OTHER + " in the page revokes it and takes it out of the swarm");
    const col = await until(10, async () => !(await page.$('.col[data-hostname="' + OTHER + '"]')), 500);
    check(col, "... and the cluster view drops its column");
  }

  if (on("events")) {
    // ---- events view: an alert firing, the admin actions, newest first
    await page.click('nav a[data-view="events"]');
    const alert = await until(60, async () => page.$('#events tr[data-kind="alert_firing"]'), 2000);
    check(alert, "events view shows an alert firing" + (alert ? ": " + (await alert.textContent()) : ""));
    const admin = await until(15, async () => page.$('#events tr[data-kind="admin_action"]'), 1000);
    check(admin, "events view shows the admin actions");
    const seqs = await page.$$eval("#events tbody tr[data-seq]", (els) => els.map((e) => Number(e.dataset.seq)));
    check(seqs.length > 1 && seqs.every((s, i) => i === 0 || s < seqs[i - 1]), "events are newest first (" + seqs.length + " shown)");
    await page.selectOption("#ev-kind", { label: "alerts" });
    const filtered = await until(10, async () => {
      const kinds = await page.$$eval("#events tbody tr[data-kind]", (els) => els.map((e) => e.dataset.kind));
      return kinds.length > 0 && kinds.every((k) => k.startsWith("alert_")) ? kinds : null;
    });
    check(filtered, "the kind filter keeps only alerts (" + (filtered ? filtered.length : 0) + " rows)");
    const audit = await page.$$eval("#audit tbody tr", (els) => els.map((e) => e.textContent));
    check(audit.some((t) => /drain|availability/.test(t)), "the audit log lists the drain");
    await page.selectOption("#ev-kind", { label: "all kinds" });
    await shot(page, "events");
  }

  // ---- a phone's width: every view fits 390 px without sideways scrolling
  await page.setViewportSize({ width: 390, height: 844 });
  const phoneViews = [["cluster", ".col"], ["node/" + encodeURIComponent(drainId), "#nd-charts svg"], ["services", "#services tr[data-service]"], ["events", "#events tr[data-kind]"]]
    .filter(([v]) => on(v.split("/")[0]));
  for (const [view, ready] of phoneViews) {
    await page.goto(URL + "/#/" + view);
    await page.waitForSelector(ready);
    await sleep(300);
    const w = await page.evaluate(() => document.documentElement.scrollWidth);
    const name = view.split("/")[0];
    check(w <= 390, name + " view fits a 390 px wide screen (document " + w + " px)");
    await shot(page, name + "-390");
  }

  // ---- logout ends the session
  await page.click("#logout");
  await page.waitForSelector("#login:not(.hidden)");
  const after = await page.evaluate(async () => (await fetch("/v1/session")).status);
  check(after === 401, "after logout GET /v1/session is 401 (got " + after + ")");
  check(cspViolations.length === 0, "no Content-Security-Policy violation", cspViolations.join("; "));
  check(pageErrors.length === 0, "no script error in the page", pageErrors.join("; "));
} catch (e) {
  fail("browser run aborted: " + (e && e.stack ? e.stack.split("\n").slice(0, 3).join(" | ") : e));
} finally {
  await browser.close();
}
log("browser part took " + ((Date.now() - t0) / 1000).toFixed(1) + " s");
console.log(passed + " passed, " + failed + " failed");
process.exit(failed ? 1 : 0);
