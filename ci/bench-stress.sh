#!/usr/bin/env bash
# The seed's stress test as a benchmark: STRESS_N (default 1000) containers started in
# sequence through the swarm, each publishing its own port in host mode (5000+i, as the
# seed's loop did; no routing mesh here), all kept running, then removed. Each create
# is sent when the last one returned; at most STRESS_WINDOW (default 1: the seed's loop,
# each started once the last runs) wait for their task to run at once. Three real
# dockerd in network namespaces this script creates (arm-st-node1..3 on 172.30.24.0/24
# behind their own bridge), armada-manager on node1 and an agent on every node (2 s
# report interval), each agent scoped to its own engine's --cgroup-parent. A sampler
# records, every interval: each agent's RSS, CPU time and open fds, the manager's
# container count per node, and the machine's MemAvailable; each engine's event stream
# gives its running count to the millisecond. It prints:
#   - total time, p50/p99 of one container's start (swarm's own timestamps: service
#     created -> task running);
#   - each agent's RSS, CPU per snapshot and open fds before, at peak and after;
#   - accuracy: the share of samples where the manager's count per node equals the
#     engine's at that moment, and at some moment within two intervals (target 100 %);
#   - memory the machine had left (MemAvailable) before, at its lowest and after.
# Checks (fail the run): every container reached running; one answers on its port;
# after removal every engine and the manager count 0; accuracy within two intervals
# >= 95 % (the target is 100 %: the figure says how close); each agent's fds within 8
# and RSS within 25 % + 2 MiB of its start; nothing left behind (namespaces, cgroups,
# mounts). Every wait is bounded; teardown (trap) ends by PID what it started, unmounts,
# deletes the namespaces and cgroups. The cluster tier runs STRESS_N=100 STRESS_WINDOW=4.
#
#   STRESS_N=100 ci/bench-stress.sh   (as root; binaries from target/debug)
# Env: ARMADA_BIN_DIR, ARMADA_STRESS_WORK (default /tmp/armada-stress-bench).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# shellcheck source=ci/lib/nodes.sh
. ci/lib/nodes.sh
# shellcheck source=ci/lib/skip.sh
. ci/lib/skip.sh

BIN=${ARMADA_BIN_DIR:-$repo/${CARGO_TARGET_DIR:-target}/debug}
WORK=${ARMADA_STRESS_WORK:-/tmp/armada-stress-bench}
N=${STRESS_N:-1000}
WINDOW=${STRESS_WINDOW:-1}
INTERVAL=2
MGR_IP=172.30.24.1
MGR=$MGR_IP:7443
IMAGE=arm-st/busybox:1
NODES=(1 2 3)

passed=0 failed=0
t_start=$(date +%s)
log() { printf '[stress %4ds] %s\n' "$(($(date +%s) - t_start))" "$*"; }
pass() { passed=$((passed + 1)); log "PASS $1"; }
fail() { failed=$((failed + 1)); log "FAIL $1"; shift; local f; for f in "$@"; do nodes_log_tail "$f" 25; done; }

if [ "$(id -u)" -ne 0 ]; then ci_required "needs root (network namespaces, dockerd)" || exit 1; exit 0; fi
for t in dockerd docker nsenter unshare ip jq curl busybox; do
  command -v "$t" >/dev/null || { ci_required "$t missing: run ci/host-deps.sh" || exit 1; exit 0; }
done
for b in armada armada-agent armada-manager; do
  [ -x "$BIN/$b" ] || { echo "stress: $BIN/$b is missing: build it first" >&2; exit 1; }
done

SAMPLER_PID=
cleanup() {
  log "teardown"
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null
  nodes_teardown
  rm -rf "$WORK"
}
nodes_init arm-st 172.30.24 "$WORK"
nodes_teardown
rm -rf "$WORK"
nodes_init arm-st 172.30.24 "$WORK"
trap cleanup EXIT
trap 'exit 130' INT TERM
# Host-mode published ports are set up with netfilter inside each node's namespace.
export NODES_DOCKERD_NETFILTER=1

