#!/usr/bin/env bash
# Benchmark: armada-agent against Debian's prometheus-node-exporter on this machine, side
# by side in ONE run, with 20 and then 200 containers running in a private dockerd
# (its own data root, containerd namespace and cgroup parent, arm-mx-bench; one
# container burns CPU, one holds 200 MiB), then a churn of 1,000 container starts and
# stops while the agent collects. Prints figures beside the goals of issue 11; exits 1
# when a goal is missed (BENCH_NO_GOALS=1: print only).
#   flock /tmp/armada-bench.lock nice ci/bench-agent.sh   (BENCH_SKIP_CROSS=1 skips the aarch64 build)
# BENCH_PARTS="measure churn" (default both): the 20/200 comparison, the churn, or both.
# AGENT_B=/path/to/another/armada-agent: measured beside this tree's agent, same run,
# cycles interleaved A B A B (an A/B of a change; printed, not checked against goals).
# The load average is printed beside the figures: compare only figures of one run.
# Figures, for 20 and for 200 containers:
#   - agent CPU per full collection (host + every container + rendering the Prometheus
#     text), getrusage over cycles 2..N; node_exporter CPU per scrape (utime+stime from
#     /proc/PID/stat over SCRAPES curl scrapes). Goal: agent <= 1/10 of node_exporter.
#   - agent RSS after CYCLES (1,000) back-to-back collections, read at the last one
#     (collector, its open files and its render buffer alive). Goal: <= 8 MiB.
# The agent sees only the bench's own cgroup parent (see SCOPE).
# Churn: the agent collects every 100 ms while CHURN (1,000) containers are started and
# removed in batches; its open fds and RSS are sampled after each batch. Goal: flat
# (fds equal after the first batch; RSS grows by at most 512 KiB). The churn is bounded
# in time (CHURN_MAX_S, 1,800 s): a churn cut short is reported, and is a missed goal.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

CYCLES=${CYCLES:-1000}
SCRAPES=${SCRAPES:-100}
CHURN=${CHURN:-1000}
CHURN_MAX_S=${CHURN_MAX_S:-1800}
BENCH_PARTS=${BENCH_PARTS:-measure churn}
BATCH=20
NE_ADDR=127.0.0.1:19188

MD_NAME=arm-mx-bench
. ci/metrics-docker-env.sh
NE_PID=
AGENT_PID=
cleanup() {
  set +e
  if [ -n "$AGENT_PID" ]; then kill "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null; fi
  if [ -n "$NE_PID" ]; then kill "$NE_PID" 2>/dev/null; wait "$NE_PID" 2>/dev/null; fi
  md_teardown
}
trap cleanup EXIT

for tool in dockerd docker prometheus-node-exporter curl busybox; do
  command -v "$tool" >/dev/null || { echo "bench-agent: $tool is missing (ci/host-deps.sh installs it)" >&2; exit 1; }
done
# AGENT=/path/to/armada-agent measures that binary instead of building this tree's.
if [ -z "${AGENT:-}" ]; then
  cargo build -q --release -p armada-agent --locked
  AGENT=target/release/armada-agent
fi

md_start_dockerd
md_make_image

prometheus-node-exporter --web.listen-address="$NE_ADDR" --log.level=warn >"$MD_DIR/ne.log" 2>&1 &
NE_PID=$!
for _ in $(seq 1 40); do curl -fsS -o /dev/null "http://$NE_ADDR/metrics" 2>/dev/null && break; sleep 0.25; done
curl -fsS -o /dev/null "http://$NE_ADDR/metrics"   # warm-up scrape

# The agent sees only this bench's containers: it runs in a private mount namespace in
# which each cgroup hierarchy's root is bind-mounted from our cgroup parent. On a shared
# machine other jobs' containers would otherwise be collected too (and the count check
# below fails). unshare and sh exec in place, so the agent keeps the PID we sample.
SCOPE=(unshare -m --propagation private sh -ec '
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then mount --bind "/sys/fs/cgroup/$0" /sys/fs/cgroup
    else for h in /sys/fs/cgroup/*/"$0"; do mount --bind "$h" "${h%/*}"; done; fi
    exec "$@"' "$MD_NAME")
# (an array, not a function: `"${SCOPE[@]}" cmd &` makes $! the agent's own PID)

field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
# check EXPR: sets $g to met/MISSED and remembers a miss (no subshell, so it sticks).
missed=0
check() { if awk "BEGIN{ exit !($1) }"; then g=met; else g=MISSED; missed=1; fi; }
hz=$(getconf CLK_TCK)
ne_ticks() { awk '{print $14 + $15}' "/proc/$NE_PID/stat"; }

# One run of CYCLES collections: its `cycles=` summary (CPU per collection) plus, as
# live_rss_kib, the RSS the agent printed at its last collection, while the collector
# and its open files are alive (the summary's own rss_kib is read after they were
# dropped, when freed memory may hold the final print instead).
run_stats() { # binary
  local out
  out=$("${SCOPE[@]}" "$1" metrics --once --docker-host "$MD_SOCK" --cycles "$CYCLES" --stats --stats-every $((CYCLES - 1)) 2>&1 >/dev/null)
  echo "$(grep '^cycles=' <<<"$out") live_rss_kib=$(grep '^cycle=' <<<"$out" | tail -n 1 | sed -n 's/.*rss_kib=\([0-9]*\).*/\1/p')"
}

