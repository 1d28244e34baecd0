#!/usr/bin/env bash
# Resilience of examples/ha-stack on a real swarm: four dockerd in network namespaces
# this script creates (arm-rs-node1..4 on 172.30.20.0/25 behind a bridge in arm-rs-hub;
# the stack's overlay network is 172.30.20.128/25), armada-manager and an agent on every
# node (node1 = swarm manager and pg_auto_failover monitor board, node2 = db-a,
# node3 = db-b, node4 = a plain worker; the ha-db labels come from each armada.toml),
# the stack deployed with `docker stack deploy` from the SAME examples/ha-stack/stack.yml
# users deploy, image names overridden by a local image built from Debian packages
# (ci/lib/ha-image.sh). A load generator (ci/lib/ha-load.py) in the hub namespace sends
# steady reads and acknowledged writes through both proxies; then, one at a time:
#   dockerd  node4's dockerd SIGKILLed (its containers keep running, as on a board)
#   link     node4's link cut (eth0 down)
#   db       the board holding the database primary lost: link down, every process
#            of its cgroup, its dockerd/containerd and its agent SIGKILLed
# For each: failed-request ratio during the event, seconds until every service is back
# at its replica count, whether armada's manager marked the node down and its
# ArmadaNodeDown alert fired; at the end every acknowledged write is read back.
# Goals checked: no acknowledged write lost; for the non-database worker events <= 1 %
# failed requests and every service at its replicas within 30 s. The database event's
# cost (seconds of failed writes) is measured and printed, not hidden.
# Each event is undone (engine restarted, link up, board back) before the next one.
# Every wait is bounded; teardown (trap) ends by PID what it started, unmounts, deletes
# the namespaces and cgroups.
#
#   ci/resilience-test.sh   (as root; binaries from target/debug, built by
#                            ci/tier-cluster.sh)
# Env: ARMADA_BIN_DIR, ARMADA_RESIL_WORK (default /tmp/armada-resilience-test),
# ARMADA_RESIL_KEEP=1 keeps the logs in $WORK.logs, RESIL_EVENTS (default "dockerd link db").
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=ci/lib/nodes.sh
. ci/lib/nodes.sh
# shellcheck source=ci/lib/ha-image.sh
. ci/lib/ha-image.sh
# shellcheck source=ci/lib/skip.sh
. ci/lib/skip.sh

BIN=${ARMADA_BIN_DIR:-$repo/${CARGO_TARGET_DIR:-target}/debug}
WORK=${ARMADA_RESIL_WORK:-/tmp/armada-resilience-test}
EVENTS=${RESIL_EVENTS:-dockerd link db}
INTERVAL=2
DOWN_AFTER=10
MGR_IP=172.30.20.1
MGR=$MGR_IP:7443
HUB_IP=172.30.20.100
PORT=8080
IMAGE=arm-rs/ha-stack:1
NODES=(1 2 3 4)
declare -A BOARD=([1]=rpi3 [2]=pine64 [3]=pine64 [4]=rpi3)
declare -A ROLE=([1]=manager [2]=worker [3]=worker [4]=worker)
declare -A HADB=([1]=monitor [2]=a [3]=b [4]=)

passed=0 failed=0 failures=()
t_start=$(date +%s)
log() { printf '[resil %3ds] %s\n' "$(($(date +%s) - t_start))" "$*"; }
pass() { passed=$((passed + 1)); log "PASS $1"; }
fail() {
  failed=$((failed + 1)); failures+=("$1"); log "FAIL $1"
  shift
  local f
  for f in "$@"; do nodes_log_tail "$f" 25; done
}

if [ "$(id -u)" -ne 0 ]; then ci_required "needs root (network namespaces, dockerd)" || exit 1; exit 0; fi
for t in dockerd docker nsenter unshare ip jq curl python3 mmdebstrap flock; do
  command -v "$t" >/dev/null || { ci_required "$t missing: run ci/host-deps.sh" || exit 1; exit 0; }
