#!/usr/bin/env bash
# The operator's cockpit (issue #13) in a real browser against a real swarm: three real
# dockerd in network namespaces this script creates (arm-ui-node1..3 on 172.30.23.0/24
# behind a bridge in arm-ui-hub, nothing routed outside), armada-manager on node1 (it
# initialises the swarm on node1's engine), a real armada-agent on each node (report
# interval 2 s), three services (replicated web x6, db x2 on pine64 boards, global mon)
# from a side-loaded busybox image, and an alert rule tuned to fire at once (memory
# available below 99.9 %). Then ci/cockpit/dashboard-test.mjs drives Debian's Chromium
# with playwright-core (pinned, ci/cockpit-npm.sh) inside node1's namespace:
#   login (wrong token refused; HttpOnly/Secure/SameSite=Strict cookie; no Web Storage),
#   cluster view placement == `docker service ps` on the engine, node view charts have
#   points and containers/facts (a busy container's row shows its CPU), a cookie POST without the CSRF header is 403, draining
#   the node in the page moves its tasks (page and engine agree), services replicas ==
#   `docker service ls`, scaling in the page changes the engine, pause / activate /
#   promote / demote / rebalance / remove pressed in the page each confirmed, audited and
#   seen in the engine (docker node/service inspect), events show an alert
#   firing and the admin actions newest first and filter by kind, every view fits a
#   390 px wide screen, logout ends the session, no CSP violation, no script error.
# Screenshots of every view (1400 px and 390 px) go to $DASHBOARD_SHOTS (default
# target/dashboard-shots), each named in the log. Run as root (the cluster tier does);
# binaries from target/debug. Env: ARMADA_DASHBOARD_KEEP=1 keeps the work folder.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=ci/lib/nodes.sh
. ci/lib/nodes.sh

BIN=${ARMADA_BIN_DIR:-$repo/target/debug}
WORK=/tmp/armada-dashboard-test
SHOTS=${DASHBOARD_SHOTS:-$repo/target/dashboard-shots}
MGR_IP=172.30.23.1
IMAGE=arm-ui/busybox:1
declare -A BOARD=([1]=rpi3 [2]=pine64 [3]=pine64)
declare -A ROLE=([1]=manager [2]=worker [3]=worker)

log() { printf '[dashboard %3ds] %s\n' "$(($(date +%s) - t_start))" "$*"; }
die() {
  log "FAIL $1"; shift
  local f
  for f in "$@"; do nodes_log_tail "$f" 30; done
  echo "dashboard: 0 passed, 1 failed"
  exit 1
}

[ "$(id -u)" -eq 0 ] || { echo "ci/dashboard-test.sh must run as root (network namespaces, dockerd)" >&2; exit 1; }
for t in dockerd docker nsenter ip jq curl openssl chromium node npm; do
  command -v "$t" >/dev/null || { echo "dashboard: $t is missing: run ci/host-deps.sh" >&2; exit 1; }
done
cargo build --locked -q -p armada -p armada-agent -p armada-manager || exit 1
npm_dir=$(bash ci/cockpit-npm.sh) || { echo "dashboard: ci/cockpit-npm.sh failed" >&2; exit 1; }
t_start=$(date +%s) # after the builds: the tier has built them already

