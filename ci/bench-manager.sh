#!/usr/bin/env bash
# Benchmark of armada-manager on loopback (release builds, no Docker engine): the
# SQLite store of this tree against the log+checkpoint store it replaced (commit
# ecf04dd, built in a worktree at /tmp/armada-oldstore with its own target dir), the
# same phases and the same load generator against both, figures side by side:
#   - paced ingest: N nodes, one report each every 10 s: p99, RSS, disk bytes/report
#   - batched max rate: 10 snapshots per request, 64 in flight: reports/s, bytes/report
#   - paced ingest while full /metrics federation scrapes run back to back: p99 of
#     /v1/report and of /v1/health
#   ci/bench-manager.sh                 the full run (10,000 nodes, 30 s phases)
#   BENCH_QUICK=1 ci/bench-manager.sh   1,000 nodes, 5 s phases
#   BENCH_BASE_BIN=DIR/armada-manager BENCH_BASE_LOADGEN=DIR/loadgen ci/bench-manager.sh
#                                       a third column: another build of the SQLite store
#                                       (e.g. main's, to show what a change does)
# Prints figures; it is not a pass/fail test. Everything runs on 127.0.0.1, every phase
# is bounded in count and time, and the managers it starts are stopped by their PID.
# Bytes written are the manager's /proc/PID/io write_bytes over the phase (what reached
# the block layer or page cache for writing; the old store's 10-minute checkpoint does
# not fall in a phase: its cost is amortised over reports not measured here).
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${BENCH_NODES:-10000}
secs=${BENCH_SECONDS:-30}
if [ -n "${BENCH_QUICK:-}" ]; then nodes=1000; secs=5; fi
old_commit=${BENCH_OLD_COMMIT:-ecf04dd}
old_tree=/tmp/armada-oldstore

cargo build --release --locked -q -p armada -p armada-manager --bins
cargo build --release --locked -q -p armada-manager --example loadgen
if [ ! -d "$old_tree" ]; then git worktree add --detach "$old_tree" "$old_commit" >/dev/null; fi
# Each manager gets the load generator built against its own tree, so it sends snapshots
# of that tree's protocol crate (the snapshot type has grown since; the old manager
# refuses the new fields): for the old one, the first loadgen.rs with these phases
# (--scrape, summary lines) and still the old wire types (commit 5303a06), compiled in
# the old worktree.
# (less the optional re-adoption fields the old wire types lack).
git show "${BENCH_OLD_LOADGEN:-5303a06}:manager/examples/loadgen.rs" |
  sed -E '/^ +(engine_id|credential|swarm): None,$/d' >"$old_tree/manager/examples/loadgen.rs"
(cd "$old_tree" && cargo build --release --locked -q -p armada-manager --bins --example loadgen \
  --target-dir "$old_tree/target")
new_bin=target/release/armada-manager
old_bin=$old_tree/target/release/armada-manager
new_lg=target/release/examples/loadgen
old_lg=$old_tree/target/release/examples/loadgen