done
for b in armada armada-agent armada-manager; do
  [ -x "$BIN/$b" ] || { echo "resil: $BIN/$b is missing: build it first (ci/tier-cluster.sh does)" >&2; exit 1; }
done

LOAD_PID=
# The work folder is a tmpfs: four engines each unpack the ~400 MB image, and deleting
# that from disk took 90 s on a loaded machine; unmounting a tmpfs is instant.
unmount_work() { if mountpoint -q "$WORK"; then umount "$WORK" 2>/dev/null || umount -l "$WORK"; fi; }
cleanup() {
  log "teardown"
  [ -n "$LOAD_PID" ] && nodes_stop_pid "$LOAD_PID" 5
  nodes_teardown
  if [ "${ARMADA_RESIL_KEEP:-0}" = 1 ]; then
    rm -rf "$WORK.logs"; mkdir -p "$WORK.logs"
    (cd "$WORK" && find . -maxdepth 2 \( -name '*.log*' -o -name '*.jsonl' -o -name '*.tsv' -o -name '*.txt' \) -exec cp --parents {} "$WORK.logs/" \;)
    log "logs kept in $WORK.logs"
  fi
  unmount_work
  rm -rf "$WORK"
}
nodes_init arm-rs 172.30.20 "$WORK"
nodes_teardown
unmount_work
rm -rf "$WORK"
nodes_init arm-rs 172.30.20 "$WORK"
trap cleanup EXIT
mount -t tmpfs -o size=4g,mode=0755 armada-resil "$WORK" || { echo "resil: could not mount a tmpfs on $WORK" >&2; exit 1; }
nodes_init arm-rs 172.30.20 "$WORK"
trap 'exit 130' INT TERM
# Swarm's embedded DNS (service discovery inside the overlay) and host-mode published
# ports need netfilter in each node's own namespace.
export NODES_DOCKERD_NETFILTER=1

