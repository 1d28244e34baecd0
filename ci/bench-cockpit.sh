#!/usr/bin/env bash
# Render benchmark of the cockpit (issue #13), not part of CI: armada-manager with its
# own real dockerd (network namespace arm-ui-node1, 172.30.23.1, the manager on that
# namespace's loopback, via ci/lib/nodes.sh:
# the same prefix and lock as ci/dashboard-test.sh, so the two never run at once) and
# a swarm of that one engine running BENCH_TASKS busybox tasks, fed by its simulation,
# manager/examples/loadgen `ingest` (N nodes register, then each reports every 5 s for
# BENCH_SECONDS: history points and containers per node). Then ci/cockpit/bench.mjs
# loads the page in Debian's Chromium (playwright-core) BENCH_RUNS+1 times per view (the
# first run only warms caches) and prints the median first paint of the cluster view
# (<= 1 s wanted) and of a node view (<= 500 ms wanted), measured by the page's own
# performance.now(). Run as root.
#   ci/bench-cockpit.sh                       1,000 nodes, debug build
#   BENCH_PROFILE=release ci/bench-cockpit.sh the same on a release build
# Env: BENCH_NODES (1000), BENCH_SECONDS (30), BENCH_RUNS (5), BENCH_TASKS (60). The
# simulated nodes are not in the swarm (their columns have no chips); the engine's own
# node holds every task. Teardown ends what it started by PID and removes the netns.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
nodes=${BENCH_NODES:-1000}
secs=${BENCH_SECONDS:-30}
runs=${BENCH_RUNS:-5}
profile=${BENCH_PROFILE:-debug}
flag=(); [ "$profile" = release ] && flag=(--release)

for t in chromium node npm openssl; do command -v "$t" >/dev/null || { echo "bench-cockpit: $t is missing (ci/host-deps.sh)" >&2; exit 1; }; done
cargo build "${flag[@]}" --locked -q -p armada -p armada-manager --bins
cargo build "${flag[@]}" --locked -q -p armada-manager --example loadgen
npm_dir=$(bash ci/cockpit-npm.sh)
bin=target/$profile

# shellcheck source=ci/lib/nodes.sh
. ci/lib/nodes.sh
[ "$(id -u)" -eq 0 ] || { echo "bench-cockpit: run as root (network namespace, dockerd)" >&2; exit 1; }
tasks=${BENCH_TASKS:-60}
tmp=/tmp/armada-bench-cockpit
exec 9>/tmp/armada-dashboard-test.lock
flock 9
nodes_init arm-ui 172.30.23 "$tmp"
nodes_teardown
rm -rf "$tmp"
nodes_init arm-ui 172.30.23 "$tmp"
trap 'nodes_teardown; rm -rf "$tmp"' EXIT
nodes_setup_hub
nodes_add_node 1
nodes_start_dockerd 1 ui-bench
nodes_wait_dockerd 1 60
nodes_import_busybox 1 arm-ui/busybox:1
ip=$(nodes_ip 1)
url="https://127.0.0.1:7443" # inside the namespace: its own loopback
"$bin/armada" -q cluster init "$tmp/cluster" --san "$ip"
nodes_bg_in 1 "$tmp/manager.log" "$PWD/$bin/armada-manager" serve --listen "127.0.0.1:7443" --cluster-dir "$tmp/cluster" \
  --state-dir "$tmp/state" --docker-host "$(nodes_sock 1)" --swarm-advertise-addr "$ip" \
  --register-per-minute 0 --report-interval 5
for _ in $(seq 1 60); do grep -q "swarm ready" "$tmp/manager.log" && break; sleep 0.5; done
grep -q "swarm ready" "$tmp/manager.log" || { tail -20 "$tmp/manager.log" >&2; echo "bench-cockpit: the manager did not start" >&2; exit 1; }
for s in web api cache; do
  nodes_docker 1 service create --detach --no-resolve-image --endpoint-mode dnsrr --name "$s" \
    --replicas $((tasks / 3)) arm-ui/busybox:1 sleep 3600 >/dev/null
done
echo "[bench-cockpit] manager ($profile) at $url with $tasks tasks; $nodes simulated nodes report every 5 s for $secs s"
nodes_in 1 "$bin/examples/loadgen" --url "$url" --cluster-dir "$tmp/cluster" \
  ingest --nodes "$nodes" --interval 5 --duration "$secs" | sed 's/^/[bench-cockpit] loadgen: /'
echo "[bench-cockpit] tasks running: $(nodes_docker 1 service ls --format '{{.Name}} {{.Replicas}}' | tr '\n' ' ')"

spki=$(openssl x509 -in "$tmp/cluster/manager.pem" -pubkey -noout | openssl pkey -pubin -outform der |
  openssl dgst -sha256 -binary | base64)
COCKPIT_NPM="$npm_dir" COCKPIT_URL="$url" COCKPIT_ADMIN_FILE="$tmp/cluster/admin-token" COCKPIT_SPKI="$spki" \
  BENCH_NODES="$nodes" BENCH_RUNS="$runs" timeout 300 nsenter --net="/run/netns/$(nodes_ns 1)" node ci/cockpit/bench.mjs |
  sed 's/^/[bench-cockpit] /'