WAIT_UNTIL_STEP=0.25
# shellcheck source=ci/lib/wait.sh
. ci/lib/wait.sh
admin_token() { grep -v '^#' "$WORK/cluster/admin-token" | grep -m1 .; }
boot_token() { grep -v '^#' "$WORK/cluster/token" | grep -m1 .; }
api() {
  local path=$1; shift
  nodes_in 1 curl -sS --max-time 10 --cacert "$WORK/cluster/ca.pem" \
    -H "Authorization: Bearer $(admin_token)" "$@" "https://$MGR$path"
}
d1() { nodes_docker 1 "$@"; }

# ---------------------------------------------------------------- set-up

nodes_setup_hub || exit 1
for n in "${NODES[@]}"; do nodes_add_node "$n" || exit 1; done
for n in "${NODES[@]}"; do nodes_start_dockerd "$n" "st-node$n"; done
for n in "${NODES[@]}"; do nodes_wait_dockerd "$n" 60 || exit 1; done
# busybox with httpd: each container serves its own port, like the seed's
# SimpleHTTPServer.
r="$WORK/bb"; mkdir -p "$r/bin" "$r/tmp" "$r/etc"
cp /bin/busybox "$r/bin/busybox"
for a in sh httpd sleep; do ln -sf busybox "$r/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' >"$r/etc/passwd"
tar -C "$r" -cf "$WORK/bb.tar" .
for n in "${NODES[@]}"; do
  nodes_docker "$n" import --change 'ENV PATH=/bin' "$WORK/bb.tar" "$IMAGE" >/dev/null || exit 1
done
"$BIN/armada" cluster init "$WORK/cluster" --san "$MGR_IP" >"$WORK/cluster-init.log" 2>&1 || { nodes_log_tail "$WORK/cluster-init.log"; exit 1; }
nodes_bg_in 1 "$WORK/manager.log" "$BIN/armada-manager" serve \
  --cluster-dir "$WORK/cluster" --state-dir "$WORK/manager-state" --listen 0.0.0.0:7443 \
  --docker-host "$(nodes_sock 1)" --swarm-advertise-addr "$MGR_IP" --report-interval "$INTERVAL"
wait_until 30 api /v1/health -f --max-time 2 || { fail "manager answers" "$WORK/manager.log"; exit 1; }
declare -A AGENT_PID
for n in "${NODES[@]}"; do
  rt="$WORK/node$n/root"; mkdir -p "$rt/etc"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$rt/etc/machine-id"
  echo "st-node$n" >"$rt/etc/hostname"
  ln -sfn /proc "$rt/proc"; ln -sfn /sys "$rt/sys"
  cat >"$WORK/node$n/armada.toml" <<EOT
hostname = "st-node$n"
role = "$([ "$n" = 1 ] && echo manager || echo worker)"
board = "pine64"

[manager]
address = "$MGR_IP"
token = "$(boot_token)"

[agent]
metrics_listen = "$(nodes_ip "$n"):9101"
cgroup_parent = "$(nodes_cgroup_parent "$n")"
EOT
  nodes_bg_in "$n" "$WORK/node$n/agent.log" "$BIN/armada-agent" run --config "$WORK/node$n/armada.toml" \
    --state-dir "$WORK/node$n/state" --docker-host "$(nodes_sock "$n")" --root "$rt"
  AGENT_PID[$n]=$NODES_LAST_PID
done
joined() {
  [ "$(d1 node ls --format '{{.Status}}' | grep -c Ready)" = 3 ] &&
    [ "$(api /v1/nodes -f | jq '[.[] | select(.swarm_node_id != null)] | length')" = 3 ]
}
wait_until 120 joined || { fail "3 nodes joined through armada" "$WORK/manager.log"; exit 1; }
declare -A NID
for n in "${NODES[@]}"; do NID[$n]=$(api /v1/nodes -f | jq -r --arg h "st-node$n" '.[] | select(.hostname == $h) | .node_id'); done
log "3 nodes joined; $N containers to start"

# ---------------------------------------------------------------- sampler

