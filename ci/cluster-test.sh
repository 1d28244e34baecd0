#!/usr/bin/env bash
# The cluster test: four real dockerd in network namespaces this script creates
# (arm-cl-node1..4 on 172.30.1.0/24 behind a bridge in arm-cl-hub), `armada cluster
# init`, armada-manager plus an agent on node1, agents on node2 and node3, each agent
# with its own armada.toml, state dir and engine socket; node4's engine stays outside the
# swarm for the refusal probes. It shows:
#   - agents started before the manager retry with backoff and already collect;
#   - every node registers, joins, is Ready and labelled (seen through node1's engine);
#   - the bootstrap token leaves armada.toml, the credential is 0600;
#   - metrics of real running containers on each node reach the manager, and each
#     agent's /metrics is promtool-clean;
#   - a 6-replica service constrained on node.labels.armada.board lands only there;
#   - the manager SIGKILLed mid-stream and restarted loses no node and no report, the
#     agents deliver their backlog, and a full backlog drops its oldest and counts it;
#   - an agent restarted (a reboot) reuses its credential and does not register again,
#     and the [labels] edited in its armada.toml meanwhile reach the manager and its
#     swarm node (a changed value, a new key, a dropped key), shown by `status`;
#   - a worker's dockerd killed: the manager marks it down while swarm moves its tasks;
#   - a wrong token, a token of another CA, a swarm join token the swarm rejects, and a
#     removed node's credential are refused, each with a message that says so.
# Every wait is bounded; a failed check prints the tails of the logs that matter.
# Teardown (trap) ends by PID what it started, unmounts, deletes netns and cgroups.
#
#   ci/cluster-test.sh            (as root; binaries from target/debug, built by
#                                  ci/tier-cluster.sh)
# Env: ARMADA_BIN_DIR (default target/debug), ARMADA_CLUSTER_WORK (default
# /tmp/armada-cluster-test), ARMADA_CLUSTER_KEEP=1 keeps the work folder's logs.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=ci/lib/nodes.sh
. ci/lib/nodes.sh

BIN=${ARMADA_BIN_DIR:-$repo/${CARGO_TARGET_DIR:-target}/debug}
WORK=${ARMADA_CLUSTER_WORK:-/tmp/armada-cluster-test}
INTERVAL=2        # report interval the manager hands out (s)
DOWN_AFTER=12     # manager marks a silent node down after this (s)
MGR_IP=172.30.1.1
MGR=$MGR_IP:7443
IMAGE=arm-cl/busybox:1
declare -A BOARD=([1]=rpi3 [2]=pine64 [3]=pine64)
declare -A ROLE=([1]=manager [2]=worker [3]=worker)
# node3 keeps a tiny backlog, to show the bound: oldest dropped and counted.
declare -A BACKLOG=([1]=360 [2]=360 [3]=2)

passed=0 failed=0 failures=()
t_start=$(date +%s)
log() { printf '[cluster %3ds] %s\n' "$(($(date +%s) - t_start))" "$*"; }

for b in armada armada-agent armada-manager; do
  if [ ! -x "$BIN/$b" ]; then
    echo "cluster: $BIN/$b is missing: build it first (ci/tier-cluster.sh does)" >&2
    exit 1
  fi
done
for t in dockerd docker nsenter unshare ip jq curl busybox promtool; do
  command -v "$t" >/dev/null || { echo "cluster: $t is missing: run ci/host-deps.sh" >&2; exit 1; }
done

