#!/usr/bin/env bash
# Trust in a real swarm: four real dockerd in network namespaces this script creates
# (arm-tr-node1..4 on 172.30.11.0/24 behind a bridge in arm-tr-hub). node1 runs the
# manager (and its engine is the swarm's only manager), node2 and node3 run agents,
# node4's engine plays a thief who read a worker card's bootstrap token. It shows:
#   - role escalation: "role":"manager" with the bootstrap token gets the WORKER join
#     token (compared with `docker swarm join-token -q worker|manager`);
#   - label hijack: the thief's registration cannot label node2's swarm node nor the
#     manager's own, and node2's labels are unchanged;
#   - promote/demote through `armada-manager nodes promote|demote`;
#   - operator labels win over the node's armada.toml labels;
#   - rotate-admin: a running manager takes the new admin token, refuses the old one;
#   - the manager restarted on an EMPTY state dir re-adopts every node (same node id,
#     hostname, labels, swarm node), while a node the operator removed stays removed;
#   - the manager's swarm wiped too (a new manager card): the nodes leave the dead
#     swarm and join the new one by themselves, labels restored.
# Each case prints what it did and saw, with seconds to re-adoption. Bounded waits;
# teardown (trap) ends by PID what it started and deletes namespaces and cgroups.
#
#   ci/readoption-test.sh   (as root; binaries from target/debug, built by
#                            ci/tier-cluster.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=ci/lib/nodes.sh
. ci/lib/nodes.sh

BIN=${ARMADA_BIN_DIR:-$repo/${CARGO_TARGET_DIR:-target}/debug}
WORK=${ARMADA_READOPT_WORK:-/tmp/armada-readoption-test}
INTERVAL=2
MGR_IP=172.30.11.1
MGR=$MGR_IP:7443

passed=0 failed=0 failures=()
t_start=$(date +%s)
log() { printf '[readoption %3ds] %s\n' "$(($(date +%s) - t_start))" "$*"; }
pass() { passed=$((passed + 1)); log "PASS $1"; }
fail() {
  failed=$((failed + 1)); failures+=("$1"); log "FAIL $1"
  shift
  local f
  for f in "$@"; do nodes_log_tail "$f" 30; done
}
# shellcheck source=ci/lib/wait.sh
. ci/lib/wait.sh

[ "$(id -u)" -eq 0 ] || { echo "readoption: must run as root (network namespaces, dockerd)" >&2; exit 1; }
for b in armada armada-agent armada-manager; do
  [ -x "$BIN/$b" ] || { echo "readoption: $BIN/$b is missing: build it first (ci/tier-cluster.sh does)" >&2; exit 1; }
done
for t in dockerd docker nsenter unshare ip jq curl; do
  command -v "$t" >/dev/null || { echo "readoption: $t is missing: run ci/host-deps.sh" >&2; exit 1; }
done

