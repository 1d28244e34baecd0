#!/usr/bin/env bash
# Alerts end to end on a real swarm: three dockerd in network namespaces this script
# creates (arm-al-node1..3 on 172.30.17.0/24 behind a bridge in arm-al-hub), the
# manager on node1 (its engine is the swarm manager), agents on node2 and node3 at the
# 10 s report interval, and a webhook receiver (python3, this script's own listener) on
# node1's loopback. It shows:
#   - node3's agent reads a fixture tree (--root) with the rpi_volt under-voltage
#     alarm raised and an 85 °C thermal zone: ArmadaUnderVoltage and
#     ArmadaHighTemperature are delivered;
#   - node2's dockerd stopped: ArmadaNodeDown delivered within 40 s (latency printed);
#   - the manager restarted (SIGTERM, start) while it fires: no second "firing";
#   - node2's dockerd back: exactly one "resolved";
#   - a container on node3 that keeps exiting (--restart always, every ~2 s): its
#     restart count reported, ArmadaContainerRestartLoop delivered (latency printed).
# Every wait is bounded; teardown (trap) ends by PID what it started, unmounts,
# deletes the namespaces and cgroups.
#
#   ci/alerts-test.sh   (as root; binaries from target/debug, built by ci/tier-cluster.sh)
# Env: ARMADA_BIN_DIR (default target/debug), ARMADA_ALERTS_WORK (default
# /tmp/armada-alerts-test), ARMADA_ALERTS_KEEP=1 keeps the work folder.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=ci/lib/nodes.sh
. ci/lib/nodes.sh

BIN=${ARMADA_BIN_DIR:-$repo/${CARGO_TARGET_DIR:-target}/debug}
WORK=${ARMADA_ALERTS_WORK:-/tmp/armada-alerts-test}
INTERVAL=10
MGR_IP=172.30.17.1
MGR=$MGR_IP:7443
HOOK_PORT=9099
IMAGE=arm-al/busybox:1

passed=0 failed=0 failures=()
t_start=$(date +%s)
log() { printf '[alerts %3ds] %s\n' "$(($(date +%s) - t_start))" "$*"; }
pass() { passed=$((passed + 1)); log "PASS $1"; }
fail() {
  failed=$((failed + 1)); failures+=("$1"); log "FAIL $1"
  shift
  local f
  for f in "$@"; do nodes_log_tail "$f" 30; done
}

if [ "$(id -u)" -ne 0 ]; then
  echo "alerts-test: must run as root (network namespaces, dockerd)" >&2
  exit 1
fi
for b in armada armada-agent armada-manager; do
  [ -x "$BIN/$b" ] || { echo "alerts-test: $BIN/$b is missing: build it first" >&2; exit 1; }
done
for t in dockerd docker nsenter unshare ip jq curl busybox python3; do
  command -v "$t" >/dev/null || { echo "alerts-test: $t is missing: run ci/host-deps.sh" >&2; exit 1; }
done

