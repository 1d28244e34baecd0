#!/usr/bin/env bash
# armada-manager against a real Docker Engine (one dockerd in network namespace
# arm-mg-node1, 172.30.3.1/24, via ci/lib/nodes.sh): the manager initialises the swarm
# with --swarm-advertise-addr, registration replies carry the engine's real join token
# and manager address, /v1/joined labels the swarm node, a label an operator removes
# is put back by the poll, a changed label set (PUT /v1/labels) lands at once with the
# operator's keys kept and dropped keys taken off, and /v1/nodes shows the swarm's view. Run as root; the
# cluster tier can call it (x86 debug builds).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source ci/lib/nodes.sh

log() { printf '[manager-swarm] %s\n' "$*"; }
checks=0; failed=0
pass() { checks=$((checks + 1)); log "ok: $1"; }
fail() { failed=$((failed + 1)); log "FAIL: $1"; [ -n "${2:-}" ] && [ -f "$2" ] && nodes_log_tail "$2"; }

[ "$(id -u)" -eq 0 ] || { echo "ci/manager-swarm-test.sh must run as root" >&2; exit 1; }
cargo build --locked -q -p armada -p armada-manager || exit 1
BIN=$PWD/target/debug
WORK=$(mktemp -d /tmp/armada-mgswarm.XXXXXX)
nodes_init arm-mg 172.30.3 "$WORK"
trap 'nodes_teardown; rm -rf "$WORK"' EXIT
nodes_teardown   # whatever a crashed earlier run left
nodes_setup_hub
nodes_add_node 1
nodes_start_dockerd 1
nodes_wait_dockerd 1 60 || { fail "dockerd starts" "$(nodes_dir 1)/dockerd.log"; exit 1; }

"$BIN/armada" -q cluster init "$WORK/cluster" --san "$(nodes_ip 1)"
nodes_bg_in 1 "$WORK/manager.log" "$BIN/armada-manager" serve --listen "$(nodes_ip 1):7443" \
  --cluster-dir "$WORK/cluster" --state-dir "$WORK/state" --docker-host "$(nodes_sock 1)" \
  --swarm-advertise-addr "$(nodes_ip 1)"
MGR="https://$(nodes_ip 1):7443"
admin=$(cat "$WORK/cluster/admin-token")
api() { nodes_in 1 curl -sS --max-time 20 --cacert "$WORK/cluster/ca.pem" "$@"; }
for _ in $(seq 1 60); do grep -q "swarm ready" "$WORK/manager.log" && break; sleep 0.5; done
if grep -q "swarm ready" "$WORK/manager.log"; then pass "manager initialised the swarm"; else fail "swarm init" "$WORK/manager.log"; exit 1; fi
state=$(nodes_docker 1 info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}}')
[ "$state" = "active true $(nodes_ip 1)" ] && pass "engine is an active swarm manager at $(nodes_ip 1)" || fail "engine swarm state: $state"

token=$(grep -m1 '^armada1\.' "$WORK/cluster/token")
# This registration plays the agent on the manager's own engine: only with that
# engine's ID may it claim (label) the manager's swarm node.
engine_id=$(nodes_docker 1 info --format '{{.ID}}')
reply=$(api -H 'Content-Type: application/json' "$MGR/v1/register" --data @- <<JSON
{"protocol":1,"token":"$token","labels":{"zone":"shelf-3"},
 "facts":{"hostname":"arm-mg-node1","board":"pine64","role":"worker","machine_id":"mid-1","arch":"aarch64",
          "kernel":"6.1.0","cpus":4,"memory_bytes":2147483648,"docker_version":"20.10","agent_version":"test",
          "engine_id":"$engine_id"}}
JSON
)
real_token=$(nodes_docker 1 swarm join-token -q worker)
jt=$(printf '%s' "$reply" | sed -n 's/.*"swarm_join_token":"\([^"]*\)".*/\1/p')
[ -n "$jt" ] && [ "$jt" = "$real_token" ] && pass "registration carries the engine's worker join token" || fail "join token in the reply"
printf '%s' "$reply" | grep -q "\"swarm_managers\":\[\"$(nodes_ip 1):2377\"\]" && pass "registration carries the manager address $(nodes_ip 1):2377" || fail "managers in reply: $reply"
cred=$(printf '%s' "$reply" | sed -n 's/.*"credential":"\([^"]*\)".*/\1/p')

sid=$(nodes_docker 1 info --format '{{.Swarm.NodeID}}')
code=$(api -o "$WORK/joined.json" -w '%{http_code}' -H "Authorization: Bearer $cred" -H 'Content-Type: application/json' \
  "$MGR/v1/joined" --data "{\"swarm_node_id\":\"$sid\"}")
[ "$code" = 200 ] && pass "/v1/joined answers 200" || fail "/v1/joined answered $code" "$WORK/joined.json"
labels() { nodes_docker 1 node inspect "$sid" --format '{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}} {{end}}'; }
l=$(labels)
for want in armada.board=pine64 armada.arch=aarch64 armada.hostname=arm-mg-node1 zone=shelf-3; do
  case " $l" in *" $want "*) pass "swarm node label $want" ;; *) fail "label $want missing: $l" ;; esac