cleanup() {
  log "teardown"
  nodes_teardown
  if [ "${ARMADA_READOPT_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
}
nodes_init arm-tr 172.30.11 "$WORK"
nodes_teardown
rm -rf "$WORK"
nodes_init arm-tr 172.30.11 "$WORK"
trap cleanup EXIT
trap 'exit 130' INT TERM

admin_token() { grep -v '^#' "$WORK/cluster/admin-token" | grep -m1 .; }
boot_token() { grep -v '^#' "$WORK/cluster/token" | grep -m1 .; }
# curl_in N ARGS...: HTTPS to the manager from node N's namespace, pinned to the CA.
curl_in() { local n=$1; shift; nodes_in "$n" curl -sS --max-time 15 --cacert "$WORK/cluster/ca.pem" "$@"; }
api() { local path=$1; shift; curl_in 1 -H "Authorization: Bearer $(admin_token)" "$@" "https://$MGR$path"; }
nodes_json() { api /v1/nodes -f; }
node_id_of() { nodes_json | jq -r --arg h "tr-node$1" '.[] | select(.hostname == $h) | .node_id'; }
mgr_cli() { nodes_in 1 "$BIN/armada-manager" nodes --url "https://$MGR" --cluster-dir "$WORK/cluster" "$@"; }
sid_of() { nodes_docker "$1" info --format '{{.Swarm.NodeID}}'; }
label_of() { nodes_docker 1 node inspect "$1" --format "{{index .Spec.Labels \"$2\"}}" 2>/dev/null; }
mgr_log() { echo "$WORK/manager.log"; }
agent_log() { echo "$WORK/node$1/agent.log"; }

start_manager() {
  nodes_bg_in 1 "$WORK/manager.log.$1" "$BIN/armada-manager" serve \
    --cluster-dir "$WORK/cluster" --state-dir "$WORK/manager-state" --listen 0.0.0.0:7443 \
    --docker-host "$(nodes_sock 1)" --swarm-advertise-addr "$MGR_IP" --report-interval "$INTERVAL"
  MANAGER_PID=$NODES_LAST_PID
  ln -sf "manager.log.$1" "$WORK/manager.log"
  wait_until 30 api /v1/health -f --max-time 2
}

write_config() {
  local n=$1
  mkdir -p "$WORK/node$n/root/etc"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/node$n/root/etc/machine-id"
  echo "tr-node$n" >"$WORK/node$n/root/etc/hostname"
  ln -sfn /proc "$WORK/node$n/root/proc"
  ln -sfn /sys "$WORK/node$n/root/sys"
  cat >"$WORK/node$n/armada.toml" <<EOF
hostname = "tr-node$n"
role = "worker"
board = "pine64"

[manager]
address = "$MGR_IP"
token = "$(boot_token)"

[labels]
zone = "shelf-$n"
rack = "node-says-$n"

[agent]
metrics_listen = ""
cgroup_parent = "$(nodes_cgroup_parent "$n")"
EOF
}

declare -A AGENT_PID
start_agent() {
  local n=$1 tag=${2:-1}
  nodes_bg_in "$n" "$WORK/node$n/agent.log.$tag" "$BIN/armada-agent" run \
    --config "$WORK/node$n/armada.toml" --state-dir "$WORK/node$n/state" \
    --docker-host "$(nodes_sock "$n")" --root "$WORK/node$n/root"
  AGENT_PID[$n]=$NODES_LAST_PID
  ln -sf "agent.log.$tag" "$WORK/node$n/agent.log"
}

# joined_and_labelled N...: each node is in /v1/nodes with its swarm node, which is
# Ready in node1's swarm and carries armada.node-id and its zone label.
joined_and_labelled() {
  local n j id sid
  j=$(nodes_json) || return 1
  for n in "$@"; do
    id=$(jq -r --arg h "tr-node$n" '.[] | select(.hostname == $h) | .node_id' <<<"$j")
    sid=$(jq -r --arg h "tr-node$n" '.[] | select(.hostname == $h) | .swarm_node_id // empty' <<<"$j")
    [ -n "$id" ] && [ -n "$sid" ] || return 1
    [ "$(sid_of "$n")" = "$sid" ] || return 1
    [ "$(nodes_docker 1 node inspect "$sid" --format '{{.Status.State}}')" = ready ] || return 1
    [ "$(label_of "$sid" armada.node-id)" = "$id" ] || return 1
    [ "$(label_of "$sid" zone)" = "shelf-$n" ] || return 1
  done
}

# ---------------------------------------------------------------- set-up

log "four namespaces and dockerd (engine hostnames = armada.toml hostnames)"
nodes_setup_hub || { echo "readoption: could not create the hub namespace" >&2; exit 1; }
for n in 1 2 3 4; do nodes_add_node "$n" || { echo "readoption: could not create node $n" >&2; exit 1; }; done
for n in 1 2 3 4; do nodes_start_dockerd "$n" "tr-node$n"; done
for n in 1 2 3 4; do nodes_wait_dockerd "$n" 60 || { echo "readoption: dockerd of node $n did not start" >&2; exit 1; }; done
"$BIN/armada" -q cluster init "$WORK/cluster" --san "$MGR_IP" >"$WORK/init.log" 2>&1 ||
  { nodes_log_tail "$WORK/init.log"; echo "readoption: armada cluster init failed" >&2; exit 1; }
start_manager 1 || { fail "manager starts" "$(mgr_log)"; exit 1; }
for n in 2 3; do write_config "$n"; start_agent "$n"; done
t0=$(date +%s%N)
if wait_until 90 joined_and_labelled 2 3; then
  pass "node2 and node3 registered, joined and labelled in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
else
  fail "node2 and node3 registered, joined and labelled" "$(mgr_log)" "$(agent_log 2)" "$(agent_log 3)"
fi
ID2=$(node_id_of 2); ID3=$(node_id_of 3)
SID2=$(sid_of 2); MGR_SID=$(sid_of 1)

# ---------------------------------------------------------------- role escalation

log "a thief on node4 registers with the bootstrap token, asking for role manager"
register_json() { # HOSTNAME ROLE
  cat <<JSON
{"protocol":1,"token":"$(boot_token)","labels":{},
 "facts":{"hostname":"$1","board":"pine64","role":"$2","machine_id":"mid-$1","arch":"aarch64",
          "kernel":"6.1.0","cpus":4,"memory_bytes":1073741824,"docker_version":"20.10","agent_version":"thief",
          "engine_id":"$(nodes_docker 4 info --format '{{.ID}}')"}}
JSON
}
reply=$(register_json tr-thief manager | curl_in 4 -H 'Content-Type: application/json' --data @- "https://$MGR/v1/register")
got=$(jq -r '.swarm_join_token // empty' <<<"$reply")
worker=$(nodes_docker 1 swarm join-token -q worker)
manager=$(nodes_docker 1 swarm join-token -q manager)
if [ -n "$got" ] && [ "$got" = "$worker" ] && [ "$got" != "$manager" ]; then
  pass "role escalation: \"role\":\"manager\" got the WORKER join token (${got:0:16}...), not the manager's (${manager:0:16}...)"
else
  fail "role escalation: the reply held '${got:0:20}' (worker ${worker:0:20}, manager ${manager:0:20})" "$(mgr_log)"
fi
grep -q "tr-thief. asked for role manager" "$(mgr_log)" && pass "the manager logged the downgrade" || fail "downgrade logged" "$(mgr_log)"
thief_cred=$(jq -r '.credential // empty' <<<"$reply")

# ---------------------------------------------------------------- label hijack

log "the thief claims node2's swarm node, then the manager's own"
labels_before=$(nodes_docker 1 node inspect "$SID2" --format '{{json .Spec.Labels}}')
hijack() { # SWARM_NODE_ID -> HTTP code
  curl_in 4 -o "$WORK/hijack.json" -w '%{http_code}' -H "Authorization: Bearer $thief_cred" \
    -H 'Content-Type: application/json' --data "{\"swarm_node_id\":\"$1\"}" "https://$MGR/v1/joined"
}
c1=$(hijack "$SID2"); e1=$(jq -r .error "$WORK/hijack.json" 2>/dev/null)
c2=$(hijack "$MGR_SID"); e2=$(jq -r .error "$WORK/hijack.json" 2>/dev/null)
labels_after=$(nodes_docker 1 node inspect "$SID2" --format '{{json .Spec.Labels}}')
mgr_owner=$(label_of "$MGR_SID" armada.node-id)
# 409: node2's swarm node belongs to node2's registration; 403: not the thief's own.
if { [ "$c1" = 409 ] || [ "$c1" = 403 ]; } && [ "$c2" = 403 ] && [ "$labels_before" = "$labels_after" ] && [ -z "$mgr_owner" ]; then
  pass "label hijack refused: node2's swarm node -> $c1 ($e1); the manager's own -> $c2 ($e2); labels unchanged"
else
  fail "label hijack: codes $c1/$c2, node2 labels before $labels_before after $labels_after, manager node owner '$mgr_owner'" "$(mgr_log)"
fi

# ---------------------------------------------------------------- promote / demote

role_of() { nodes_docker 1 node inspect "$1" --format '{{.Spec.Role}}'; }
reachable() { [ "$(nodes_docker 1 node inspect "$SID2" --format '{{if .ManagerStatus}}{{.ManagerStatus.Reachability}}{{end}}')" = reachable ]; }
is_worker() { [ "$(role_of "$SID2")" = worker ] && [ "$(nodes_docker 2 info --format '{{.Swarm.ControlAvailable}}')" = false ]; }
# Demoting before raft counts the new manager is refused by the engine: wait for it.
if mgr_cli promote "$ID2" >"$WORK/promote.log" 2>&1 && wait_until 30 reachable; then
  if mgr_cli demote "$ID2" >>"$WORK/promote.log" 2>&1 && wait_until 30 is_worker; then
    pass "armada-manager nodes promote/demote $ID2: the swarm made it a manager, then a worker again"
  else
    fail "demote $ID2 (role $(role_of "$SID2"))" "$WORK/promote.log"
  fi
else
  fail "promote $ID2 (role $(role_of "$SID2"))" "$WORK/promote.log" "$(mgr_log)"
fi

# ---------------------------------------------------------------- operator labels win

mgr_cli label "$ID2" rack=operator-rack >"$WORK/label.log" 2>&1 || fail "nodes label" "$WORK/label.log"
# The manager's poll re-applies labels every few seconds: the node's rack must not come back.
sleep 12
if [ "$(label_of "$SID2" rack)" = operator-rack ] && [ "$(label_of "$(sid_of 3)" rack)" = node-says-3 ]; then
  pass "operator label rack=operator-rack on node2 holds against the node's rack=node-says-2 over 12 s of polls (node3 keeps its own)"
else
  fail "operator label wins (node2 rack=$(label_of "$SID2" rack))" "$(mgr_log)"
fi

# ---------------------------------------------------------------- rotate-admin

old_admin=$(admin_token)
"$BIN/armada" -q cluster token rotate-admin "$WORK/cluster" >"$WORK/rotate.log" 2>&1 || fail "rotate-admin" "$WORK/rotate.log"
t0=$(date +%s%N)
if wait_until 10 api /v1/health -f --max-time 2; then
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  code=$(curl_in 1 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $old_admin" "https://$MGR/v1/nodes")
  [ "$code" = 401 ] && pass "rotate-admin: new admin token accepted after $ms ms without a restart, the old one gets $code" ||
    fail "rotate-admin: old admin token answered $code"
else
  fail "rotate-admin: the new admin token is not accepted" "$(mgr_log)"
fi
unset old_admin

# ---------------------------------------------------------------- state dir lost

log "node3 is off when the operator removes it; then the manager's state dir is lost"
SID3=$(sid_of 3)
nodes_stop_pid "${AGENT_PID[3]}" 10
mgr_cli remove "$ID3" >"$WORK/remove.log" 2>&1 || fail "nodes remove $ID3" "$WORK/remove.log"
wait_until 15 bash -c "! docker -H '$(nodes_sock 1)' node inspect '$SID3' >/dev/null 2>&1" &&
  pass "removing $ID3 took its swarm node out of the swarm" || fail "$ID3's swarm node left the swarm"
grep -q "$ID3" "$WORK/cluster/revoked-nodes" && pass "$ID3 is in the cluster folder's revoked-nodes" || fail "revoked-nodes holds $ID3"
nodes_stop_pid "$MANAGER_PID" 15
rm -rf "$WORK/manager-state"
t0=$(date +%s%N)
start_manager 2 || fail "manager starts on an empty state dir" "$(mgr_log)"
if wait_until 60 joined_and_labelled 2 && [ "$(node_id_of 2)" = "$ID2" ]; then
  pass "EMPTY state dir: node2 re-adopted in $(( ($(date +%s%N) - t0) / 1000000 )) ms: same node id $ID2, hostname, labels, swarm node $SID2, no card reflashed"
else
  fail "node2 re-adopted after the state dir was lost" "$(mgr_log)" "$(agent_log 2)"
fi
[ "$(label_of "$SID2" rack)" = operator-rack ] && pass "the operator's label survived in the swarm" || fail "operator label after re-adoption: $(label_of "$SID2" rack)"
# node3 comes back on: its first report meets a manager that never knew it.
start_agent 3 2
node3_out() { [ -z "$(node_id_of 3)" ] && grep -qi "revoked\|removed" "$(agent_log 3)"; }
cred3=$(cat "$WORK/node3/state/credential")
code=$(curl_in 3 -o "$WORK/node3-report.json" -w '%{http_code}' -H "Authorization: Bearer $cred3" \
  -H 'Content-Type: application/json' --data '{"protocol":1,"snapshots":[]}' "https://$MGR/v1/report")
unset cred3
if [ "$code" = 401 ] && [ "$(jq -r .code "$WORK/node3-report.json")" = revoked ]; then
  pass "the new manager answers node3's credential 401 {\"code\":\"revoked\"} from the cluster folder's revoked-nodes"
else
  fail "node3's credential after the wipe: HTTP $code $(cat "$WORK/node3-report.json")"
fi
if wait_until 40 node3_out; then
  pass "removed node3 not re-adopted: absent from /v1/nodes, its agent says: $(grep -i -m1 'revoked\|removed' "$(agent_log 3)" | cut -c1-160)"
else
  fail "removed node3 stays removed" "$(mgr_log)" "$(agent_log 3)"
fi

# ---------------------------------------------------------------- swarm lost too

log "a new manager card: state dir AND swarm gone"
old_cluster=$(nodes_docker 1 info --format '{{.Swarm.Cluster.ID}}')
nodes_stop_pid "$MANAGER_PID" 15
nodes_docker 1 swarm leave --force >/dev/null 2>&1
rm -rf "$WORK/manager-state"
t0=$(date +%s%N)
start_manager 3 || fail "manager starts with no swarm" "$(mgr_log)"
new_cluster() { local c; c=$(nodes_docker 1 info --format '{{.Swarm.Cluster.ID}}'); [ -n "$c" ] && [ "$c" != "$old_cluster" ]; }
wait_until 30 new_cluster || fail "the manager initialised a new swarm" "$(mgr_log)"
if wait_until 120 joined_and_labelled 2; then
  pass "swarm lost: node2 left the dead swarm and joined the new one ($(nodes_docker 2 info --format '{{.Swarm.Cluster.ID}}' | cut -c1-12)) by itself in $(( ($(date +%s%N) - t0) / 1000000 )) ms, labels restored (zone=$(label_of "$(sid_of 2)" zone))"
else
  fail "node2 joins the new swarm with its labels" "$(mgr_log)" "$(agent_log 2)"
fi

echo
if [ "$failed" -gt 0 ]; then printf 'failed: %s\n' "${failures[@]}"; fi
echo "readoption: $passed passed, $failed failed ($(($(date +%s) - t_start))s)"
[ "$failed" -eq 0 ]