cleanup() {
  log "teardown"
  nodes_teardown
  if [ "${ARMADA_CLUSTER_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
}
nodes_init arm-cl 172.30.1 "$WORK"
nodes_teardown # what a crashed earlier run may have left
rm -rf "$WORK"
nodes_init arm-cl 172.30.1 "$WORK"
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

pass() { passed=$((passed + 1)); log "PASS $1"; }
fail() {
  failed=$((failed + 1)); failures+=("$1"); log "FAIL $1"
  shift
  local f
  for f in "$@"; do nodes_log_tail "$f" 25; done
}

# wait_until SECONDS CMD...: true once CMD succeeds, polling every 0.5 s.
# shellcheck source=ci/lib/wait.sh
. ci/lib/wait.sh

admin_token() { grep -v '^#' "$WORK/cluster/admin-token" | grep -m1 .; }
boot_token() { grep -v '^#' "$WORK/cluster/token" | grep -m1 .; }

# api PATH [curl args...]: the manager's API as the operator, from node1's namespace.
api() {
  local path=$1; shift
  nodes_in 1 curl -sS --max-time 10 --cacert "$WORK/cluster/ca.pem" \
    -H "Authorization: Bearer $(admin_token)" "$@" "https://$MGR$path"
}
nodes_json() { api /v1/nodes -f; }
node_id_of() { nodes_json | jq -r --arg h "cl-node$1" '.[] | select(.hostname == $h) | .node_id'; }
detail() { api "/v1/nodes/$(node_id_of "$1")" -f; }
mgr_log() { echo "$WORK/manager.log"; }
agent_log() { echo "$WORK/node$1/agent.log"; }
dockerd_log() { echo "$WORK/node$1/dockerd.log"; }
# agent_metric N NAME: a value from node N's agent /metrics.
agent_metric() {
  nodes_in "$1" curl -sf --max-time 5 "http://$(nodes_ip "$1"):9101/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

start_manager() {
  nodes_bg_in 1 "$WORK/manager.log.$1" "$BIN/armada-manager" serve \
    --cluster-dir "$WORK/cluster" --state-dir "$WORK/manager-state" --listen 0.0.0.0:7443 \
    --docker-host "$(nodes_sock 1)" --swarm-advertise-addr "$MGR_IP" \
    --report-interval "$INTERVAL" --down-after "$DOWN_AFTER"
  MANAGER_PID=$NODES_LAST_PID
  ln -sf "manager.log.$1" "$WORK/manager.log"
  wait_until 30 api /v1/health -f --max-time 2
}

# node_root N: a root tree for node N's agent: its own machine-id and hostname, the
# host's /proc and /sys (the agent reads metrics and facts under --root).
make_node_root() {
  local n=$1 r="$WORK/node$1/root"
  mkdir -p "$r/etc"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$r/etc/machine-id"
  echo "cl-node$n" >"$r/etc/hostname"
  ln -sfn /proc "$r/proc"
  ln -sfn /sys "$r/sys"
}

# write_config N TOKEN [FILE]
write_config() {
  local n=$1 token=$2 file=${3:-$WORK/node$1/armada.toml}
  cat >"$file" <<EOF
# armada first-boot config of cl-node$n (written by ci/cluster-test.sh)
hostname = "cl-node$n"
role = "${ROLE[$n]}"
board = "${BOARD[$n]}"

[manager]
address = "$MGR_IP"
token = "$token"

[labels]
zone = "shelf-$n"
spare = "cl-$n"

[agent]
metrics_listen = "$(nodes_ip "$n"):9101"
cgroup_parent = "$(nodes_cgroup_parent "$n")"
backlog_reports = ${BACKLOG[$n]}
EOF
}

start_agent() {
  local n=$1 tag=${2:-1}
  nodes_bg_in "$n" "$WORK/node$n/agent.log.$tag" "$BIN/armada-agent" run \
    --config "$WORK/node$n/armada.toml" --state-dir "$WORK/node$n/state" \
    --docker-host "$(nodes_sock "$n")" --root "$WORK/node$n/root"
  AGENT_PID[$n]=$NODES_LAST_PID
  ln -sf "agent.log.$tag" "$WORK/node$n/agent.log"
}
declare -A AGENT_PID

# ---------------------------------------------------------------- set-up

log "network namespaces and three dockerd"
nodes_setup_hub || { echo "cluster: could not create the hub namespace" >&2; exit 1; }
# node4's engine never joins: the refusal probes run there.
for n in 1 2 3 4; do nodes_add_node "$n" || { echo "cluster: could not create node $n" >&2; exit 1; }; done
# Each engine's hostname is its armada.toml hostname, as on a board: the manager only
# labels a swarm node for the registration with that hostname.
for n in 1 2 3 4; do nodes_start_dockerd "$n" "cl-node$n"; done
for n in 1 2 3 4; do nodes_wait_dockerd "$n" 60 || { echo "cluster: dockerd of node $n did not start" >&2; exit 1; }; done
for n in 1 2 3; do nodes_import_busybox "$n" "$IMAGE" || { echo "cluster: docker import failed on node $n" >&2; exit 1; }; done

log "armada cluster init"
if ! "$BIN/armada" cluster init "$WORK/cluster" --san "$MGR_IP" >"$WORK/cluster-init.log" 2>&1; then
  nodes_log_tail "$WORK/cluster-init.log"; echo "cluster: armada cluster init failed" >&2; exit 1
fi
if [ "$(stat -c %a "$WORK/cluster/token")" = 600 ] && ! "$BIN/armada" cluster init "$WORK/cluster" >/dev/null 2>&1; then
  pass "cluster init writes 0600 files and refuses to overwrite without --force"
else
  fail "cluster init writes 0600 files and refuses to overwrite without --force"
fi

log "agents on node2 and node3 first: the manager boots after the workers"
for n in 1 2 3; do
  make_node_root "$n"
  write_config "$n" "$(boot_token)"
done
for n in 2 3; do start_agent "$n"; done
retrying() {
  [ "$(grep -c "not reachable yet.*retrying in" "$(agent_log 2)")" -ge 2 ] &&
    [ "$(grep -c "not reachable yet.*retrying in" "$(agent_log 3)")" -ge 2 ]
}
collecting() { [ "$(agent_metric 2 armada_agent_backlog_snapshots)" -ge 1 ]; }
if wait_until 15 retrying && kill -0 "${AGENT_PID[2]}" && kill -0 "${AGENT_PID[3]}" && wait_until 10 collecting; then
  pass "with no manager yet the agents retry with backoff (node2: $(grep -o 'retrying in [0-9.]*s' "$(agent_log 2)" | sed 's/retrying in //' | tr '\n' ' ')) and already collect ($(agent_metric 2 armada_agent_backlog_snapshots) kept on node2)"
else
  fail "agents retry while the manager is away" "$(agent_log 2)"
fi

log "manager and an agent on node1"
if ! start_manager 1; then
  fail "manager starts and answers /v1/health" "$(mgr_log)"
  echo "cluster: $passed passed, $failed failed"
  exit 1
fi
t0=$(date +%s%N)
start_agent 1

# ---------------------------------------------------------------- registration and join

all_registered_and_joined() {
  local j
  j=$(nodes_json) || return 1
  [ "$(jq '[.[] | select(.hostname | test("^cl-node[123]$")) | select(.swarm_node_id != null)] | length' <<<"$j")" = 3 ]
}
if wait_until 90 all_registered_and_joined; then
  pass "3 nodes registered and joined $(( ($(date +%s%N) - t0) / 1000000 )) ms after the manager answered"
else
  fail "3 nodes registered and joined within 90s" "$(mgr_log)" "$(agent_log 1)" "$(agent_log 2)" "$(agent_log 3)"
fi

tokens_gone=1
for n in 1 2 3; do
  grep -q '^token' "$WORK/node$n/armada.toml" && tokens_gone=0
  [ "$(stat -c %a "$WORK/node$n/state/credential" 2>/dev/null)" = 600 ] || tokens_gone=0
  grep -q 'operator\|written by ci/cluster-test.sh' "$WORK/node$n/armada.toml" || tokens_gone=0
done
if [ "$tokens_gone" = 1 ]; then
  pass "bootstrap token removed from each armada.toml (comments kept), credentials 0600"
else
  fail "bootstrap token removed from each armada.toml, credentials 0600" "$WORK/node2/armada.toml"
fi

swarm_ready_and_labelled() {
  local ids id ok=0 labels
  [ "$(nodes_docker 1 node ls --format '{{.Status}}' | grep -c Ready)" = 3 ] || return 1
  ids=$(nodes_docker 1 node ls -q)
  for id in $ids; do
    labels=$(nodes_docker 1 node inspect "$id" --format '{{json .Spec.Labels}}')
    jq -e '.["armada.board"] and .["armada.arch"] and .["armada.hostname"] and .zone' <<<"$labels" >/dev/null && ok=$((ok + 1))
  done
  [ "$ok" = 3 ]
}
if wait_until 60 swarm_ready_and_labelled; then
  pass "node1's engine sees 3 Ready nodes labelled armada.board/arch/hostname + operator labels"
  nodes_docker 1 node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}' | sed 's/^/    /'
else
  nodes_docker 1 node ls >&2
  for id in $(nodes_docker 1 node ls -q); do nodes_docker 1 node inspect "$id" --format '{{.Description.Hostname}} {{json .Spec.Labels}}' >&2; done
  fail "3 Ready nodes, labelled" "$(mgr_log)"
fi

labels_match_boards() {
  local n sid board
  for n in 1 2 3; do
    sid=$(nodes_docker "$n" info --format '{{.Swarm.NodeID}}')
    board=$(nodes_docker 1 node inspect "$sid" --format '{{index .Spec.Labels "armada.board"}}')
    [ "$board" = "${BOARD[$n]}" ] || return 1
    [ "$(nodes_docker 1 node inspect "$sid" --format '{{index .Spec.Labels "armada.hostname"}}')" = "cl-node$n" ] || return 1
  done
}
if labels_match_boards; then pass "each swarm node carries its own board and hostname"; else fail "each swarm node carries its own board and hostname" "$(mgr_log)"; fi

# ---------------------------------------------------------------- metrics of real containers

log "a container on each node"
for n in 1 2 3; do
  nodes_docker "$n" run -d --name "arm-cl-load-$n" "$IMAGE" sh -c 'while :; do seq 1 2000 >/dev/null; sleep 0.2; done' >/dev/null ||
    fail "container starts on node $n" "$(dockerd_log "$n")"
done
container_metrics_arrived() {
  local n d
  for n in 1 2 3; do
    d=$(detail "$n") || return 1
    jq -e --arg c "arm-cl-load-$n" \
      '.latest.containers | map(select(.name == $c and .cpu.usage_seconds > 0 and .memory.usage_bytes > 0)) | length == 1' <<<"$d" >/dev/null || return 1
  done
  # The federation holds every container the agents see (on a shared host, other
  # engines' too): a slow render is not a missing container.
  api /metrics -f --max-time 60 | grep -q 'arm-cl-load-3'
}
if wait_until 60 container_metrics_arrived; then
  pass "each node's running container (cpu, memory) reached the manager, and its /metrics federation"
else
  for n in 1 2 3; do detail "$n" | jq -c '{host: .summary.hostname, containers: [.latest.containers[]? | {name, cpu: .cpu.usage_seconds, mem: .memory.usage_bytes}]}' >&2; done
  fail "container metrics reach the manager" "$(mgr_log)" "$(agent_log 2)"
fi
nodes_in 2 curl -sf --max-time 5 "http://$(nodes_ip 2):9101/metrics" >"$WORK/node2-metrics.txt"
if [ -n "$(agent_metric 2 armada_agent_reports_delivered_total)" ] && grep -q 'arm-cl-load-2' "$WORK/node2-metrics.txt" &&
  promtool check metrics <"$WORK/node2-metrics.txt" >"$WORK/promtool.txt" 2>&1; then
  pass "node2's agent serves /metrics ($(grep -vc '^#' "$WORK/node2-metrics.txt") samples, its container included, promtool-clean)"
else
  fail "node2's agent serves promtool-clean /metrics with its container" "$WORK/promtool.txt" "$(agent_log 2)"
fi

# ---------------------------------------------------------------- placement by board label

log "6-replica service constrained to pine64 boards"
nodes_docker 1 service create --detach --no-resolve-image --name arm-cl-pine --replicas 6 \
  --constraint 'node.labels.armada.board==pine64' --endpoint-mode dnsrr \
  "$IMAGE" sleep 3600 >/dev/null 2>"$WORK/service.err" || nodes_log_tail "$WORK/service.err"
pine_ids=" $(nodes_docker 2 info --format '{{.Swarm.NodeID}}') $(nodes_docker 3 info --format '{{.Swarm.NodeID}}') "
running_tasks_nodes() {
  nodes_docker 1 service ps arm-cl-pine --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' 2>/dev/null
}
six_running_on_pine() {
  local out
  out=$(nodes_docker 1 service ps -q arm-cl-pine --filter desired-state=running | xargs -r docker -H "$(nodes_sock 1)" inspect --format '{{.NodeID}} {{.Status.State}}' 2>/dev/null)
  [ "$(grep -c ' running$' <<<"$out")" = 6 ] || return 1
  while read -r nid _; do [[ "$pine_ids" == *" $nid "* ]] || return 1; done <<<"$out"
}
if wait_until 60 six_running_on_pine; then
  pass "6 replicas running, all on the pine64 nodes (node2, node3), none on rpi3"
  running_tasks_nodes | awk '{print $1}' | sort | uniq -c | sed 's/^/    /'
else
  running_tasks_nodes >&2
  fail "6 replicas placed by node.labels.armada.board" "$(dockerd_log 1)"
fi

# ---------------------------------------------------------------- manager SIGKILL mid-stream

log "manager SIGKILLed mid-stream"
before=$(nodes_json | jq -c '[.[] | {node_id, hostname}] | sort_by(.hostname)')
declare -A TOTAL_BEFORE
for n in 1 2 3; do TOTAL_BEFORE[$n]=$(detail "$n" | jq -r .reports_total); done
kill -KILL "$MANAGER_PID"
backlog_grows() { local n v; for n in 1 2 3; do v=$(agent_metric "$n" armada_agent_backlog_snapshots); [ "${v:-0}" -ge 2 ] || return 1; done; }
if wait_until 20 backlog_grows; then
  pass "while the manager is down every agent keeps a backlog in memory ($(for n in 1 2 3; do printf 'node%s:%s ' "$n" "$(agent_metric "$n" armada_agent_backlog_snapshots)"; done))"
else
  fail "agents keep a backlog while the manager is down" "$(agent_log 2)"
fi
node3_dropped() { [ "$(agent_metric 3 armada_agent_backlog_dropped_total)" -ge 1 ]; }
if wait_until 20 node3_dropped; then
  pass "node3's backlog (bound 2) dropped its oldest and counted $(agent_metric 3 armada_agent_backlog_dropped_total); it holds $(agent_metric 3 armada_agent_backlog_snapshots)"
else
  fail "a full backlog drops the oldest and counts it" "$(agent_log 3)"
fi
if start_manager 2; then
  pass "manager restarts on the same store"
else
  fail "manager restarts on the same store" "$(mgr_log)"
fi
backlog_drained() { local n v; for n in 1 2 3; do v=$(agent_metric "$n" armada_agent_backlog_snapshots); [ "${v:-9}" -le 1 ] || return 1; done; }
if wait_until 40 backlog_drained; then pass "agents delivered their backlog after the restart"; else fail "agents delivered their backlog" "$(agent_log 1)" "$(mgr_log)"; fi
after=$(nodes_json | jq -c '[.[] | {node_id, hostname}] | sort_by(.hostname)')
if [ -n "$before" ] && [ "$before" = "$after" ]; then pass "no registered node lost: $(jq -c 'map(.hostname)' <<<"$after")"; else fail "registered nodes survive SIGKILL (before $before, after $after)" "$(mgr_log)"; fi
# Each agent has run since its start without a restart: every snapshot it took, seq 0
# up to the latest, is stored at most once (the manager dedupes by seq) and is either
# stored or counted as dropped by the agent's bound: none dropped on node1 and node2,
# some on node3. A snapshot whose delivery timed out after the manager had committed it
# and that the bound then dropped is both stored and counted (the agent cannot know), so
# on node3 stored + dropped may exceed the snapshots taken, never fall short of them.
no_report_lost() {
  local n d
  for n in 1 2 3; do
    d=$(detail "$n") || return 1
    jq -e --argjson before "${TOTAL_BEFORE[$n]:-0}" --argjson small "$([ "$n" = 3 ] && echo true || echo false)" \
      '.reports_total <= .latest.seq + 1 and .reports_total > $before
       and .reports_total + .agent_dropped_total >= .latest.seq + 1
       and (if $small then .agent_dropped_total > 0
            else .reports_total + .agent_dropped_total == .latest.seq + 1 and .agent_dropped_total == 0 end)' \
      <<<"$d" >/dev/null || return 1
  done
}
if wait_until 20 no_report_lost; then
  pass "no acknowledged report lost: stored + dropped-by-bound = snapshots taken, per node ($(for n in 1 2 3; do detail "$n" | jq -r '"\(.summary.hostname): \(.reports_total)+\(.agent_dropped_total)"'; done | tr '\n' ' '))"
else
  for n in 1 2 3; do detail "$n" | jq -c '{host: .summary.hostname, reports_total, latest_seq: .latest.seq, dropped: .agent_dropped_total}' >&2; done
  fail "every snapshot stored exactly once across the manager's SIGKILL" "$(mgr_log)"
fi

# Figures, not checks: what an agent costs (x86 debug build, 2 s interval).
for n in 1 2 3; do
  pid=${AGENT_PID[$n]}
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  read -r ut st <<<"$(awk '{print $14, $15}' "/proc/$pid/stat" 2>/dev/null)"
  taken=$(detail "$n" | jq -r '.latest.seq + 1')
  log "agent node$n: RSS $((${rss:-0} / 1024)) MiB, CPU $(((${ut:-0} + ${st:-0}) * 1000 / $(getconf CLK_TCK) / ${taken:-1})) ms per snapshot over $taken snapshots"
done

# ---------------------------------------------------------------- a reboot reuses the credential

# Before the reboot, node2's [labels] is edited as on the card: zone changed, spare
# dropped, rack added. The restarted agent sends the new set (PUT /v1/labels) without
# registering again.
log "agent on node2 restarted (a reboot), its armada.toml [labels] edited"
id2=$(node_id_of 2)
sid2=$(nodes_docker 2 info --format '{{.Swarm.NodeID}}')
reg_before=$(detail 2 | jq -r .summary.registered_at_ms)
nodes_stop_pid "${AGENT_PID[2]}" 10
sed -i -e 's/^zone = "shelf-2"$/zone = "shelf-2b"/' -e '/^spare = /d' -e '/^zone = /a rack = "r2"' "$WORK/node2/armada.toml"
start_agent 2 2
reused() { grep -q "registered as node $id2 with" "$(agent_log 2)" && [ "$(agent_metric 2 armada_agent_reports_delivered_total)" -ge 1 ]; }
if wait_until 30 reused && [ "$(nodes_json | jq length)" = 3 ] && [ "$(detail 2 | jq -r .summary.registered_at_ms)" = "$reg_before" ]; then
  pass "restarted agent reuses its credential: same node $id2, no second registration, reports again"
else
  fail "restarted agent reuses its credential" "$(agent_log 2)" "$(mgr_log)"
fi
swarm_labels2() { nodes_docker 1 node inspect "$sid2" --format '{{json .Spec.Labels}}'; }
labels_moved() {
  swarm_labels2 | jq -e '.zone == "shelf-2b" and .rack == "r2" and (has("spare") | not) and .["armada.hostname"] == "cl-node2"' >/dev/null &&
    nodes_json | jq -e --arg id "$id2" '.[] | select(.node_id == $id) | .labels == {"zone":"shelf-2b","rack":"r2"}' >/dev/null
}
t0=$(date +%s%N)
if wait_until 30 labels_moved && [ "$(detail 2 | jq -r .summary.registered_at_ms)" = "$reg_before" ]; then
  pass "edited labels reached the manager and swarm node $sid2 $(( ($(date +%s%N) - t0) / 1000000 )) ms after the restart (zone=shelf-2b, rack=r2, spare gone), no new registration"
else
  fail "edited labels reach the manager and the swarm node (swarm: $(swarm_labels2))" "$(agent_log 2)" "$(mgr_log)"
fi
"$BIN/armada-agent" status --config "$WORK/node2/armada.toml" --root "$WORK/node2/root" \
  --state-dir "$WORK/node2/state" --status-file "$WORK/node2/none.json" >"$WORK/node2-status.txt" 2>&1
if grep -q "^labels: *rack=r2, zone=shelf-2b (acknowledged .* via /v1/labels); on swarm node $sid2; removed spare" "$WORK/node2-status.txt"; then
  pass "armada-agent status says what was applied: $(grep '^labels:' "$WORK/node2-status.txt" | sed 's/^labels: *//')"
else
  fail "armada-agent status shows the labels sent" "$WORK/node2-status.txt"
fi

# ---------------------------------------------------------------- a worker's engine dies

log "node3's dockerd SIGKILLed"
id3=$(node_id_of 3)
sid3=$(nodes_docker 3 info --format '{{.Swarm.NodeID}}')
t0=$(date +%s)
nodes_kill_dockerd 3 KILL
node3_down() { [ "$(detail 3 | jq -r .summary.status)" = down ]; }
if wait_until 90 node3_down; then
  pass "manager marks node3 down $(($(date +%s) - t0))s after its engine died"
else
  detail 3 | jq -c .summary >&2
  fail "manager marks node3 down" "$(mgr_log)"
fi
all_on_node2() {
  local out sid2
  sid2=$(nodes_docker 2 info --format '{{.Swarm.NodeID}}')
  out=$(nodes_docker 1 service ps -q arm-cl-pine --filter desired-state=running | xargs -r docker -H "$(nodes_sock 1)" inspect --format '{{.NodeID}} {{.Status.State}}' 2>/dev/null)
  [ "$(grep -c "^$sid2 running$" <<<"$out")" = 6 ]
}
if wait_until 90 all_on_node2; then
  pass "swarm moved node3's tasks: 6 replicas running on node2 $(($(date +%s) - t0))s after the kill"
else
  running_tasks_nodes >&2
  fail "swarm moves the dead worker's tasks" "$(dockerd_log 1)"
fi
[ "$(nodes_docker 1 node inspect "$sid3" --format '{{.Status.State}}')" = down ] &&
  pass "node1's engine agrees: node3 is down" || fail "node1's engine reports node3 down"

# ---------------------------------------------------------------- refusals

log "refusals"
# A probe agent with its own state, config and root, on node4's engine (outside the
# swarm), serving /metrics on node4's address and port $3. A control-plane failure must
# not end it: it runs until `timeout` stops it (exit 124), /metrics is read while it
# runs. Prints its exit code; its log is in $WORK/probe-NAME.log, its /metrics in
# $WORK/probe-NAME.prom.
probe_agent() {
  local name=$1 token=$2 port=$3 d pid cfg
  d="$WORK/probe-$name"
  cfg="$d/armada.toml"
  mkdir -p "$d/root/etc"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/root/etc/machine-id"
  ln -sfn /proc "$d/root/proc"; ln -sfn /sys "$d/root/sys"
  sed -e "s/cl-node2/cl-$name/" "$WORK/node2/armada.toml" >"$d/armada.toml"
  [ -n "$token" ] && sed -i '/^\[manager\]/a token = "'"$token"'"' "$d/armada.toml"
  sed -i "s/^metrics_listen = .*/metrics_listen = \"$(nodes_ip 4):$port\"/" "$d/armada.toml"
  if [ "${PROBE_READONLY:-}" = 1 ]; then
    # armada.toml on a read-only filesystem (a boot partition mounted ro, or full):
    # the token cannot be removed. Unmounted by the teardown (under $WORK).
    mkdir -p "$d/boot"
    mount -t tmpfs -o size=1m tmpfs "$d/boot"
    mv "$d/armada.toml" "$d/boot/armada.toml"
    mount -o remount,ro "$d/boot"
    cfg="$d/boot/armada.toml"
  fi
  nodes_in 4 timeout 20 "$BIN/armada-agent" run --config "$cfg" --state-dir "$d/state" \
    --status-file "$d/status.json" --docker-host "$(nodes_sock 4)" --root "$d/root" \
    >"$WORK/probe-$name.log" 2>&1 </dev/null &
  pid=$!
  sleep 16
  nodes_in 4 curl -sf --max-time 3 "http://$(nodes_ip 4):$port/metrics" >"$WORK/probe-$name.prom" 2>&1
  wait "$pid"
  echo $?
}
# probe_serving NAME KIND: the probe's /metrics answered with host metrics and showed
# the failure of KIND as its last error.
probe_serving() {
  grep -q '^armada_load1 ' "$WORK/probe-$1.prom" &&
    grep -q "^armada_agent_last_error{kind=\"$2\"} 1" "$WORK/probe-$1.prom"
}
good=$(boot_token)
wrong="${good%.*}.$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
rc=$(probe_agent wrongtoken "$wrong" 9201)
if [ "$rc" = 124 ] && grep -q "refused the registration (40[13])" "$WORK/probe-wrongtoken.log" && [ ! -e "$WORK/probe-wrongtoken/state/credential" ] &&
  probe_serving wrongtoken registration && grep -q '^armada_agent_registered 0' "$WORK/probe-wrongtoken.prom"; then
  pass "a wrong bootstrap token is refused ($(grep -o 'refused the registration ([0-9]*)' "$WORK/probe-wrongtoken.log" | head -1)); the agent keeps serving /metrics and exports the error"
else
  fail "a wrong bootstrap token is refused (rc $rc)" "$WORK/probe-wrongtoken.log"
fi
"$BIN/armada" cluster init "$WORK/other-cluster" --san "$MGR_IP" >/dev/null 2>&1
other=$(grep -v '^#' "$WORK/other-cluster/token" | grep -m1 .)
rc=$(probe_agent otherca "$other" 9202)
if [ "$rc" = 124 ] && grep -q "does not hold the CA pinned" "$WORK/probe-otherca.log" && [ ! -e "$WORK/probe-otherca/state/credential" ] &&
  probe_serving otherca registration; then
  pass "a token of another CA is refused by the agent's pinning before it sends anything; /metrics goes on"
else
  fail "a token of another CA is refused (rc $rc)" "$WORK/probe-otherca.log"
fi
if grep -q "cl-otherca" "$(mgr_log)"; then fail "the other-CA agent never reached the manager's API" "$(mgr_log)"; fi

# A registered node whose swarm join token the swarm rejects (node2's registration with
# the token's secret changed, on node4's engine): the agent says so and goes on.
mkdir -p "$WORK/probe-swarmtoken"
cp -a "$WORK/node2/state" "$WORK/probe-swarmtoken/state"
rm -f "$WORK/probe-swarmtoken/state/swarm_node_id"
jq '.swarm_join_token |= sub("-[a-z0-9]+$"; "-0000000000000000000000000")' "$WORK/node2/state/registration.json" \
  >"$WORK/probe-swarmtoken/state/registration.json"
rc=$(probe_agent swarmtoken "" 9203)
if [ "$rc" = 124 ] && grep -q "rejected the join token" "$WORK/probe-swarmtoken.log" &&
  [ "$(nodes_docker 4 info --format '{{.Swarm.LocalNodeState}}')" != active ] && probe_serving swarmtoken swarm; then
  pass "a swarm join token the swarm rejects is reported (log, /metrics) while the agent goes on"
else
  fail "a rejected swarm join token is reported (rc $rc)" "$WORK/probe-swarmtoken.log"
fi

# A new node whose armada.toml is read-only and whose engine is in a foreign swarm
# (its own `swarm init`): it registers, cannot remove the token, and either leaves the
# foreign swarm for ours (the manager named its swarm's cluster ID) or, without that
# ID, never leaves on its own and says why. /metrics answers throughout.
nodes_docker 4 swarm init --advertise-addr "$(nodes_ip 4)" >/dev/null 2>&1
foreign=$(nodes_docker 4 info --format '{{.Swarm.Cluster.ID}}')
ours=$(nodes_docker 1 info --format '{{.Swarm.Cluster.ID}}')
rc=$(PROBE_READONLY=1 probe_agent roswarm "$good" 9204)
d="$WORK/probe-roswarm"
mgr_cluster=$(jq -r '.swarm_cluster_id // empty' "$d/state/registration.json" 2>/dev/null)
# A worker's engine does not show its swarm's cluster ID: ours knows node4, or not.
now_cluster=$(nodes_docker 4 info --format '{{.Swarm.Cluster.ID}}')
sid4=$(nodes_docker 4 info --format '{{.Swarm.NodeID}}')
in_ours=no
[ -n "$sid4" ] && nodes_docker 1 node inspect "$sid4" >/dev/null 2>&1 && in_ours=yes
if [ "$rc" = 124 ] && [ -n "$foreign" ] && [ -e "$d/state/credential" ] && grep -q '^token = ' "$d/boot/armada.toml" &&
  grep -q "removing the bootstrap token" "$WORK/probe-roswarm.log" && probe_serving roswarm token &&
  grep -q '^armada_agent_registered 1' "$WORK/probe-roswarm.prom"; then
  pass "a read-only armada.toml keeps the token (exported as last_error{kind=\"token\"}); the agent registered and goes on"
else
  fail "a read-only armada.toml is reported, not fatal (rc $rc)" "$WORK/probe-roswarm.log" "$WORK/probe-roswarm.prom"
fi
if [ -n "$mgr_cluster" ]; then
  if [ "$in_ours" = yes ] && [ "$mgr_cluster" = "$ours" ] && grep -q "leaving it" "$WORK/probe-roswarm.log" &&
    grep -q '^armada_load1 ' "$WORK/probe-roswarm.prom"; then
    pass "a foreign swarm ($foreign) is left for the manager's ($ours: node1 knows node4 as $sid4); /metrics went on"
  else
    fail "a foreign swarm is left for the manager's (node4 $sid4 in ours: $in_ours, ours $ours)" "$WORK/probe-roswarm.log"
  fi
elif [ "$now_cluster" = "$foreign" ] && grep -q "already part of another swarm" "$WORK/probe-roswarm.log" && probe_serving roswarm swarm; then
  pass "without the manager's swarm cluster ID a foreign swarm is kept and reported (log, /metrics)"
else
  fail "a foreign swarm is reported (now $now_cluster, foreign $foreign)" "$WORK/probe-roswarm.log" "$WORK/probe-roswarm.prom"
fi
nodes_docker 4 swarm leave --force >/dev/null 2>&1

log "node3 removed by the operator"
cred3=$(cat "$WORK/node3/state/credential")
if nodes_in 1 "$BIN/armada-manager" nodes --url "https://$MGR" --cluster-dir "$WORK/cluster" remove "$id3" >"$WORK/remove.log" 2>&1; then
  pass "armada-manager nodes remove $id3"
else
  fail "armada-manager nodes remove $id3" "$WORK/remove.log"
fi
code=$(nodes_in 1 curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$WORK/cluster/ca.pem" \
  -H "Authorization: Bearer $cred3" -H 'Content-Type: application/json' \
  --data '{"swarm_node_id":"x"}' "https://$MGR/v1/joined")
unset cred3
agent3_refused() {
  grep -Eq "refused this node's credential|was removed" "$(agent_log 3)" &&
    nodes_in 3 curl -sf --max-time 5 "http://$(nodes_ip 3):9101/metrics" | grep -Eq '^armada_agent_last_error\{kind="(credential|revoked)"\} 1'
}
if [ "$code" = 401 ] && wait_until 40 agent3_refused && kill -0 "${AGENT_PID[3]}" 2>/dev/null; then
  pass "the removed node's credential gets 401; its agent says why, stops delivering and keeps serving /metrics"
else
  fail "the removed node's credential is refused (HTTP $code)" "$(agent_log 3)" "$(mgr_log)"
fi
if nodes_in 1 "$BIN/armada-manager" nodes --url "https://$MGR" --cluster-dir "$WORK/cluster" >"$WORK/nodes-table.txt" 2>&1 &&
  grep -q cl-node1 "$WORK/nodes-table.txt" && ! grep -q cl-node3 "$WORK/nodes-table.txt"; then
  pass "armada-manager nodes lists the cluster without the removed node"
  sed 's/^/    /' "$WORK/nodes-table.txt"
else
  fail "armada-manager nodes table" "$WORK/nodes-table.txt"
fi

# ---------------------------------------------------------------- done

echo
if [ "$failed" -gt 0 ]; then printf 'failed: %s\n' "${failures[@]}"; fi
echo "cluster: $passed passed, $failed failed ($(($(date +%s) - t_start))s)"
[ "$failed" -eq 0 ]
