#!/usr/bin/env bash
# Render benchmark of the cockpit (issue #13), not part of CI: an armada-manager on
# 127.0.0.1 (no Docker engine) fed by its simulation, manager/examples/loadgen `ingest`
# (N nodes register, then each reports every 5 s for BENCH_SECONDS: history points and
# containers per node), then ci/cockpit/bench.mjs loads the page in Debian's Chromium
# (playwright-core) BENCH_RUNS+1 times per view (the first run only warms caches) and
# prints the median first paint of the cluster view (<= 1 s wanted) and of a node
# view (<= 500 ms wanted), as measured by the page's own performance.now().
#   ci/bench-cockpit.sh                       1,000 nodes, debug build
#   BENCH_PROFILE=release ci/bench-cockpit.sh the same on a release build
# Env: BENCH_NODES (1000), BENCH_SECONDS (30), BENCH_RUNS (5). The manager is stopped
# by its PID; its folder is removed. Without swarm there are no tasks: the cluster view
# draws N columns with their badges, no chips.
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

tmp=$(mktemp -d /tmp/armada-bench-cockpit.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
"$bin/armada" -q cluster init "$tmp/cluster"
"$bin/armada-manager" serve --no-swarm --listen 127.0.0.1:0 --cluster-dir "$tmp/cluster" \
  --state-dir "$tmp/state" --register-per-minute 0 --report-interval 5 >"$tmp/out" 2>"$tmp/log" &
pid=$!
url=
for _ in $(seq 1 100); do
  url=$(sed -n 's/^armada-manager listening on //p' "$tmp/out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { tail -20 "$tmp/log" >&2; echo "bench-cockpit: the manager did not start" >&2; exit 1; }
echo "[bench-cockpit] manager ($profile) at $url; $nodes simulated nodes report every 5 s for $secs s"
"$bin/examples/loadgen" --url "$url" --cluster-dir "$tmp/cluster" --manager-pid "$pid" \
  ingest --nodes "$nodes" --interval 5 --duration "$secs" | sed 's/^/[bench-cockpit] loadgen: /'

spki=$(openssl x509 -in "$tmp/cluster/manager.pem" -pubkey -noout | openssl pkey -pubin -outform der |
  openssl dgst -sha256 -binary | base64)
COCKPIT_NPM="$npm_dir" COCKPIT_URL="$url" COCKPIT_ADMIN_FILE="$tmp/cluster/admin-token" COCKPIT_SPKI="$spki" \
  BENCH_NODES="$nodes" BENCH_RUNS="$runs" timeout 300 node ci/cockpit/bench.mjs | sed 's/^/[bench-cockpit] /'