# wait_until SECONDS CMD...: true once CMD succeeds, polling every 0.5 s.
# shellcheck source=ci/lib/wait.sh
. ci/lib/wait.sh
now() { date +%s.%N | cut -c1-14; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

admin_token() { grep -v '^#' "$WORK/cluster/admin-token" | grep -m1 .; }
boot_token() { grep -v '^#' "$WORK/cluster/token" | grep -m1 .; }
api() {
  local path=$1; shift
  nodes_in 1 curl -sS --max-time 10 --cacert "$WORK/cluster/ca.pem" \
    -H "Authorization: Bearer $(admin_token)" "$@" "https://$MGR$path"
}
mgr_status() { api /v1/nodes -f | jq -r --arg h "rs-node$1" '.[] | select(.hostname == $h) | .status'; }
node_down() { [ "$(mgr_status "$1")" = down ]; }
# node_alert N T0: ArmadaNodeDown for rs-nodeN fired at or after T0 (epoch s); prints
# the seconds from T0 to its firing. (An alert's id is its labels: a node down twice
# is the same alert, fired again.)
node_alert() {
  api /v1/alerts -f | jq -e -r --arg h "rs-node$1" --argjson t0 "$(awk -v t="$2" 'BEGIN {printf "%.0f", t * 1000}')" \
    '[.alerts[] | select(.labels.alertname == "ArmadaNodeDown" and .labels.hostname == $h and (.fired_at_ms // 0) >= $t0)]
     | if length > 0 then ((.[0].fired_at_ms - $t0) / 1000 * 10 | floor / 10) else error("none") end'
}
node_up() { local s; s=$(mgr_status "$1"); [ -n "$s" ] && [ "$s" != down ]; }
d1() { nodes_docker 1 "$@"; }

write_config() {
  local n=$1
  cat >"$WORK/node$n/armada.toml" <<EOT
# armada first-boot config of rs-node$n (written by ci/resilience-test.sh)
hostname = "rs-node$n"
role = "${ROLE[$n]}"
board = "${BOARD[$n]}"

[manager]
address = "$MGR_IP"
token = "$(boot_token)"

[labels]
zone = "shelf-$n"
$([ -n "${HADB[$n]}" ] && echo "ha-db = \"${HADB[$n]}\"")

[agent]
metrics_listen = "$(nodes_ip "$n"):9101"
cgroup_parent = "$(nodes_cgroup_parent "$n")"
EOT
}
declare -A AGENT_PID
start_agent() {
  local n=$1 tag=${2:-1} r="$WORK/node$1/root"
  mkdir -p "$r/etc"
  [ -f "$r/etc/machine-id" ] || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$r/etc/machine-id"
  echo "rs-node$n" >"$r/etc/hostname"
  ln -sfn /proc "$r/proc"; ln -sfn /sys "$r/sys"
  nodes_bg_in "$n" "$WORK/node$n/agent.log.$tag" "$BIN/armada-agent" run \
    --config "$WORK/node$n/armada.toml" --state-dir "$WORK/node$n/state" \
    --docker-host "$(nodes_sock "$n")" --root "$r"
  AGENT_PID[$n]=$NODES_LAST_PID
}

# Services with fewer running tasks than replicas (none: empty). More is fine: a lost
# node's tasks count as running until swarm hears from it again.
short_services() {
  d1 service ls --format '{{.Name}} {{.Replicas}}' 2>/dev/null | awk '{split($2, r, "/"); if (r[1] + 0 < r[2] + 0) print $1 " " $2}'
}
all_at_replicas() { local s; s=$(d1 service ls -q 2>/dev/null | wc -l); [ "$s" = 6 ] && [ -z "$(short_services)" ]; }
# Services other than one that cannot move (a database node's own service).
all_but_at_replicas() { [ -z "$(short_services | grep -v "^ha_$1 ")" ]; }

db_primary() {
  local c
  c=$(d1 ps -q -f name=ha_pgmon. | head -1)
  [ -n "$c" ] || return 1
  d1 exec "$c" runuser -u postgres -- psql -h 127.0.0.1 -p 5432 -d pg_auto_failover -Atc \
    "select nodename from pgautofailover.node where reportedstate = 'primary' and goalstate = 'primary'"
}
db_states() {
  local c
  c=$(d1 ps -q -f name=ha_pgmon. | head -1)
  d1 exec "$c" runuser -u postgres -- psql -h 127.0.0.1 -p 5432 -d pg_auto_failover -Atc \
    "select nodename || ':' || reportedstate || '/' || goalstate from pgautofailover.node order by nodename" 2>/dev/null | tr '\n' ' '
}
db_in_sync() { [ "$(db_states)" = "$1" ]; }
# The monitor's own account of a failover: its events since T0 (epoch seconds), each
# with the seconds after T0 (one clock: every container runs on this machine).
db_events_since() {
  local c
  c=$(d1 ps -q -f name=ha_pgmon. | head -1)
  [ -n "$c" ] || return 0
  timeout 20 docker -H "$(nodes_sock 1)" exec "$c" runuser -u postgres -- psql -h 127.0.0.1 -p 5432 -d pg_auto_failover -Atc \
    "select to_char(extract(epoch from eventtime) - $1, 'FM9990.0') || ' s  ' || nodename || ' ' || reportedstate || '/' || goalstate || '  ' || left(description, 100) from pgautofailover.event where eventtime > to_timestamp($1) order by eventid" 2>/dev/null
}

# ---------------------------------------------------------------- set-up

log "image from Debian packages (cached in $HA_IMAGE_CACHE)"
t0=$(date +%s)
tar=$(ha_image_tar) || { echo "resil: could not build the stack's image" >&2; exit 1; }
log "image tarball ready in $(($(date +%s) - t0)) s: $tar ($(du -m "$tar" | cut -f1) MB)"

log "network namespaces and four dockerd"
nodes_setup_hub || exit 1
for n in "${NODES[@]}"; do nodes_add_node "$n" || exit 1; done
nodes_hub_ip 100
for n in "${NODES[@]}"; do nodes_start_dockerd "$n" "rs-node$n"; done
for n in "${NODES[@]}"; do nodes_wait_dockerd "$n" 60 || exit 1; done
t0=$(date +%s)
pids=()
for n in "${NODES[@]}"; do ha_image_import "$(nodes_sock "$n")" "$IMAGE" & pids+=($!); done
ok=1
for p in "${pids[@]}"; do wait "$p" || ok=0; done
[ "$ok" = 1 ] || { echo "resil: docker import failed" >&2; exit 1; }
log "image imported into 4 engines in $(($(date +%s) - t0)) s"

log "armada cluster, manager on node1, agents on every node"
"$BIN/armada" cluster init "$WORK/cluster" --san "$MGR_IP" >"$WORK/cluster-init.log" 2>&1 ||
  { nodes_log_tail "$WORK/cluster-init.log"; exit 1; }
nodes_bg_in 1 "$WORK/manager.log" "$BIN/armada-manager" serve \
  --cluster-dir "$WORK/cluster" --state-dir "$WORK/manager-state" --listen 0.0.0.0:7443 \
  --docker-host "$(nodes_sock 1)" --swarm-advertise-addr "$MGR_IP" \
  --report-interval "$INTERVAL" --down-after "$DOWN_AFTER"
wait_until 30 api /v1/health -f --max-time 2 || { fail "manager answers" "$WORK/manager.log"; exit 1; }
for n in "${NODES[@]}"; do write_config "$n"; start_agent "$n"; done
labelled() {
  local n sid
  [ "$(d1 node ls --format '{{.Status}}' | grep -c Ready)" = 4 ] || return 1
  for n in 1 2 3; do
    sid=$(nodes_docker "$n" info --format '{{.Swarm.NodeID}}')
    [ "$(d1 node inspect "$sid" --format '{{index .Spec.Labels "ha-db"}}')" = "${HADB[$n]}" ] || return 1
  done
}
if wait_until 120 labelled; then
  pass "4 boards joined through armada, Ready, labelled (ha-db from armada.toml)"
else
  d1 node ls >&2
  fail "4 boards joined and labelled" "$WORK/manager.log" "$WORK/node2/agent.log.1"
  exit 1
fi

log "docker stack deploy -c examples/ha-stack/stack.yml (local image)"
t_deploy=$(now)
if ! env PROXY_IMAGE=$IMAGE WEB_IMAGE=$IMAGE APP_IMAGE=$IMAGE DB_IMAGE=$IMAGE \
  HA_SUBNET=172.30.20.128/25 HA_HTTP_PORT=$PORT \
  docker -H "$(nodes_sock 1)" stack deploy --resolve-image never -c examples/ha-stack/stack.yml ha >"$WORK/deploy.log" 2>&1; then
  fail "docker stack deploy" "$WORK/deploy.log"; exit 1
fi
TARGETS=""
for n in "${NODES[@]}"; do TARGETS+="${TARGETS:+,}$(nodes_ip "$n"):$PORT"; done
write_through() {
  nodes_in_hub curl -sf --max-time 5 -H 'Content-Type: application/json' \
    --data '{"key":"probe","value":"1"}' "http://$1:$PORT/api/items"
}
stack_serves() {
  all_at_replicas || return 1
  local n c=0
  for n in "${NODES[@]}"; do write_through "$(nodes_ip "$n")" && c=$((c + 1)); done
  [ "$c" -ge 2 ] && db_healthy
}
# write_ok: one write acknowledged through any proxy (the test's own probe key).
write_ok() {
  local n
  for n in "${NODES[@]}"; do
    nodes_in_hub curl -sf --max-time 3 -H 'Content-Type: application/json' \
      --data "{\"key\":\"probe-$(date +%s%N)\",\"value\":\"1\"}" "http://$(nodes_ip "$n"):$PORT/api/items" >/dev/null && return 0
  done
  return 1
}
# One primary, one secondary, both as the monitor wants them.
db_healthy() {
  local s
  s=$(db_states)
  [ "$s" = "db-a:primary/primary db-b:secondary/secondary " ] || [ "$s" = "db-a:secondary/secondary db-b:primary/primary " ]
}
if wait_until 240 stack_serves; then
  pass "stack up: 6 services at their replicas, a write answered through both proxies, db $(db_states)in $(since "$t_deploy") s"
  d1 service ls --format '    {{.Name}} {{.Replicas}}'
else
  d1 service ls >&2
  d1 service ps ha_db-a ha_db-b ha_pgmon --no-trunc >&2
  log "db: $(db_states)"
  for s in db-a db-b pgmon app; do d1 service logs --raw --tail 20 "ha_$s" >&2 2>&1; done
  fail "stack deployed and serving within 240 s"
  exit 1
fi

# ---------------------------------------------------------------- boards lost and back

swarm_status() { d1 node ls --format '{{.Hostname}} {{.Status}}' 2>/dev/null | awk -v h="rs-node$1" '$1 == h {print $2}'; }
swarm_down() { [ "$(swarm_status "$1")" = Down ]; }
swarm_ready() { [ "$(swarm_status "$1")" = Ready ]; }

# board_off N [keep-agent]: node N loses power: every process of the board (its
# namespace's, its cgroup's, and containerd shims serving its engine) SIGKILLed, and
# what its engine had mounted unmounted, as a reboot would. With keep-agent, the
# armada agent (an engine crash, not a power loss) keeps running.
board_off() {
  local n=$1 keep=${2:-} pid self pids
  pids=$(ip netns pids "$(nodes_ns "$n")" 2>/dev/null; nodes_cgroup_pids "/sys/fs/cgroup/$(nodes_ns "$n")")
  # shims were started by the node's containerd; they name its socket under $WORK/nodeN.
  for pid in $(pgrep -f "containerd-shim.*$WORK/node$n/" 2>/dev/null); do pids+=" $pid"; done
  self=$$
  for pid in $pids; do
    [ "$pid" = "$self" ] && continue
    [ -n "$keep" ] && [ "$pid" = "${AGENT_PID[$n]:-}" ] && continue
    kill -KILL "$pid" 2>/dev/null || true
  done
  sleep 0.5
  awk -v w="$WORK/node$n/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # The killed engine's pidfiles go, as a reboot empties /run: on this busy machine the
  # PID they name is soon another process's, and dockerd then refuses to start ("pid
  # file found") or takes that process for its containerd.
  rm -f "$(nodes_dir "$n")/dockerd.pid" "$(nodes_dir "$n")/exec/containerd/containerd.pid"
}
# board_on N [keep-agent]: power back: link up, engine started (it rejoins the swarm
# from its data-root), agent started unless it kept running.
board_on() {
  local n=$1 keep=${2:-}
  nodes_in "$n" ip link set eth0 up
  nodes_in "$n" ip route replace default dev eth0
  nodes_start_dockerd "$n" "rs-node$n"
  nodes_wait_dockerd "$n" 60 || return 1
  [ -n "$keep" ] || start_agent "$n" "$(date +%s)"
}

LOAD_LOG=$WORK/load.jsonl ACKED=$WORK/acked.tsv STOP=$WORK/load.stop
nodes_bg "$WORK/load.out" nsenter --net="/run/netns/$(nodes_hub_ns)" python3 ci/lib/ha-load.py run \
  --targets "$TARGETS" --log "$LOAD_LOG" --acked "$ACKED" --stop-file "$STOP" --rate 20 --max-seconds 900
LOAD_PID=$NODES_LAST_PID
t_load=$(now)
sleep 10
WINDOWS=("baseline:$t_load:$(now)")
ROWS=()

# event NAME N ACTION: ACTION (dockerd|link|board) on node N, measured; then undone.
event() {
  local name=$1 n=$2 action=$3 t0 t_mgr=- t_alert=no t_swarm=- t_rep=- t_wr=- t_end keep= own=
  log "event $name: $action on rs-node$n"
  t0=$(now)
  LAST_EVENT_T0=$t0
  case "$action" in
    dockerd) nodes_kill_dockerd "$n" KILL; keep=1 ;;
    link) nodes_in "$n" ip link set eth0 down ;;
    board) nodes_in "$n" ip link set eth0 down; board_off "$n" ;;
  esac
  # The database node's own service cannot move (its volume is on that board).
  [ "$action" = board ] && own=$(db_primary_was)
  if wait_until 60 node_down "$n"; then t_mgr=$(since "$t0"); fi
  if wait_until 20 node_alert "$n" "$t0"; then t_alert=$(node_alert "$n" "$t0"); fi
  if wait_until 60 swarm_down "$n"; then t_swarm=$(since "$t0"); fi
  if [ -n "$own" ]; then
    wait_until 120 all_but_at_replicas "$own" && t_rep=$(since "$t0")
  else
    wait_until 120 all_at_replicas && t_rep=$(since "$t0")
  fi
  # A lost database primary: the window lasts until a write is acknowledged again.
  if [ -n "$own" ]; then
    if wait_until 120 write_ok; then t_wr=$(since "$t0"); fi
  fi
  # The load window: the event until every service is back (and writes work), >= 30 s.
  sleep "$(awk -v a="$t0" -v b="$(now)" 'BEGIN {d = a + 30 - b; print (d > 0 ? d : 0)}')"
  t_end=$(now)
  WINDOWS+=("$name:$t0:$t_end")
  ROWS+=("$(printf '%-9s rs-node%-2s %8s %6s %10s %13s %11s' "$name" "$n" "$t_mgr" "$t_alert" "$t_swarm" "$t_rep" "$t_wr")")
  [ "$t_mgr" != - ] && pass "$name: armada's manager marked rs-node$n down after ${t_mgr} s" ||
    fail "$name: armada's manager marks rs-node$n down within 60 s" "$WORK/manager.log"
  [ "$t_alert" != no ] && pass "$name: ArmadaNodeDown for rs-node$n fired ${t_alert} s after the event (/v1/alerts)" ||
    fail "$name: ArmadaNodeDown for rs-node$n in /v1/alerts" "$WORK/manager.log"
  if [ -z "$own" ]; then
    if [ "$t_rep" != - ] && awk -v t="$t_rep" 'BEGIN {exit !(t <= 30)}'; then
      pass "$name: every service back at its replicas ${t_rep} s after the event (goal <= 30 s)"
    else
      short_services >&2
      fail "$name: every service back at its replicas within 30 s (took $t_rep)"
    fi
  fi
  log "undo $name on rs-node$n"
  case "$action" in
    dockerd) board_off "$n" keep-agent; board_on "$n" keep-agent ;;
    link) nodes_in "$n" ip link set eth0 up; nodes_in "$n" ip route replace default dev eth0 ;;
    board) board_on "$n" ;;
  esac
  wait_until 90 swarm_ready "$n" || fail "$name: rs-node$n Ready again in the swarm" "$(nodes_dir "$n")/dockerd.log"
  wait_until 60 node_up "$n" || fail "$name: armada's manager sees rs-node$n up again" "$WORK/manager.log"
  wait_until 60 all_at_replicas || { [ -n "$own" ] || fail "$name: all services at replicas after the undo"; }
}
PRIMARY_WAS=
db_primary_was() { echo "$PRIMARY_WAS"; }