# One line per interval: t, then per node: agent rss_kb cpu_ticks fds snapshots
# manager_count and the time (ms) the manager was asked, then MemAvailable kB. The
# engines' own counts come from their event streams (below), to the millisecond.
sample() {
  local n pid line rss cpu fds snaps mgr at d
  line="$(date +%s)"
  for n in "${NODES[@]}"; do
    pid=${AGENT_PID[$n]}
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    cpu=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null)
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    at=$(($(date +%s%N) / 1000000))
    d=$(api "/v1/nodes/${NID[$n]}" -f 2>/dev/null)
    snaps=$(jq -r '.latest.seq // 0' <<<"$d" 2>/dev/null)
    # Every container the agent reported: with [agent] cgroup_parent set to its engine's
    # --cgroup-parent it sees its own engine's only, as on a board (this machine's
    # cgroup tree also holds every other test's engines).
    mgr=$(jq -r '.latest.containers | length' <<<"$d" 2>/dev/null)
    line+=" ${rss:-0} ${cpu:-0} $fds ${snaps:-0} ${mgr:-x} $at"
  done
  echo "$line $(awk '/^MemAvailable/ {print $2}' /proc/meminfo)"
}
sampler() {
  local i
  for ((i = 0; i < 20000; i++)); do
    sample >>"$WORK/samples.txt"
    [ -e "$WORK/sampler.stop" ] && return 0
    sleep "$INTERVAL"
  done
}
# Each engine's container starts and deaths, as it emits them (ns timestamps): its
# running count at any instant.
for n in "${NODES[@]}"; do
  nodes_bg "$WORK/events$n.txt" docker -H "$(nodes_sock "$n")" events --filter type=container \
    --filter event=start --filter event=die --format '{{.TimeNano}} {{.Action}}'
done
sample >"$WORK/samples.txt"
before=$(tail -1 "$WORK/samples.txt")
sampler &
SAMPLER_PID=$!

# ---------------------------------------------------------------- the seed's loop

# The manager engine's API, for the few calls that need JSON (one call for all tasks).
# 60 s: at 1,000 tasks and load ~100 one /tasks answer (MBs of JSON) took over 10 s.
d1_api() { nodes_in 1 curl -sS --max-time 60 --unix-socket "$WORK/node1/docker.sock" "http://engine$1"; }
# d1_api_to PATH FILE: the answer in FILE, up to 3 tries (the figures need it).
d1_api_to() {
  local i
  for ((i = 0; i < 3; i++)); do d1_api "$1" >"$2" 2>/dev/null && jq -e 'type == "array"' "$2" >/dev/null 2>&1 && return 0; done
  log "engine API $1 did not answer in 3 tries"
  return 1
}
# "running settled": tasks running, and tasks running or ended for good (failed,
# rejected, ...: with --restart-condition none a task that did not start stays so).
# A call that got no answer keeps the last counts (it used to read "0 0": nothing
# settled, so the 1,000 run's loop stalled and stopped at 990 under load ~100).
task_counts() {
  d1_api /tasks 2>/dev/null | jq -r '[.[] | .Status.State] |
    "\([.[] | select(. == "running")] | length) \([.[] | select(. == "running" or . == "failed" or . == "rejected" or . == "complete" or . == "shutdown" or . == "orphaned")] | length)"' 2>/dev/null |
    grep . || echo "$running $settled"
}
# The engines run without a default bridge: the services join an overlay network (its
# gateway bridge carries the host-mode ports); dnsrr because this kernel has no IPVS.
# Every task takes an address of it: 172.30.24.128/25 (122 tasks) up to 120 containers;
# beyond, a /22, 172.31.24.0/22, which exists only inside this script's namespaces (the
# overlay's own netns and the containers', behind the nodes' vxlan on 172.30.24.0/24).
overlay=172.30.24.128/25
[ "$N" -gt 120 ] && overlay=172.31.24.0/22
d1 network create --driver overlay --subnet "$overlay" st-net >/dev/null || { fail "overlay network st-net ($overlay)"; exit 1; }
# The seed ran `docker run` in sequence: each create is sent after the previous one
# returned, and at most WINDOW created services may be waiting for their task to run
# (1 = the seed's loop: each starts once the last runs). A container's start time is
# swarm's own: the service's CreatedAt to its task's timestamp of reaching running.
t0=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
created=0 running=0 settled=0 stalled_since=$(date +%s)
for ((i = 1; i <= N; i++)); do
  while [ $((created - settled)) -ge "$WINDOW" ]; do
    read -r r st <<<"$(task_counts)"
    running=$r
    if [ "$st" -gt "$settled" ]; then settled=$st; stalled_since=$(date +%s); continue; fi
    # Bounded: no task reached running for 180 s (3 unanswered calls).
    [ $(($(date +%s) - stalled_since)) -ge 180 ] && break 2
    sleep 0.1
  done
  port=$((5000 + i))
  if d1 service create --detach --quiet --no-resolve-image --name "st-$i" \
    --publish "mode=host,published=$port,target=$port" --restart-condition none \
    --network st-net --endpoint-mode dnsrr \
    "$IMAGE" httpd -f -p "$port" -h /tmp >/dev/null 2>>"$WORK/create.err"; then
    created=$((created + 1))
  else
    log "st-$i: service create failed"
  fi
  [ $((i % 50)) = 0 ] && log "$i created, $running running, $((settled - running)) ended without running"
