#!/usr/bin/env bash
# Benchmark of armada-manager on loopback (release build, no Docker engine).
#   ci/bench-manager.sh            the full run (~3 min): burst, paced ingest, max ingest
#   BENCH_QUICK=1 ci/bench-manager.sh   smaller and shorter
# Prints figures; it is not a pass/fail test. Everything runs on 127.0.0.1, every phase
# is bounded in count and time, and the manager it starts is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${BENCH_NODES:-10000}
burst=${BENCH_BURST:-1000}
secs=${BENCH_SECONDS:-30}
if [ -n "${BENCH_QUICK:-}" ]; then nodes=1000; burst=200; secs=5; fi

cargo build --release --locked -q -p armada -p armada-manager --bins
cargo build --release --locked -q -p armada-manager --example loadgen
bin=target/release
tmp=$(mktemp -d /tmp/armada-bench.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$bin/armada" -q cluster init "$tmp/cluster"
"$bin/armada-manager" serve --no-swarm --listen 127.0.0.1:0 --cluster-dir "$tmp/cluster" \
  --state-dir "$tmp/state" >"$tmp/out" 2>"$tmp/log" &
pid=$!
url=
for _ in $(seq 1 100); do
  url=$(sed -n 's/^armada-manager listening on //p' "$tmp/out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "[bench] the manager did not start:"; cat "$tmp/log"; exit 1; }
echo "[bench] armada-manager pid $pid at $url ($(nproc) cores; loadgen on 1 worker thread)"

lg() { "$bin/examples/loadgen" --url "$url" --cluster-dir "$tmp/cluster" "$@"; }
rss() {
  awk '/^VmRSS|^VmHWM/ { printf "%s %.0f MiB  ", $1, $2 / 1024 }' "/proc/$pid/status"
  echo "(manager, $1)"
}
# A loadgen phase; with --manager-pid it also prints the manager's own CPU time per
# stored snapshot over the measured window: on a shared 2-core machine the load
# generator takes CPU too, so that figure says what the manager alone could sustain.
phase() {
  timeout 600 "$bin/examples/loadgen" --url "$url" --cluster-dir "$tmp/cluster" --manager-pid "$pid" "$@"
}
manager_p99() {
  curl -s --cacert "$tmp/cluster/ca.pem" -H "Authorization: Bearer $(cat "$tmp/cluster/admin-token")" "$url/metrics?federate=false" |
    awk 'function p99(name, what) { for (i = 0; i < n[name]; i++) if (c[name, b[name, i]] >= 0.99 * total[name]) {
           printf "[bench] %s p99 <= %s s over %d\n", what, b[name, i], total[name]; return } }
         /_bucket\{/ { split($1, a, "_bucket"); name = a[1]; match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5)
                       b[name, n[name]++] = le; c[name, le] = $2 }
         /_count / { sub(/_count$/, "", $1); total[$1] = $2 }
         END { p99("armada_manager_ingest_latency_seconds", "manager-side ingest latency (receive to ack)")
               p99("armada_manager_store_commit_seconds", "store group commit (write + fdatasync)") }'
}

echo "== burst: $burst new nodes register at once (one new TLS connection each)"
timeout 300 "$bin/examples/loadgen" --url "$url" --cluster-dir "$tmp/cluster" burst --nodes "$burst"
rss "after the burst"

echo "== paced ingest: $nodes nodes, one report each every 10 s, ${secs} s"
phase ingest --nodes "$nodes" --interval 10 --duration "$secs"
rss "$nodes nodes at 10 s"
manager_p99

echo "== beyond: paced ingest at 1 s interval ($nodes nodes = $nodes reports/s target), ${secs} s"
phase ingest --nodes "$nodes" --interval 1 --duration "$secs"
rss "$nodes nodes at 1 s"

echo "== beyond: as fast as acknowledged, 1 snapshot per request, 64 in flight, $((secs / 2)) s"
phase max --nodes "$nodes" --concurrency 64 --batch 1 --duration $((secs / 2))
echo "== beyond: as fast as acknowledged, 10 snapshots per request (backlog delivery), 64 in flight, $((secs / 2)) s"
phase max --nodes "$nodes" --concurrency 64 --batch 10 --duration $((secs / 2))
rss "end"
manager_p99
echo "== idle keep-alive connections: 5000 (agents that keep their connection open)"
r0=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
timeout 120 "$bin/examples/loadgen" --url "$url" --cluster-dir "$tmp/cluster" idle --connections 5000 --hold 6 &
lg=$!
sleep 5
for _ in $(seq 1 30); do [ "$(ls "/proc/$pid/fd" | wc -l)" -gt 5000 ] && break; sleep 1; done
r1=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
wait "$lg" || true
echo "[bench] 5000 idle TLS connections: manager RSS +$(((r1 - r0) / 1024)) MiB = $(((r1 - r0) / 5000)) KiB per connection"

t0=$(date +%s.%N)
bytes=$(curl -s --cacert "$tmp/cluster/ca.pem" -H "Authorization: Bearer $(cat "$tmp/cluster/admin-token")" "$url/metrics" | wc -c)
echo "[bench] full /metrics (federation of every node): $((bytes / 1048576)) MiB in $(echo "$(date +%s.%N) - $t0" | bc) s"
rss "after one full federation scrape"
du -sh "$tmp/state" | awk '{ print "[bench] store size " $1 }'

t0=$(date +%s.%N)
kill -TERM "$pid"
wait "$pid" && code=0 || code=$?
echo "[bench] SIGTERM: exit code $code after $(echo "$(date +%s.%N) - $t0" | bc) s (includes the shutdown checkpoint)"
pid=