done
code=$(api -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $cred" -H 'Content-Type: application/json' \
  "$MGR/v1/joined" --data '{"swarm_node_id":"doesnotexist0000"}')
[ "$code" = 404 ] && pass "/v1/joined with an unknown swarm node id: 404" || fail "unknown swarm node answered $code"

nodes_docker 1 node update --label-rm armada.board "$sid" >/dev/null
for _ in $(seq 1 30); do labels | grep -q armada.board=pine64 && break; sleep 0.5; done
labels | grep -q armada.board=pine64 && pass "a removed label is put back by the poll" || fail "label not restored: $(labels)"

# A changed label set through PUT /v1/labels (what the agent sends when armada.toml's
# [labels] changed since registration): operator keys keep the operator's value, keys
# the node dropped are taken off and stay off across the poll.
node_id=$(printf '%s' "$reply" | sed -n 's/.*"node_id":"\([^"]*\)".*/\1/p')
put_labels() { api -o "$WORK/labels.json" -w '%{http_code}' -X PUT -H "Authorization: Bearer $1" -H 'Content-Type: application/json' "$MGR/v1/labels" --data "$2"; }
label_of() { nodes_docker 1 node inspect "$sid" --format "{{index .Spec.Labels \"$1\"}}"; }
code=$(api -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  "$MGR/v1/nodes/$node_id/labels" --data '{"set":{"rack":"op-rack"}}')
[ "$code" = 200 ] && pass "operator label rack=op-rack set" || fail "operator label answered $code"
code=$(put_labels "$cred" '{"labels":{"zone":"shelf-4","rack":"node-rack","extra":"x"}}')
if [ "$code" = 200 ] && [ "$(label_of zone)" = shelf-4 ] && [ "$(label_of extra)" = x ] && [ "$(label_of rack)" = op-rack ] &&
  [ "$(jq -c .operator_keys "$WORK/labels.json")" = '["rack"]' ] && [ "$(jq -r .swarm_node_id "$WORK/labels.json")" = "$sid" ]; then
  pass "PUT /v1/labels: zone=shelf-4 and extra=x on the swarm node at once, the operator's rack=op-rack kept (reply names it)"
else
  fail "PUT /v1/labels answered $code: $(cat "$WORK/labels.json"); swarm labels $(labels)"
fi
code=$(put_labels "$cred" '{"labels":{"zone":"shelf-4","rack":"node-rack"}}')
sleep 6   # one manager poll (5 s): it must not put the dropped key back
if [ "$code" = 200 ] && [ -z "$(label_of extra)" ] && [ "$(jq -c .removed "$WORK/labels.json")" = '["extra"]' ] &&
  [ "$(label_of rack)" = op-rack ] && [ "$(label_of zone)" = shelf-4 ] && [ "$(label_of armada.board)" = pine64 ]; then
  pass "a key the node dropped (extra) is taken off and stays off over a poll; rack stays the operator's"
else
  fail "dropped label: code $code, reply $(cat "$WORK/labels.json"), swarm labels $(labels)"
fi
api -H "Authorization: Bearer $admin" "$MGR/v1/nodes" | jq -e --arg id "$node_id" '.[] | select(.node_id == $id) | .labels == {"zone":"shelf-4","rack":"node-rack"}' >/dev/null &&
  pass "/v1/nodes shows the node's new label set" || fail "labels in /v1/nodes: $(api -H "Authorization: Bearer $admin" "$MGR/v1/nodes")"
before=$(labels)
c1=$(put_labels "$admin" '{"labels":{"zone":"by-admin"}}')
c2=$(put_labels "$cred" '{"labels":{"armada.board":"fake"}}')
[ "$c1" = 403 ] && [ "$c2" = 400 ] && [ "$(labels)" = "$before" ] &&
  pass "PUT /v1/labels refuses the admin token (403) and a reserved armada.* key (400); swarm labels unchanged" ||
  fail "refusals: admin $c1, reserved key $c2; labels before $before after $(labels)"
# Another registration (no engine ID, never joined) has no swarm node to label: its
# labels are stored only, and the manager's own swarm node is untouched.
other=$(api -H 'Content-Type: application/json' "$MGR/v1/register" --data @- <<JSON
{"protocol":1,"token":"$token","labels":{},
 "facts":{"hostname":"mg-other","board":"rpi3","role":"worker","machine_id":"mid-2","arch":"aarch64",
          "kernel":"6.1.0","cpus":4,"memory_bytes":1073741824,"docker_version":"20.10","agent_version":"test"}}
JSON
)
cred2=$(printf '%s' "$other" | sed -n 's/.*"credential":"\([^"]*\)".*/\1/p')
c3=$(api -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $cred2" -H 'Content-Type: application/json' \
  "$MGR/v1/joined" --data "{\"swarm_node_id\":\"$sid\"}")
c4=$(put_labels "$cred2" '{"labels":{"zone":"hijack"}}')
{ [ "$c3" = 403 ] || [ "$c3" = 409 ]; } && [ "$c4" = 200 ] && [ "$(jq -r '.swarm_node_id // "none"' "$WORK/labels.json")" = none ] && [ "$(labels)" = "$before" ] &&
  pass "another node cannot claim the manager's swarm node ($c3); its PUT /v1/labels is stored only; the manager's node unchanged" ||
  fail "other node: joined $c3, labels $c4 $(cat "$WORK/labels.json"); swarm labels $(labels)"

nodes_json=$(api -H "Authorization: Bearer $admin" "$MGR/v1/nodes")
printf '%s' "$nodes_json" | grep -q '"swarm_state":"ready"' && pass "/v1/nodes shows swarm_state ready" || fail "swarm state: $nodes_json"
printf '%s' "$nodes_json" | grep -q "\"swarm_node_id\":\"$sid\"" && pass "/v1/nodes links the swarm node" || fail "swarm node id: $nodes_json"

log "$checks passed, $failed failed"
[ "$failed" -eq 0 ]