done
all_settled() { read -r running settled <<<"$(task_counts)"; [ "$settled" -ge "$created" ]; }
wait_until 180 all_settled || log "only $settled of $created tasks settled 180 s after the last create"
started=$running
# Why any did not run, in swarm's words.
if [ "$started" -lt "$N" ]; then
  d1_api /tasks | jq -r '.[] | select(.Status.State != "running") | "\(.Status.State) \(.Status.Err // .Status.Message)"' |
    sort | uniq -c | sort -rn | head -5 >"$WORK/not-running.txt"
fi
t_total=$(($(date +%s) - t0))
# Swarm's own timestamps, for the start times (before the services are removed).
d1_api_to /services "$WORK/services.json"
d1_api_to /tasks "$WORK/tasks.json"
sleep $((INTERVAL * 3))
peak_line=$(tail -1 "$WORK/samples.txt")
[ "$started" = "$N" ] && pass "$N containers started in sequence through the swarm in ${t_total} s (window $WINDOW)" ||
  fail "only $started of $N containers reached running" "$WORK/create.err" "$WORK/not-running.txt"
# One of them answers on its own port (from node-local curl: host-mode publishing).
node_of_1=$(d1 service ps st-1 --format '{{.Node}}' | head -1)
n1=${node_of_1#st-node}
if nodes_in "$n1" curl -s -o /dev/null --max-time 5 "http://$(nodes_ip "$n1"):5001/"; then
  pass "st-1 answers on $(nodes_ip "$n1"):5001 (host-mode port)"
else
  fail "st-1 answers on its published port"
fi

log "removing the $N services"
t1=$(date +%s)
for ((i = 1; i <= N; i += 50)); do
  # shellcheck disable=SC2046
  d1 service rm $(seq -f 'st-%g' "$i" $((i + 49 > N ? N : i + 49))) >/dev/null 2>&1
done
# Under load a batch's call can fail (the 1,000 run at load ~100 kept 205 services): what
# is left is removed again, 50 at a time, at most 5 rounds.
for ((r = 0; r < 5; r++)); do
  left=$(d1 service ls -q --filter name=st- 2>/dev/null)
  [ -z "$left" ] && break
  log "$(wc -w <<<"$left") services still there: removing them again"
  xargs -n 50 docker -H "$(nodes_sock 1)" service rm <<<"$left" >/dev/null 2>&1
done
all_gone() {
  local n
  for n in "${NODES[@]}"; do [ "$(nodes_docker "$n" ps -aq | wc -l)" = 0 ] || return 1; done
}
rm_wait=$((N > 600 ? N / 2 : 300))
wait_until "$rm_wait" all_gone || fail "every container removed within $rm_wait s"
manager_zero() {
  local n
  for n in "${NODES[@]}"; do [ "$(api "/v1/nodes/${NID[$n]}" -f | jq '.latest.containers | length')" = 0 ] || return 1; done
}
wait_until 30 manager_zero && pass "removed in $(($(date +%s) - t1)) s; the manager counts 0 on every node" ||
  fail "the manager counts 0 containers after removal"
sleep $((INTERVAL * 2))
touch "$WORK/sampler.stop"
wait "$SAMPLER_PID" 2>/dev/null
SAMPLER_PID=
after=$(tail -1 "$WORK/samples.txt")

# ---------------------------------------------------------------- figures

echo
echo "stress: $N containers through a 3-node swarm, ${t_total} s to start them all (load at the start: $load_start; now: $(cut -d' ' -f1-3 /proc/loadavg))"
# Per service: task's running timestamp - service's CreatedAt, in ms (RFC 3339 with
# nanoseconds, UTC).
jq -r --slurpfile s "$WORK/services.json" '
  def ts: capture("^(?<s>[^.Z]+)(\\.(?<f>[0-9]+))?Z$") | (.s + "Z" | fromdateiso8601) + ((.f // "0") | "0." + . | tonumber);
  ($s[0] | map({key: .ID, value: (.CreatedAt | ts)}) | from_entries) as $created
  | .[] | select(.Status.State == "running" and $created[.ServiceID] != null)
  | ((.Status.Timestamp | ts) - $created[.ServiceID]) * 1000 | floor' "$WORK/tasks.json" >"$WORK/starts.txt" 2>"$WORK/starts.err"
sort -n "$WORK/starts.txt" | awk '{a[NR] = $1} END {
  if (NR == 0) exit
  p50 = a[int((NR - 1) * 0.50) + 1]; p99 = a[int((NR - 1) * 0.99) + 1]
  printf "start time per container (create -> running): p50 %d ms, p99 %d ms, max %d ms\n", p50, p99, a[NR]
}'
clk=$(getconf CLK_TCK)
echo "agent   rss MiB (before/peak/after)  cpu ms per snapshot  fds (before/peak/after)"
for n in "${NODES[@]}"; do
  k=$(((n - 1) * 6 + 2))
  awk -v k="$k" -v clk="$clk" -v b="$before" -v a="$after" -v n="$n" '
    { if ($k > rss) rss = $k; if ($(k + 2) > fds) fds = $(k + 2) }
    END {
      split(b, B, " "); split(a, A, " ")
      snaps = A[k + 3] - B[k + 3]; cpu = (A[k + 1] - B[k + 1]) * 1000 / clk
      printf "node%d   %5.1f / %5.1f / %5.1f          %6.2f (%d snapshots)   %d / %d / %d\n", n,
        B[k] / 1024, rss / 1024, A[k] / 1024, (snaps > 0 ? cpu / snaps : 0), snaps, B[k + 2], fds, A[k + 2]
    }' "$WORK/samples.txt"
done
# Accuracy: at each sample, the manager's count for a node equals the engine's running
# count at that moment (exact), or at some moment within two intervals of it (the
# agent collects every interval and delivers at once; a sample waits on the API too).
# The engine's count over time is its start/die events; counts move by one, so the
# values within a window are the range [min, max] of the count over it.
acc=$(awk -v nodes="${#NODES[@]}" -v win=$((INTERVAL * 2000)) -v work="$WORK" '
  BEGIN {
    for (j = 1; j <= nodes; j++) {
      f = work "/events" j ".txt"; c = 0; ne[j] = 0
      while ((getline l < f) > 0) {
        split(l, e, " "); if (e[2] != "start" && e[2] != "die") continue
        c += (e[2] == "start") ? 1 : -1
        ne[j]++; et[j, ne[j]] = e[1] / 1e6; ec[j, ne[j]] = c
      }
      close(f)
    }
  }
  function count_at(j, t,   i, c) { c = 0; for (i = 1; i <= ne[j] && et[j, i] <= t; i++) c = ec[j, i]; return c }
  {
    if (NR == 1) t0 = $(2 + 5)
    for (j = 1; j <= nodes; j++) {
      k = 2 + (j - 1) * 6; m = $(k + 4); t = $(k + 5)
      if (m == "x") { miss++; continue }
      tot++
      now = count_at(j, t); if (m == now) exact++
      lo = count_at(j, t - win); hi = lo
      for (i = 1; i <= ne[j]; i++) if (et[j, i] > t - win && et[j, i] <= t + win) {
        if (ec[j, i] < lo) lo = ec[j, i]; if (ec[j, i] > hi) hi = ec[j, i]
      }
      if (m >= lo && m <= hi) lag++
      else if (shown++ < 12) printf "  miss: node%d at %.1f s: manager %d, engine %d then, %d..%d within two intervals\n", j, (t - t0) / 1000, m, now, lo, hi > "/dev/stderr"
    }
  }
  END { printf "%d %d %d %d", tot, exact, lag, miss }' "$WORK/samples.txt")
read -r tot exact lag miss <<<"$acc"
echo "manager vs engine container count per node: $exact/$tot samples exact, $lag/$tot within two intervals ($miss unanswered)"
awk 'NR == 1 {b = $NF} {if (min == "" || $NF < min) min = $NF; l = $NF} END {
  printf "MemAvailable: %.0f MiB before, %.0f MiB at its lowest, %.0f MiB after\n", b / 1024, min / 1024, l / 1024}' "$WORK/samples.txt"
# Target: 100 % within two intervals. The check fails below 95 %: on a loaded 2-core
# machine a sample itself can take longer than an interval (the figure says how close).
if [ "$tot" -gt 0 ] && [ "$lag" = "$tot" ]; then
  pass "manager's count within two intervals of the engines' in every sample ($lag/$tot)"
elif [ "$tot" -gt 0 ] && [ $((lag * 100)) -ge $((tot * 95)) ]; then
  pass "manager's count within two intervals of the engines' in $lag/$tot samples (>= 95 %; target 100 % missed)"
else
  fail "manager's count within two intervals of the engines' ($lag/$tot samples, < 95 %)"
fi
# The agents are back near where they started: open fds within 8 of the start (the
# files of removed containers are closed), RSS within 25 % + 2 MiB of it (the allocator
# keeps some of what the peak used).
read -ra B <<<"$before"
read -ra A <<<"$after"
for n in "${NODES[@]}"; do
  k=$(((n - 1) * 6 + 1))
  rss_b=${B[$k]} rss_a=${A[$k]} fds_b=${B[$((k + 2))]} fds_a=${A[$((k + 2))]}
  if [ "$fds_a" -le $((fds_b + 8)) ] && [ "$rss_a" -le $((rss_b * 5 / 4 + 2048)) ]; then
    pass "node$n's agent back near its start: fds $fds_b -> $fds_a, RSS $rss_b -> $rss_a KiB"
  else
    fail "node$n's agent back near its start (fds $fds_b -> $fds_a: at most +8; RSS $rss_b -> $rss_a KiB: at most +25 % + 2 MiB)" "$WORK/node$n/agent.log"
  fi
done

# Nothing left behind: the overlay network goes, then the teardown, checked.
# Bounded: with containers still on it (a removal that failed) the call hung 5 min.
timeout 60 docker -H "$(nodes_sock 1)" network rm st-net >/dev/null 2>&1 || fail "overlay network st-net removed (within 60 s)"
touch "$WORK/sampler.stop"
nodes_teardown
left=$(nodes_own_netns; nodes_own_cgroups; awk -v w="$WORK/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo)
[ -z "$left" ] && pass "nothing left behind (namespaces, cgroups, mounts under $WORK)" ||
  fail "left behind after teardown: $(echo "$left" | head -5 | tr '\n' ' ')"
echo "stress: $passed passed, $failed failed ($(($(date +%s) - t_start))s)"
[ "$failed" -eq 0 ]
