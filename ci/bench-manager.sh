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
#   BENCH_SKIP_OLD=1                    without the old store's column (no build of it)
# Then each manager is stopped and started again on the state dir the phases left
# (N nodes): seconds from exec to serving, and RSS once serving.
# A manager that knows ARMADA_STORE_STATS logs its store writer's figures (group sizes,
# apply/rows/commit/checkpoint times) every BENCH_STORE_STATS seconds (default 10); they
# are printed after each column's phases.
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
skip_old=${BENCH_SKIP_OLD:-}
if [ -z "$skip_old" ]; then
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
fi
new_bin=target/release/armada-manager
old_bin=$old_tree/target/release/armada-manager
new_lg=target/release/examples/loadgen
old_lg=$old_tree/target/release/examples/loadgen

export ARMADA_STORE_STATS=${BENCH_STORE_STATS:-10}
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

# start LABEL BINARY: starts a manager on $tmp/state; sets pid, url and started_s
# (seconds from exec to its "listening" line, polled every 20 ms for at most 120 s).
start() {
  local label=$1 bin=$2 t0
  url=
  # 10,000 registrations from one address: the per-address rate limit (where the
  # binary has one) is off for the benchmark.
  local unlimited=()
  if "$bin" serve --help | grep -q -- --register-per-minute; then unlimited=(--register-per-minute 0); fi
  t0=$(date +%s.%N)
  "$bin" serve --no-swarm --listen 127.0.0.1:0 "${unlimited[@]}" --cluster-dir "$tmp/cluster" \
    --state-dir "$tmp/state" >"$tmp/out" 2>"$tmp/log" &
  pid=$!
  for _ in $(seq 1 6000); do
    url=$(sed -n 's/^armada-manager listening on //p' "$tmp/out")
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
  done
  started_s=$(printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc)")
  [ -n "$url" ] || { echo "[bench] $label manager did not start:"; cat "$tmp/log"; exit 1; }
}

# stop LABEL: SIGTERM, waits; sets stopped ("exit CODE in S s").
stop() {
  local t0 code=0
  t0=$(date +%s.%N)
  kill -TERM "$pid"
  wait "$pid" || code=$?
  stopped="exit $code in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s"
  pid=
}

# bench LABEL BINARY LOADGEN: every phase against one manager, figures into R[LABEL,...].
bench() {
  local label=$1 bin=$2 lg=$3 out
  R[$label,load]=$(cut -d' ' -f1 /proc/loadavg)
  rm -rf "$tmp/state"
  start "$label" "$bin"
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
  R[$label,mp99]=$(field manager_p99_le_ms "$tmp/phase")
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
  R[$label,scrape_mp99]=$(field manager_p99_le_ms "$tmp/phase")
  R[$label,health_p99]=$(field health_p99_ms "$tmp/phase")
  R[$label,scrapes]=$(field scrapes "$tmp/phase")
  R[$label,hwm2]=$(rss_mib VmHWM)
  R[$label,load]="${R[$label,load]} -> $(cut -d' ' -f1 /proc/loadavg)"
  R[$label,size]=$(du -sk "$tmp/state" | awk '{ printf "%.0f", $1 / 1024 }')

  stop
  R[$label,stop]=$stopped
  grep -E 'store (writer|checkpointer)' "$tmp/log" | sed "s/^/[$label] /" || true
  echo "-- start again on the state dir the phases left ($nodes nodes)"
  start "$label" "$bin"
  R[$label,start]=$started_s
  R[$label,start_rss]=$(rss_mib VmRSS)
  grep -m1 'integrity_check' "$tmp/log" || true
  stop
}

started=$(date +%s)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -z "$skip_old" ]; then bench old "$old_bin" "$old_lg"; fi
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
row "1-min load average, the column's start -> end of phases" load
row "paced 10 s: report p99 (ms; goal <= 50)" p99
row "paced 10 s: manager's own p99 bucket (ms, upper bound)" mp99
row "paced 10 s: manager RSS (MiB; goal <= 200)" rss
row "paced 10 s: bytes written to disk per acknowledged report" bpr
row "batched (10/request): reports/s (goal >= 20,000)" max
row "batched: bytes written per acknowledged report" maxbpr
row "batched: manager peak RSS (MiB)" hwm
row "during federation scrapes: report p99 (ms; goal <= 50)" scrape_p99
row "during federation scrapes: manager's own p99 bucket (ms)" scrape_mp99
row "during federation scrapes: /v1/health p99 (ms; <= 50)" health_p99
row "full /metrics scrapes completed in the window" scrapes
row "peak RSS after scrapes (MiB)" hwm2
row "state dir size (MiB)" size
row "SIGTERM" stop
row "start on the phases' state dir: s to serving" start
row "start on the phases' state dir: RSS serving (MiB)" start_rss