# rebalance N: a board that came back holds no task (swarm does not move running
# tasks back); a forced rolling update of the stateless services spreads them again,
# as an operator would, so the next event on N hits running tasks.
hosts_tasks() { [ "$(d1 node ps "rs-node$1" --filter desired-state=running -q 2>/dev/null | wc -l)" -ge 2 ]; }
# The event must not begin while a forced update still runs (replacing tasks), or it
# measures the update, not the loss.
updates_done() {
  local s st
  for s in proxy web app; do
    st=$(d1 service inspect "ha_$s" --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' 2>/dev/null)
    case "$st" in "" | completed | rollback_completed | paused | rollback_paused) ;; *) return 1 ;; esac
  done
}
rebalanced() { all_at_replicas && hosts_tasks "$1" && updates_done; }
rebalance() {
  local s
  hosts_tasks "$1" && updates_done && return 0
  # web and app only, every task at once (start-first: the old ones stop once the new
  # ones run), no pause: the next event waits for these to end. (The proxy's update is
  # stop-first, one board at a time, ~40 s here: not worth it for the test.)
  for s in web app; do
    d1 service update --detach --force --quiet --update-parallelism 0 --update-delay 0s "ha_$s" >/dev/null 2>&1
  done
  wait_until 150 rebalanced "$1" || log "rs-node$1 got no tasks back (or an update still ran) within 150 s"
  log "rs-node$1 runs $(d1 node ps "rs-node$1" --filter desired-state=running --format '{{.Name}}' | sed 's/\..*//' | sort | uniq -c | tr -s ' \n' ' ')"
}