cleanup() {
  nodes_teardown
  if [ "${ARMADA_DASHBOARD_KEEP:-0}" = 1 ]; then log "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
nodes_init arm-ui 172.30.23 "$WORK" || exit 1
nodes_teardown # what a crashed earlier run left
rm -rf "$WORK"
nodes_init arm-ui 172.30.23 "$WORK" || exit 1
trap cleanup EXIT
trap 'exit 130' INT TERM

admin_token() { grep -v '^#' "$WORK/cluster/admin-token" | grep -m1 .; }
api() { # PATH [curl args]: the API as the operator, from node1's namespace
  local p=$1; shift
  nodes_in 1 curl -sS --max-time 10 --cacert "$WORK/cluster/ca.pem" \
    -H "Authorization: Bearer $(admin_token)" "$@" "https://$MGR_IP:7443$p"
}
# shellcheck source=ci/lib/wait.sh
. ci/lib/wait.sh

log "three dockerd in network namespaces"
nodes_setup_hub || die "hub namespace"
for n in 1 2 3; do nodes_add_node "$n" || die "namespace of node $n"; done
for n in 1 2 3; do nodes_start_dockerd "$n" "ui-node$n"; done
for n in 1 2 3; do nodes_wait_dockerd "$n" 60 || die "dockerd of node $n" "$(nodes_dir "$n")/dockerd.log"; done
for n in 1 2 3; do nodes_import_busybox "$n" "$IMAGE" || die "docker import on node $n"; done

"$BIN/armada" -q cluster init "$WORK/cluster" --san "$MGR_IP" || die "armada cluster init"
boot_token=$(grep -v '^#' "$WORK/cluster/token" | grep -m1 .)
printf '%s\n' "# manager.toml of ci/dashboard-test.sh: one rule that fires at once, for the events view" \
  '[alerts]' 'interval = "2s"' '' '[alerts.rules.memory_low]' 'threshold = 0.999' 'for = "0s"' >"$WORK/manager.toml"
nodes_bg_in 1 "$WORK/manager.log" "$BIN/armada-manager" serve --cluster-dir "$WORK/cluster" \
  --state-dir "$WORK/manager-state" --listen "$MGR_IP:7443" --docker-host "$(nodes_sock 1)" \
  --swarm-advertise-addr "$MGR_IP" --report-interval 2 --config "$WORK/manager.toml"
wait_until 30 api /v1/health -f || die "manager answers /v1/health" "$WORK/manager.log"

log "an agent on each node"
for n in 1 2 3; do
  r="$WORK/node$n/root"
  mkdir -p "$r/etc"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$r/etc/machine-id"
  echo "ui-node$n" >"$r/etc/hostname"
  ln -sfn /proc "$r/proc"
  ln -sfn /sys "$r/sys"
  printf '%s\n' "hostname = \"ui-node$n\"" "role = \"${ROLE[$n]}\"" "board = \"${BOARD[$n]}\"" '' \
    '[manager]' "address = \"$MGR_IP\"" "token = \"$boot_token\"" '' '[labels]' "zone = \"shelf-$n\"" \
    '' '[agent]' "cgroup_parent = \"$(nodes_cgroup_parent "$n")\"" >"$WORK/node$n/armada.toml"
  nodes_bg_in "$n" "$WORK/node$n/agent.log" "$BIN/armada-agent" run --config "$WORK/node$n/armada.toml" \
    --state-dir "$WORK/node$n/state" --docker-host "$(nodes_sock "$n")" --root "$r"
done
three_ready() {
  [ "$(nodes_docker 1 node ls --format '{{.Status}}' | grep -c Ready)" = 3 ] &&
    [ "$(api /v1/nodes -f | jq '[.[] | select(.swarm_node_id != null and .last_report_ms != null)] | length')" = 3 ]
}
wait_until 90 three_ready || die "3 nodes registered, joined and reporting" "$WORK/manager.log" "$WORK/node2/agent.log"
log "3 nodes joined and reporting"

log "services: web x6, db x2 on pine64, mon global"
svc() { nodes_docker 1 service create --detach --no-resolve-image --endpoint-mode dnsrr "$@" "$IMAGE" sleep 3600 >/dev/null; }
svc --name web --replicas 6 || die "service web"
svc --name db --replicas 2 --constraint 'node.labels.armada.board==pine64' || die "service db"
svc --name mon --mode global || die "service mon"
all_running() {
  [ "$(nodes_docker 1 service ps -q --filter desired-state=running web db mon |
    xargs -r docker -H "$(nodes_sock 1)" inspect --format '{{.Status.State}}' | grep -c '^running$')" = 11 ]
}
wait_until 60 all_running || die "11 tasks running" "$WORK/node1/dockerd.log"
log "11 tasks running"
# A busy container (not a swarm task) on the node the browser opens, held to 0.2 CPU by
# its CFS quota: its row must show a CPU figure.
nodes_docker 2 run -d --name ui-busy --cpus 0.2 "$IMAGE" sh -c 'while :; do :; done' >/dev/null ||
  die "busy container on node 2" "$WORK/node2/dockerd.log"

spki=$(openssl x509 -in "$WORK/cluster/manager.pem" -pubkey -noout | openssl pkey -pubin -outform der |
  openssl dgst -sha256 -binary | base64)
rm -rf "$SHOTS"
t_browser=$(date +%s)
COCKPIT_NPM="$npm_dir" COCKPIT_URL="https://$MGR_IP:7443" COCKPIT_ADMIN_FILE="$WORK/cluster/admin-token" \
  COCKPIT_SPKI="$spki" COCKPIT_DOCKER="$(nodes_sock 1)" COCKPIT_OUT="$SHOTS" COCKPIT_DRAIN=ui-node2 COCKPIT_SCALE=web COCKPIT_BUSY=ui-busy COCKPIT_OTHER=ui-node3 \
  timeout 400 nsenter --net="/run/netns/$(nodes_ns 1)" node ci/cockpit/dashboard-test.mjs
rc=$?
[ "$rc" = 0 ] || nodes_log_tail "$WORK/manager.log" 30
log "done in $(($(date +%s) - t_start)) s (set-up $((t_browser - t_start)) s, browser $(($(date +%s) - t_browser)) s)"
exit "$rc"