cleanup() {
  log "teardown"
  nodes_teardown
  if [ "${ARMADA_ALERTS_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
}
nodes_init arm-al 172.30.17 "$WORK"
nodes_teardown
rm -rf "$WORK"
nodes_init arm-al 172.30.17 "$WORK"
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=ci/lib/wait.sh
. ci/lib/wait.sh
admin_token() { grep -v '^#' "$WORK/cluster/admin-token" | grep -m1 .; }
boot_token() { grep -v '^#' "$WORK/cluster/token" | grep -m1 .; }
api() {
  local path=$1; shift
  nodes_in 1 curl -sS --max-time 10 --cacert "$WORK/cluster/ca.pem" \
    -H "Authorization: Bearer $(admin_token)" "$@" "https://$MGR$path"
}
HOOKS=$WORK/hooks.jsonl
# deliveries NAME STATUS [HOST]: how many notifications the receiver got.
deliveries() {
  jq -s --arg n "$1" --arg s "$2" --arg h "${3:-}" \
    '[.[] | select(.body.alert.alertname == $n and .body.status == $s and ($h == "" or .body.alert.labels.hostname == $h))] | length' "$HOOKS" 2>/dev/null || echo 0
}
# first_at NAME STATUS HOST: receive time (epoch s) of the first such notification.
first_at() {
  jq -s -r --arg n "$1" --arg s "$2" --arg h "$3" \
    '[.[] | select(.body.alert.alertname == $n and .body.status == $s and .body.alert.labels.hostname == $h)][0].received_at // empty' "$HOOKS"
}
delivered() { [ "$(deliveries "$@")" -ge 1 ]; }

start_manager() {
  nodes_bg_in 1 "$WORK/manager.log.$1" "$BIN/armada-manager" serve \
    --cluster-dir "$WORK/cluster" --state-dir "$WORK/manager-state" --listen 0.0.0.0:7443 \
    --docker-host "$(nodes_sock 1)" --swarm-advertise-addr "$MGR_IP" \
    --report-interval "$INTERVAL" --config "$WORK/manager.toml"
  MANAGER_PID=$NODES_LAST_PID
  ln -sf "manager.log.$1" "$WORK/manager.log"
  wait_until 30 api /v1/health -f --max-time 2
}

write_config() {
  local n=$1
  mkdir -p "$WORK/node$n"
  cat >"$WORK/node$n/armada.toml" <<EOF
hostname = "al-node$n"
role = "worker"
board = "rpi3"

[manager]
address = "$MGR_IP"
token = "$(boot_token)"

[agent]
metrics_listen = "$(nodes_ip "$n"):9101"
cgroup_parent = "$(nodes_cgroup_parent "$n")"
EOF
}

# node2: the host's /proc and /sys. node3: a fixture /sys with the Pi's rpi_volt alarm
# raised and a hot SoC zone (as the rpi_volt hwmon driver and the thermal framework
# lay them out), the host's for the rest (cgroups, block devices, network).
make_root() {
  local n=$1 r="$WORK/node$1/root"
  mkdir -p "$r/etc"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$r/etc/machine-id"
  echo "al-node$n" >"$r/etc/hostname"
  ln -sfn /proc "$r/proc"
  if [ "$n" != 3 ]; then ln -sfn /sys "$r/sys"; return; fi
  mkdir -p "$r/sys/class/hwmon/hwmon0" "$r/sys/class/thermal/thermal_zone0"
  echo rpi_volt >"$r/sys/class/hwmon/hwmon0/name"
  echo 1 >"$r/sys/class/hwmon/hwmon0/in0_lcrit_alarm"
  echo cpu-thermal >"$r/sys/class/thermal/thermal_zone0/type"
  echo 85000 >"$r/sys/class/thermal/thermal_zone0/temp"
  local d
  for d in fs devices block bus kernel module dev; do [ -e "/sys/$d" ] && ln -sfn "/sys/$d" "$r/sys/$d"; done
  ln -sfn /sys/class/net "$r/sys/class/net"
  ln -sfn /sys/class/block "$r/sys/class/block"
}

start_agent() {
  local n=$1
  nodes_bg_in "$n" "$WORK/node$n/agent.log" "$BIN/armada-agent" run \
    --config "$WORK/node$n/armada.toml" --state-dir "$WORK/node$n/state" \
    --docker-host "$(nodes_sock "$n")" --root "$WORK/node$n/root"
}

# ---------------------------------------------------------------- set-up
log "network namespaces and three dockerd"
nodes_setup_hub || { echo "alerts-test: could not create the hub namespace" >&2; exit 1; }
for n in 1 2 3; do nodes_add_node "$n" || { echo "alerts-test: could not create node $n" >&2; exit 1; }; done
for n in 1 2 3; do nodes_start_dockerd "$n" "al-node$n"; done
for n in 1 2 3; do nodes_wait_dockerd "$n" 60 || { echo "alerts-test: dockerd of node $n did not start" >&2; exit 1; }; done
nodes_import_busybox 3 "$IMAGE" || { echo "alerts-test: docker import failed" >&2; exit 1; }
if ! "$BIN/armada" cluster init "$WORK/cluster" --san "$MGR_IP" >"$WORK/cluster-init.log" 2>&1; then
  nodes_log_tail "$WORK/cluster-init.log"; echo "alerts-test: armada cluster init failed" >&2; exit 1
fi

cat >"$WORK/receiver.py" <<'EOF'
# The test's webhook receiver: one JSON line per POST (body + receive time).
import json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

out = open(sys.argv[2], "a", buffering=1)

class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {"raw": body.decode("utf-8", "replace")}
        out.write(json.dumps({"received_at": time.time(), "path": self.path, "body": parsed}) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
EOF
: >"$HOOKS"
nodes_bg_in 1 "$WORK/receiver.log" python3 "$WORK/receiver.py" "$HOOK_PORT" "$HOOKS"

cat >"$WORK/manager.toml" <<EOF
# manager.toml of ci/alerts-test.sh
[alerts]
interval = "2s"
startup_grace = "30s"

[alerts.rules.temperature]
threshold = 80.0
for = "10s"

[[receivers]]
name = "test-hook"
kind = "webhook"
url = "http://127.0.0.1:$HOOK_PORT/hook?token=not-for-logs"
EOF

log "manager on node1, agents on node2 and node3 (report interval ${INTERVAL}s)"
start_manager 1 || { fail "manager starts" "$WORK/manager.log"; exit 1; }
for n in 2 3; do make_root "$n"; write_config "$n"; start_agent "$n"; done
swarm_ready() {
  [ "$(api /v1/nodes -f | jq '[.[] | select(.swarm_state == "ready")] | length')" -ge 2 ]
}
if wait_until 90 swarm_ready; then
  pass "node2 and node3 registered and joined the swarm"
else
  fail "node2 and node3 join the swarm" "$WORK/manager.log" "$WORK/node2/agent.log" "$WORK/node3/agent.log"
  exit 1
fi

# ---------------------------------------------------------------- fixture board health
log "node3's fixture tree: rpi_volt alarm raised, thermal zone at 85 °C"
if wait_until 60 delivered ArmadaUnderVoltage firing al-node3 && wait_until 30 delivered ArmadaHighTemperature firing al-node3; then
  pass "under-voltage and 85 °C on node3's fixture tree delivered (ArmadaUnderVoltage, ArmadaHighTemperature)"
else
  fail "fixture under-voltage and temperature delivered" "$WORK/manager.log" "$WORK/node3/agent.log" "$HOOKS"
fi
if grep -q "not-for-logs" "$WORK/manager.log"; then
  fail "the receiver URL's query (a secret) never appears in the manager's log"
else
  pass "the receiver URL's query (a secret) never appears in the manager's log"
fi

# ---------------------------------------------------------------- node down
log "stopping node2's dockerd"
t0=$(date +%s.%N)
nodes_kill_dockerd 2 TERM
if wait_until 60 delivered ArmadaNodeDown firing al-node2; then
  at=$(first_at ArmadaNodeDown firing al-node2)
  latency=$(awk -v a="$at" -v b="$t0" 'BEGIN {printf "%.1f", a - b}')
  if awk -v l="$latency" 'BEGIN {exit !(l <= 40)}'; then
    pass "ArmadaNodeDown for al-node2 delivered ${latency}s after its dockerd stopped (limit 40 s)"
  else
    fail "ArmadaNodeDown delivered within 40 s (took ${latency}s)" "$WORK/manager.log"
  fi
else
  fail "ArmadaNodeDown delivered for al-node2" "$WORK/manager.log" "$HOOKS"
fi

log "restarting the manager while ArmadaNodeDown fires"
nodes_stop_pid "$MANAGER_PID" 15
start_manager 2 || fail "manager restarts" "$WORK/manager.log"
# Past the startup grace, several evaluations later.
sleep 35
n_firing=$(deliveries ArmadaNodeDown firing al-node2)
if [ "$n_firing" = 1 ]; then
  pass "after the manager restart: still exactly one ArmadaNodeDown firing for al-node2"
else
  fail "no second firing after a manager restart (got $n_firing)" "$WORK/manager.log" "$HOOKS"
fi
state=$(api /v1/alerts -f | jq -r '[.alerts[] | select(.labels.alertname == "ArmadaNodeDown" and .labels.hostname == "al-node2")][0].state')
[ "$state" = firing ] && pass "GET /v1/alerts after the restart: ArmadaNodeDown for al-node2 is firing" ||
  fail "GET /v1/alerts shows ArmadaNodeDown firing after the restart (got $state)"

log "node2's dockerd back"
t1=$(date +%s)
nodes_start_dockerd 2 al-node2
nodes_wait_dockerd 2 60 || fail "node2's dockerd restarts" "$WORK/node2/dockerd.log"
if wait_until 120 delivered ArmadaNodeDown resolved al-node2; then
  sleep 5
  n_res=$(deliveries ArmadaNodeDown resolved al-node2)
  [ "$n_res" = 1 ] && pass "exactly one ArmadaNodeDown resolved for al-node2, $(($(date +%s) - t1))s after its engine returned" ||
    fail "exactly one resolved (got $n_res)" "$HOOKS"
else
  fail "ArmadaNodeDown resolved after node2's engine returned" "$WORK/manager.log" "$HOOKS"
fi

# ---------------------------------------------------------------- restart loop
log "a container on node3 that keeps exiting"
t2=$(date +%s.%N)
nodes_docker 3 run -d --name crashy --restart always "$IMAGE" sh -c 'sleep 2; exit 1' >/dev/null
node3_containers() {
  local id
  id=$(api /v1/nodes -f | jq -r '.[] | select(.hostname == "al-node3") | .node_id')
  api "/v1/nodes/$id" -f | jq -c '[.latest.containers[]? | {name, state, restart_count}]'
}
reports_restarts() {
  node3_containers | jq -e '[.[] | select(.name == "crashy" and .restart_count != null)] | length > 0'
}
# The engine's back-off doubles from 0.1 s, so the 3 restarts the rule asks for after
# the first reported count come within ~70 s; the agent sees each restart at its next
# cycle (a new cgroup folder) and the manager evaluates every 2 s.
if ! wait_until 40 reports_restarts; then
  fail "node3's agent reports crashy's restart_count within 40 s (it reports: $(node3_containers))" "$WORK/node3/agent.log"
elif wait_until 150 delivered ArmadaContainerRestartLoop firing al-node3; then
  at=$(first_at ArmadaContainerRestartLoop firing al-node3)
  latency=$(awk -v a="$at" -v b="$t2" 'BEGIN {printf "%.1f", a - b}')
  pass "ArmadaContainerRestartLoop delivered for the crashing container on node3 ${latency}s after it started ($(nodes_docker 3 inspect crashy --format '{{.RestartCount}}') restarts so far; limit 150 s after its count was first reported)"
else
  fail "ArmadaContainerRestartLoop delivered within 150 s (crashy restarted $(nodes_docker 3 inspect crashy --format '{{.RestartCount}}') times; node3 reports $(node3_containers))" "$WORK/manager.log" "$WORK/node3/agent.log" "$HOOKS"
fi

api /v1/alerts -f | jq -r '.alerts[] | "  \(.state)\t\(.labels.alertname)\t\(.labels.hostname // "-")"' || true
log "alerts: $passed passed, $failed failed"
for f in "${failures[@]}"; do log "  failed: $f"; done
[ "$failed" = 0 ]