for e in $EVENTS; do
  case "$e" in
    dockerd) rebalance 4; event dockerd 4 dockerd ;;
    link) rebalance 4; event link 4 link ;;
    db)
      PRIMARY_WAS=$(db_primary)
      case "$PRIMARY_WAS" in
        db-a) pn=2 ;;
        db-b) pn=3 ;;
        *) fail "db: the monitor names a primary (states: $(db_states))"; continue ;;
      esac
      event db "$pn" board
      log "db: the monitor's events after the loss (seconds after it):"
      db_events_since "$LAST_EVENT_T0" | head -30 | sed 's/^/    /'
      t0=$(now)
      if wait_until 150 db_healthy; then
        log "db: rs-node$pn back; its node rejoined as secondary in $(since "$t0") s ($(db_states))"
        pass "db: after the board's return the database is primary + synchronous standby again ($(db_states))"
      else
        fail "db: the returned board rejoins as standby within 150 s (states: $(db_states))"
      fi
      ;;
    *) echo "resil: unknown event $e (RESIL_EVENTS)" >&2 ;;
  esac
done

# ---------------------------------------------------------------- acknowledged writes

touch "$STOP"
for ((i = 0; i < 40; i++)); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.25; done
nodes_stop_pid "$LOAD_PID" 5
LOAD_PID=
if nodes_in_hub python3 ci/lib/ha-load.py verify --targets "$TARGETS" --acked "$ACKED" >"$WORK/verify.txt" 2>&1; then
  pass "no acknowledged write lost: $(tail -1 "$WORK/verify.txt")"
