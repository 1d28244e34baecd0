#!/usr/bin/env bash
# Benchmark: armada-agent against Debian's prometheus-node-exporter on this machine,
# side by side, with the same 20 containers running (one burning CPU, one holding
# 200 MiB). Prints figures; not a pass/fail test (goals are shown next to each).
#   ci/bench-agent.sh                 (BENCH_SKIP_CROSS=1 skips the aarch64 build)
# Figures:
#   - agent RSS after 1,000 back-to-back collections (host + 20 containers + rendering
#     the Prometheus text), against node_exporter's RSS after its scrapes;
#   - CPU time per collection (agent: getrusage over cycles 2..N; node_exporter:
#     utime+stime from /proc/PID/stat over N scrapes with curl), both including text
#     rendering; the agent's worst case (asking Docker for the list every cycle) too;
#   - size of the static aarch64 binary from ci/cross-build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

CYCLES=${CYCLES:-1000}
SCRAPES=${SCRAPES:-100}
NE_ADDR=127.0.0.1:19187

MD_NAME=arm-mb
. ci/metrics-docker-env.sh
NE_PID=
cleanup() {
  set +e
  if [ -n "$NE_PID" ]; then kill "$NE_PID" 2>/dev/null; wait "$NE_PID" 2>/dev/null; fi
  md_teardown
}
trap cleanup EXIT

cargo build -q --release -p armada-agent --locked
AGENT=target/release/armada-agent

md_start_dockerd
md_make_image
md_run_containers
sleep 2

# --- armada-agent -------------------------------------------------------------
stats=$("$AGENT" metrics --once --docker-host "$MD_SOCK" --cycles "$CYCLES" --stats 2>&1 >/dev/null | grep '^cycles=')
worst=$("$AGENT" metrics --once --docker-host "$MD_SOCK" --cycles 200 --list-every-cycle --stats 2>&1 >/dev/null | grep '^cycles=')
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
a_containers=$(field containers "$stats")
a_cpu_ms=$(field cpu_ms_per_cycle "$stats")
a_rss_kib=$(field rss_kib "$stats")
a_worst_ms=$(field cpu_ms_per_cycle "$worst")
[ "$a_containers" -eq "$MD_CONTAINERS" ] || { echo "agent saw $a_containers containers, expected $MD_CONTAINERS" >&2; exit 1; }

# --- node_exporter --------------------------------------------------------------
prometheus-node-exporter --web.listen-address="$NE_ADDR" --log.level=warn >"$MD_DIR/ne.log" 2>&1 &
NE_PID=$!
for _ in $(seq 1 40); do curl -fsS -o /dev/null "http://$NE_ADDR/metrics" 2>/dev/null && break; sleep 0.25; done
curl -fsS -o /dev/null "http://$NE_ADDR/metrics"   # warm-up scrape
ticks() { awk '{print $14 + $15}' "/proc/$NE_PID/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
for _ in $(seq 1 "$SCRAPES"); do curl -fsS -o /dev/null "http://$NE_ADDR/metrics"; done
t1=$(ticks)
ne_cpu_ms=$(awk -v d=$((t1 - t0)) -v n="$SCRAPES" -v hz="$hz" 'BEGIN{printf "%.3f", d * 1000 / hz / n}')
ne_rss_kib=$(awk '/^VmRSS:/{print $2}' "/proc/$NE_PID/status")
ne_series=$(curl -fsS "http://$NE_ADDR/metrics" | grep -vc '^#')
a_series=$("$AGENT" metrics --once --docker-host "$MD_SOCK" | grep -vc '^#')

# --- static aarch64 binary -------------------------------------------------------
if [ "${BENCH_SKIP_CROSS:-0}" != 1 ]; then bash ci/cross-build.sh >&2; fi
aarch64_bytes=$(stat -c %s dist/aarch64/armada-agent 2>/dev/null || echo "n/a")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
goal() { awk "BEGIN{ print ($1) ? \"met\" : \"MISSED\" }"; }
rss_ratio=$(ratio "$a_rss_kib" "$ne_rss_kib"); cpu_ratio=$(ratio "$a_cpu_ms" "$ne_cpu_ms")

echo
echo "== armada-agent vs prometheus-node-exporter ($(nproc) CPUs, $MD_CONTAINERS containers, $(uname -r))"
printf '%-44s %12s %12s %8s  %s\n' "" agent node_exp ratio goal
printf '%-44s %12s %12s %8s  %s\n' "RSS KiB (agent after $CYCLES cycles)" "$a_rss_kib" "$ne_rss_kib" "$rss_ratio" \
  "<= 8 MiB and <= 1/3: $(goal "$a_rss_kib <= 8192 && $rss_ratio <= 0.3334")"
printf '%-44s %12s %12s %8s  %s\n' "CPU ms per collection (cached names)" "$a_cpu_ms" "$ne_cpu_ms" "$cpu_ratio" \
  "<= 5 ms and <= 1/5: $(goal "$a_cpu_ms <= 5 && $cpu_ratio <= 0.2")"
printf '%-44s %12s %12s %8s\n' "CPU ms per collection (list call each cycle)" "$a_worst_ms" "$ne_cpu_ms" "$(ratio "$a_worst_ms" "$ne_cpu_ms")"
printf '%-44s %12s %12s\n' "samples per scrape" "$a_series" "$ne_series"
printf '%-44s %12s\n' "static aarch64 binary bytes" "$aarch64_bytes"
printf '%-44s %12s\n' "x86_64 release binary bytes" "$(stat -c %s "$AGENT")"