# One side-by-side measurement with N containers running; fills the row_* variables.
measure() { # label
  local n stats t0 t1 a_cpu=() a_rss=()
  n=$(md_docker ps -q | wc -l)
  # On a loaded machine a just-started container may not be in its cgroups yet: wait
  # (bounded) until one collection sees as many as the engine runs.
  for _ in $(seq 1 30); do
    stats=$("${SCOPE[@]}" "$AGENT" metrics --once --no-docker --stats 2>&1 >/dev/null | grep '^cycles=')
    [ "$(field containers "$stats")" -eq "$n" ] && break
    sleep 1; n=$(md_docker ps -q | wc -l)
  done
  local b_cpu=() b_rss=()
  if [ -n "${AGENT_B:-}" ]; then
    for _ in 1 2; do
      stats=$(run_stats "$AGENT")
      a_cpu+=("$(field cpu_ms_per_cycle "$stats")"); a_rss+=("$(field live_rss_kib "$stats")")
      stats=$(run_stats "$AGENT_B")
      b_cpu+=("$(field cpu_ms_per_cycle "$stats")"); b_rss+=("$(field live_rss_kib "$stats")")
    done
    md_log "$1: A/B (A = $AGENT, B = $AGENT_B): CPU ms A ${a_cpu[*]} B ${b_cpu[*]}; RSS KiB A ${a_rss[*]} B ${b_rss[*]} (load $(cut -d' ' -f1 /proc/loadavg))"
    ab_lines+=("$1: CPU ms/collection A ${a_cpu[*]} | B ${b_cpu[*]}; RSS KiB A ${a_rss[*]} | B ${b_rss[*]}; load $(cut -d' ' -f1 /proc/loadavg)")
  fi
  stats=$(run_stats "$AGENT")
  [ "$(field containers "$stats")" -eq "$n" ] || { echo "agent saw $(field containers "$stats") containers, $n are running" >&2; exit 1; }
  t0=$(ne_ticks)
  for _ in $(seq 1 "$SCRAPES"); do curl -fsS -o /dev/null "http://$NE_ADDR/metrics"; done
  t1=$(ne_ticks)
  row_n=$n
  row_a_cpu=$(field cpu_ms_per_cycle "$stats")
  row_a_rss=$(field live_rss_kib "$stats")
  row_ne_cpu=$(awk -v d=$((t1 - t0)) -v n="$SCRAPES" -v hz="$hz" 'BEGIN{printf "%.3f", d * 1000 / hz / n}')
  row_ne_rss=$(awk '/^VmRSS:/{print $2}' "/proc/$NE_PID/status")
  row_a_series=$("${SCOPE[@]}" "$AGENT" metrics --once --docker-host "$MD_SOCK" | grep -vc '^#')
  row_ne_series=$(curl -fsS "http://$NE_ADDR/metrics" | grep -vc '^#')
  row_load=$(cut -d' ' -f1 /proc/loadavg)
  md_log "$1: agent $row_a_cpu ms/collection, $row_a_rss KiB; node_exporter $row_ne_cpu ms/scrape (load $row_load)"
}

# Every engine call is bounded: a wedged engine ends the bench instead of hanging it.
start_idle() { # first last
  seq "$1" "$2" | xargs -P 4 -I{} timeout 120 docker -H "$MD_SOCK" run -d --name "md-idle-{}" --network none "$MD_IMAGE" busybox sleep 100000 >/dev/null
}
remove_idle() {
  timeout 120 docker -H "$MD_SOCK" ps -aq --filter name=md-idle- | xargs -r timeout 300 docker -H "$MD_SOCK" rm -f >/dev/null
}

rows=()
ab_lines=()
if [[ " $BENCH_PARTS " == *" measure "* ]]; then
# --- 20 containers ---------------------------------------------------------------
md_run_containers
sleep 2
measure "20 containers"
r20=("$row_n" "$row_a_cpu" "$row_ne_cpu" "$row_a_rss" "$row_ne_rss" "$row_a_series" "$row_ne_series" "$row_load")

# --- 200 containers --------------------------------------------------------------
start_idle 21 200
sleep 2
measure "200 containers"
r200=("$row_n" "$row_a_cpu" "$row_ne_cpu" "$row_a_rss" "$row_ne_rss" "$row_a_series" "$row_ne_series" "$row_load")
rows=(r20 r200)
remove_idle
fi

churned=0
if [[ " $BENCH_PARTS " == *" churn "* ]]; then
# --- churn: 1,000 starts and stops while the agent collects every 100 ms ----------
"${SCOPE[@]}" "$AGENT" metrics --once --docker-host "$MD_SOCK" --cycles 100000000 --interval-ms 100 --stats-every 5 \
  >/dev/null 2>"$MD_DIR/churn.log" &