else
  fail "every acknowledged write readable after the events: $(tail -1 "$WORK/verify.txt")" "$WORK/verify.txt"
fi

echo
echo "resilience of examples/ha-stack (4 boards, 20 req/s, half acknowledged writes):"
printf '%-9s %-9s %8s %6s %10s %13s %11s\n' event node mgr-down alert swarm-down replicas-back writes-back
for r in "${ROWS[@]}"; do echo "$r"; done
echo "(seconds after the event; replicas-back excludes the lost database node's own service;"
echo " writes-back: first write acknowledged again after the primary's board was lost)"
echo
args=()
for w in "${WINDOWS[@]}"; do args+=(--window "$w"); done
python3 ci/lib/ha-load.py report --log "$LOAD_LOG" "${args[@]}" | tee "$WORK/report.txt"
echo "(failed = failed for the client: every board's address tried for a connection, a request"
echo " sent once more on the next one after no answer or a 5xx; 1st-try = failed on the first"
echo " address tried; load: $(wc -l <"$LOAD_LOG") requests in $(awk -v a="$t_load" -v b="$(now)" 'BEGIN {printf "%d", b - a}') s)"
# Goals for the non-database worker events: <= 1 % failed requests.
while read -r name reqs fails pct _; do
  case "$name" in
    dockerd|link)
      if awk -v p="${pct%\%}" 'BEGIN {exit !(p <= 1.0)}'; then
        pass "$name: $fails of $reqs requests failed ($pct, goal <= 1 %)"
      else
        fail "$name: $fails of $reqs requests failed ($pct, goal <= 1 %)"
      fi ;;
  esac
done <"$WORK/report.txt"

echo
if [ "$failed" -gt 0 ]; then printf 'failed: %s\n' "${failures[@]}"; fi
echo "resilience: $passed passed, $failed failed ($(($(date +%s) - t_start))s)"
[ "$failed" -eq 0 ]