tmp=$(mktemp -d /tmp/armada-bench.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
target/release/armada -q cluster init "$tmp/cluster"
declare -A R

wbytes() { awk '/^write_bytes/ { print $2 }' "/proc/$pid/io"; }
rss_mib() { awk -v k="$1:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"; }
field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" "$2" | tail -1; }

# bench LABEL BINARY LOADGEN: every phase against one manager, figures into R[LABEL,...].
bench() {
  local label=$1 bin=$2 lg=$3 url= out
  rm -rf "$tmp/state"
  # 10,000 registrations from one address: the per-address rate limit (where the
  # binary has one) is off for the benchmark.
  local unlimited=()
  if "$bin" serve --help | grep -q -- --register-per-minute; then unlimited=(--register-per-minute 0); fi
  "$bin" serve --no-swarm --listen 127.0.0.1:0 "${unlimited[@]}" --cluster-dir "$tmp/cluster" \
    --state-dir "$tmp/state" >"$tmp/out" 2>"$tmp/log" &
  pid=$!
  for _ in $(seq 1 100); do
    url=$(sed -n 's/^armada-manager listening on //p' "$tmp/out")
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "[bench] $label manager did not start:"; cat "$tmp/log"; exit 1; }
  echo "== $label store: armada-manager pid $pid at $url"
  phase() {
    timeout 900 "$lg" --url "$url" --cluster-dir "$tmp/cluster" --manager-pid "$pid" "$@" | tee "$tmp/phase"
  }

  echo "-- paced ingest: $nodes nodes, one report each every 10 s, ${secs} s"
  phase ingest --nodes "$nodes" --interval 10 --duration 2 >/dev/null # registers the nodes
  local w0; w0=$(wbytes)
  phase ingest --nodes "$nodes" --interval 10 --duration "$secs"
  local w1; w1=$(wbytes)
  R[$label,p99]=$(field p99_ms "$tmp/phase")
  R[$label,rss]=$(rss_mib VmRSS)
  local acked; acked=$(field acked "$tmp/phase")
  R[$label,bpr]=$(( (w1 - w0) / (acked > 0 ? acked : 1) ))

  echo "-- batched max rate: 10 snapshots per request, 64 in flight, ${secs} s"
  w0=$(wbytes)
  phase max --nodes "$nodes" --concurrency 64 --batch 10 --duration "$secs"
  w1=$(wbytes)
  R[$label,max]=$(field reports_per_s "$tmp/phase")
  acked=$(field acked "$tmp/phase")
  R[$label,maxbpr]=$(( (w1 - w0) / (acked > 0 ? acked : 1) ))
  R[$label,hwm]=$(rss_mib VmHWM)

  echo "-- paced ingest while full federation scrapes run back to back, ${secs} s"
  phase ingest --nodes "$nodes" --interval 10 --duration "$secs" --scrape
  R[$label,scrape_p99]=$(field p99_ms "$tmp/phase")
  R[$label,health_p99]=$(field health_p99_ms "$tmp/phase")
  R[$label,scrapes]=$(field scrapes "$tmp/phase")
  R[$label,hwm2]=$(rss_mib VmHWM)
  R[$label,size]=$(du -sk "$tmp/state" | awk '{ printf "%.0f", $1 / 1024 }')

  local t0; t0=$(date +%s.%N)
  kill -TERM "$pid"
  local code=0
  wait "$pid" || code=$?
  R[$label,stop]="exit $code in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s"
  pid=
}

started=$(date +%s)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
bench old "$old_bin" "$old_lg"
base=${BENCH_BASE_BIN:-}
if [ -n "$base" ]; then bench base "$base" "${BENCH_BASE_LOADGEN:?BENCH_BASE_LOADGEN with BENCH_BASE_BIN}"; fi
bench new "$new_bin" "$new_lg"

row() {
  if [ -n "$base" ]; then
    printf '%-58s %18s %18s %18s\n' "$1" "${R[old,$2]:-?}" "${R[base,$2]:-?}" "${R[new,$2]:-?}"
  else
    printf '%-58s %18s %18s\n' "$1" "${R[old,$2]:-?}" "${R[new,$2]:-?}"
  fi
}
echo
echo "== old store ($old_commit: log + JSON checkpoint) vs new (SQLite, this tree), $nodes nodes, $(nproc) cores shared with the load generator"
echo "   load average at start $load0, at end $(cut -d' ' -f1-3 /proc/loadavg); bench took $(( $(date +%s) - started )) s"
if [ -n "$base" ]; then
  echo "   base: $base"
  printf '%-58s %18s %18s %18s\n' "figure" "old" "base" "new"
else
  printf '%-58s %18s %18s\n' "figure" "old" "new"
fi
row "paced 10 s: report p99 (ms; goal <= 50)" p99
row "paced 10 s: manager RSS (MiB; goal <= 200)" rss
row "paced 10 s: bytes written to disk per acknowledged report" bpr
row "batched (10/request): reports/s (goal >= 20,000)" max
row "batched: bytes written per acknowledged report" maxbpr
row "batched: manager peak RSS (MiB)" hwm
row "during federation scrapes: report p99 (ms; goal <= 50)" scrape_p99
row "during federation scrapes: /v1/health p99 (ms; <= 50)" health_p99
row "full /metrics scrapes completed in the window" scrapes
row "peak RSS after scrapes (MiB)" hwm2
row "state dir size (MiB)" size
row "SIGTERM" stop