AGENT_PID=$!
sample() { # prints "fds rss_kib" of the collecting agent
  echo "$(ls "/proc/$AGENT_PID/fd" | wc -l) $(awk '/^VmRSS:/{print $2}' "/proc/$AGENT_PID/status")"
}
sleep 3
batches=$((CHURN / BATCH))
churn_start=$(date +%s)
: >"$MD_DIR/churn.samples"
for b in $(seq 1 "$batches"); do
  if [ $(( $(date +%s) - churn_start )) -ge "$CHURN_MAX_S" ]; then
    md_log "churn stopped after $churned of $CHURN starts: over CHURN_MAX_S=${CHURN_MAX_S}s"
    break
  fi
  first=$(( (b - 1) * BATCH + 1000 ))
  start_idle "$first" $((first + BATCH - 1))
  sleep 0.5   # let the agent see them running
  remove_idle
  sleep 0.5   # and gone
  kill -0 "$AGENT_PID" 2>/dev/null || { echo "the collecting agent died; its log:" >&2; tail "$MD_DIR/churn.log" >&2; exit 1; }
  sample >>"$MD_DIR/churn.samples"
  churned=$((churned + BATCH))
  if [ $((b % 10)) -eq 0 ]; then md_log "churn: $churned starts, fds/rss $(tail -n 1 "$MD_DIR/churn.samples") (load $(cut -d' ' -f1 /proc/loadavg))"; fi
done
churn_seconds=$(( $(date +%s) - churn_start ))
churn_load=$(cut -d' ' -f1 /proc/loadavg)
read -r fds_first rss_first < <(head -n 1 "$MD_DIR/churn.samples")
read -r fds_last rss_last < <(tail -n 1 "$MD_DIR/churn.samples")
fds_max=$(awk 'BEGIN{m=0} {if ($1 > m) m = $1} END{print m}' "$MD_DIR/churn.samples")
rss_max=$(awk 'BEGIN{m=0} {if ($2 > m) m = $2} END{print m}' "$MD_DIR/churn.samples")
collected=$(grep -c '^cycle=' "$MD_DIR/churn.log" || true)
kill "$AGENT_PID" 2>/dev/null || true; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=
fi

# --- static aarch64 binary ----------------------------------------------------------
if [ "${BENCH_SKIP_CROSS:-0}" != 1 ]; then bash ci/cross-build.sh >&2; fi
aarch64_bytes=$(stat -c %s dist/aarch64/armada-agent 2>/dev/null || echo "n/a")

echo
echo "== armada-agent vs prometheus-node-exporter ($(nproc) CPUs, $(uname -r), one run)"
printf '%-46s %11s %11s %8s  %s\n' "" agent node_exp ratio goal
for row in "${rows[@]}"; do
  declare -n r=$row
  check "${r[1]} <= ${r[2]} / 10"
  printf '%-46s %11s %11s %8s  %s\n' "CPU ms per collection/scrape, ${r[0]} containers" "${r[1]}" "${r[2]}" \
    "$(ratio "${r[1]}" "${r[2]}")" "<= 1/10: $g"
  check "${r[3]} <= 8192"
  printf '%-46s %11s %11s %8s  %s\n' "RSS KiB after $CYCLES cycles, ${r[0]} containers" "${r[3]}" "${r[4]}" \
    "$(ratio "${r[3]}" "${r[4]}")" "<= 8 MiB: $g"
  printf '%-46s %11s %11s\n' "samples per scrape, ${r[0]} containers" "${r[5]}" "${r[6]}"
  printf '%-46s %11s\n' "load average (1 min) at the end of it" "${r[7]}"
done
if [ "${#ab_lines[@]}" -gt 0 ]; then
  echo
  echo "== A/B, same run (A = this tree's agent, B = $AGENT_B), two runs each, interleaved"
  printf '%s\n' "${ab_lines[@]}"
fi
if [[ " $BENCH_PARTS " == *" churn "* ]]; then
echo
echo "== churn: $churned of $CHURN container starts and stops in ${churn_seconds}s, agent collecting every 100 ms ($((collected * 5)) collections; load $churn_load at the end)"
printf '%-46s %11s %11s %11s  %s\n' "" first last max goal
check "$churned >= $CHURN"
printf '%-46s %11s %11s %11s  %s\n' "container starts and stops" "" "$churned" "" ">= $CHURN: $g"
check "$fds_last == $fds_first"
printf '%-46s %11s %11s %11s  %s\n' "open fds (sampled after each batch of $BATCH)" "$fds_first" "$fds_last" "$fds_max" "flat: $g"
check "$rss_last - $rss_first <= 512"
printf '%-46s %11s %11s %11s  %s\n' "RSS KiB" "$rss_first" "$rss_last" "$rss_max" "grows <= 512 KiB: $g"
fi
echo
printf '%-46s %11s\n' "static aarch64 binary bytes" "$aarch64_bytes"
printf '%-46s %11s\n' "x86_64 release binary bytes" "$(stat -c %s "$AGENT")"
if [ "$missed" -ne 0 ] && [ "${BENCH_NO_GOALS:-0}" != 1 ]; then exit 1; fi
