# shellcheck shell=bash
# ci/lib/nodes.sh: "nodes" on one machine for tests: network namespaces joined by a
# bridge, each with its own real dockerd. Sourced by ci/cluster-test.sh; reusable by any
# test (the image boot test puts a qemu tap device on the same kind of bridge).
#
# Layout (P = $NODES_PREFIX, e.g. arm-cl; S = $NODES_SUBNET, e.g. 172.30.1):
#   netns P-hub    holds bridge P-br; not connected to the host's network at all
#   netns P-nodeN  eth0 = S.N/24 (a veth whose other end P-hN is on P-br), lo, and a
#                  default route on eth0 so engines can detect their address
#   $NODES_WORK/nodeN/  dockerd's data-root, exec-root, socket, pidfile, log, config
#
# Every process a test starts is recorded with nodes_track_pid and ended by PID at
# teardown; teardown also ends whatever still runs inside the namespaces and cgroups it
# created (containerd, shims, containers), unmounts what dockerd left under
# $NODES_WORK, deletes the namespaces and removes the cgroup folders.
#
# Functions:
#   nodes_init PREFIX SUBNET WORKDIR  set the globals, create WORKDIR; call first
#   nodes_setup_hub                   create P-hub and its bridge P-br
#   nodes_add_node N                  create P-nodeN, wire it to the bridge as S.N
#   nodes_add_tap NAME                a tap device on the bridge (for qemu -netdev tap)
#   nodes_hub_ip N                    give the bridge S.N/24 inside the hub namespace
#   nodes_start_dhcp FIRST LAST       dnsmasq on the bridge (DHCP only, no DNS) leasing
#                                     S.FIRST..S.LAST; needs nodes_hub_ip first; tracked
#                                     (leases in $NODES_WORK/dnsmasq.leases)
#   nodes_in N CMD...                 run CMD inside P-nodeN's network namespace
#   nodes_in_hub CMD...               run CMD inside the hub namespace
#   nodes_ip N                        print S.N
#   nodes_sock N                      print unix://.../docker.sock of node N
#   nodes_docker N ARGS...            the docker CLI against node N's engine
#   nodes_start_dockerd N [HOSTNAME]  start node N's dockerd (own roots, cgroup parent
#                                     /P-nodeN, no bridge/iptables, own engine key,
#                                     swarm tasks use local images without a pull);
#                                     its UTS hostname (the swarm node's) is HOSTNAME,
#                                     default P-nodeN: give the agent's armada.toml
#                                     hostname, as on a board, or the manager refuses
#                                     the swarm node as not the registration's own;
#                                     NODES_DOCKERD_NETFILTER=1 lets it set up
#                                     iptables and forwarding inside its own netns
#                                     (swarm's embedded DNS and host-mode ports need
#                                     them; nothing outside the namespace changes)
#   nodes_cgroup_parent N             print node N's engine's --cgroup-parent (/P-nodeN):
#                                     every agent's armada.toml sets [agent]
#                                     cgroup_parent to it, so that an agent reports its
#                                     own engine's containers only, as on a board, not
#                                     every engine's on this machine
#   nodes_wait_dockerd N [SECONDS]    wait until node N's engine answers (default 60)
#   nodes_dockerd_pid N               print node N's dockerd PID
#   nodes_kill_dockerd N [SIGNAL]     signal node N's dockerd (default TERM), wait for it
#                                     when TERM; with KILL its containerd is killed too
#   nodes_import_busybox N TAG        `docker import` a busybox-static image as TAG
#   nodes_track_pid PID               end PID at teardown
#   nodes_bg LOG CMD...               start CMD (a program, not a shell function) in the
#                                     background, log to LOG, track it; its PID is in
#                                     $NODES_LAST_PID
#   nodes_bg_in N LOG CMD...          the same inside P-nodeN (nsenter execs: same PID)
#   nodes_stop_pid PID [SECONDS]      TERM, wait (default 10 s), then KILL
#   nodes_teardown                    undo everything above (also what a crashed earlier
#                                     run with the same prefix left); safe to call twice
#   nodes_log_tail FILE [LINES]       print the last lines of a log, framed

NODES_PREFIX=${NODES_PREFIX:-}
NODES_SUBNET=${NODES_SUBNET:-}
NODES_WORK=${NODES_WORK:-}
NODES_LIST=()
NODES_LAST_PID=

nodes_log() { printf '[nodes] %s\n' "$*" >&2; }

nodes_init() {
  NODES_PREFIX=$1 NODES_SUBNET=$2 NODES_WORK=$3
  case "$NODES_SUBNET" in
    172.30.*) ;;
    *) echo "nodes_init: subnet $NODES_SUBNET is outside 172.30.0.0/16" >&2; return 1 ;;
  esac
  mkdir -p "$NODES_WORK"
  : >"$NODES_WORK/pids"
  mkdir -p /run/netns
}

nodes_hub_ns() { echo "$NODES_PREFIX-hub"; }
nodes_ns() { echo "$NODES_PREFIX-node$1"; }
nodes_ip() { echo "$NODES_SUBNET.$1"; }
nodes_dir() { echo "$NODES_WORK/node$1"; }
nodes_sock() { echo "unix://$NODES_WORK/node$1/docker.sock"; }
nodes_cgroup_parent() { echo "/$(nodes_ns "$1")"; }

nodes_in() { local n=$1; shift; nsenter --net="/run/netns/$(nodes_ns "$n")" "$@"; }
nodes_in_hub() { nsenter --net="/run/netns/$(nodes_hub_ns)" "$@"; }

nodes_setup_hub() {
  local hub br
  hub=$(nodes_hub_ns); br="$NODES_PREFIX-br"
  ip netns add "$hub"
  nodes_in_hub ip link set lo up
  nodes_in_hub ip link add "$br" type bridge
  nodes_in_hub ip link set "$br" up
}

nodes_add_node() {
  local n=$1 ns hub veth peer
  ns=$(nodes_ns "$n"); hub=$(nodes_hub_ns)
  veth="$NODES_PREFIX-v$n"; peer="$NODES_PREFIX-h$n"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name "$peer"
  ip link set "$veth" netns "$ns"
  ip link set "$peer" netns "$hub"
  nodes_in_hub ip link set "$peer" master "$NODES_PREFIX-br"
  nodes_in_hub ip link set "$peer" up
  nodes_in "$n" ip link set lo up
  nodes_in "$n" ip link set "$veth" name eth0
  nodes_in "$n" ip addr add "$(nodes_ip "$n")/24" dev eth0
  nodes_in "$n" ip link set eth0 up
  # Only the bridge is behind eth0: this route lets an engine find its own address and
  # leads nowhere else.
  nodes_in "$n" ip route add default dev eth0
  NODES_LIST+=("$n")
  mkdir -p "$(nodes_dir "$n")"
}

nodes_add_tap() {
  local tap=$1
  ip tuntap add dev "$tap" mode tap
  ip link set "$tap" netns "$(nodes_hub_ns)"
  nodes_in_hub ip link set "$tap" master "$NODES_PREFIX-br"
  nodes_in_hub ip link set "$tap" up
}

nodes_hub_ip() {
  nodes_in_hub ip addr add "$NODES_SUBNET.$1/24" dev "$NODES_PREFIX-br"
}

nodes_start_dhcp() {
  nodes_bg "$NODES_WORK/dnsmasq.log" nsenter --net="/run/netns/$(nodes_hub_ns)" dnsmasq \
    --keep-in-foreground --log-facility=- --conf-file=/dev/null --port=0 \
    --interface="$NODES_PREFIX-br" --bind-interfaces --pid-file= \
    --dhcp-range="$NODES_SUBNET.$1,$NODES_SUBNET.$2,255.255.255.0,1h" \
    --dhcp-leasefile="$NODES_WORK/dnsmasq.leases"
}

nodes_docker() { local n=$1; shift; docker -H "$(nodes_sock "$n")" "$@"; }

# A PID is recorded with its start time (clock ticks after boot, /proc/PID/stat field
# 22): the pair names one process for good, so teardown never signals another test's
# process that was given a PID of ours after ours ended.
nodes_track_pid() { echo "$1 $(nodes_pid_start "$1")" >>"$NODES_WORK/pids"; }

nodes_pid_start() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) } # after the command name, which may hold spaces and parentheses
  # shellcheck disable=SC2086 # split into the stat fields on purpose
  set -- $s
  echo "${20}"
}

# The tracked PIDs that are still the processes we started, newest first.
nodes_tracked_pids() {
  local pid st
  [ -f "$NODES_WORK/pids" ] || return 0
  tac "$NODES_WORK/pids" | while read -r pid st; do
    [ -n "$pid" ] && [ -n "$st" ] && [ "$(nodes_pid_start "$pid")" = "$st" ] && echo "$pid"
  done
  return 0
}

nodes_bg() {
  local log=$1; shift
  # A simple command put in the background is exec'd by bash's child: $! is its PID.
  # (A shell function would run in a subshell whose PID is not the program's.)
  "$@" >"$log" 2>&1 </dev/null &
  NODES_LAST_PID=$!
  # No "Killed" job notices when a test kills it on purpose; kill/wait by PID still work.
  disown "$NODES_LAST_PID" 2>/dev/null || true
  nodes_track_pid "$NODES_LAST_PID"
}

nodes_bg_in() {
  local n=$1 log=$2; shift 2
  nodes_bg "$log" nsenter --net="/run/netns/$(nodes_ns "$n")" "$@"
}

nodes_start_dockerd() {
  local n=$1 d ns host net='--iptables=false --ip-forward=false'
  d=$(nodes_dir "$n"); ns=$(nodes_ns "$n"); host=${2:-$ns}
  [ "${NODES_DOCKERD_NETFILTER:-0}" = 1 ] && net='--iptables=true --ip-forward=true'
  mkdir -p "$d/data" "$d/exec"
  # Each engine its own key, or they all share one engine ID and swarm mixes them up.
  printf '{"deprecated-key-path": "%s/key.json"}\n' "$d" >"$d/daemon.json"
  # DOCKER_SERVICE_PREFER_OFFLINE_IMAGE: swarm tasks use the local (imported) image
  # instead of first trying a registry pull that can only time out here (~20 s).
  nodes_bg "$d/dockerd.log" env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 \
    nsenter --net="/run/netns/$ns" unshare --uts sh -c \
    "hostname $host && exec dockerd --config-file '$d/daemon.json' --data-root '$d/data' \
      --exec-root '$d/exec' --pidfile '$d/dockerd.pid' -H 'unix://$d/docker.sock' \
      --bridge=none $net --ip-masq=false \
      --cgroup-parent=$(nodes_cgroup_parent "$n") --log-level=warn"
  # nsenter, unshare and sh all exec: the PID started is dockerd's.
  echo "$NODES_LAST_PID" >"$d/dockerd.started-pid"
}

nodes_dockerd_pid() { cat "$(nodes_dir "$1")/dockerd.started-pid" 2>/dev/null; }

nodes_wait_dockerd() {
  local n=$1 t=${2:-60} i pid
  pid=$(nodes_dockerd_pid "$n")
  for ((i = 0; i < t * 4; i++)); do
    if nodes_docker "$n" version --format '{{.Server.Version}}' >/dev/null 2>&1; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      nodes_log "dockerd of node $n exited"; nodes_log_tail "$(nodes_dir "$n")/dockerd.log" 30
      return 1
    fi
    sleep 0.25
  done
  nodes_log "dockerd of node $n did not answer within ${t}s"
  nodes_log_tail "$(nodes_dir "$n")/dockerd.log" 30
  return 1
}

# PIDs of the containerd that node N's dockerd started (it records its pidfile).
nodes_containerd_pids() {
  local d
  d=$(nodes_dir "$1")
  cat "$d/exec/containerd/containerd.pid" 2>/dev/null
}

nodes_kill_dockerd() {
  local n=$1 sig=${2:-TERM} pid c i
  pid=$(nodes_dockerd_pid "$n")
  [ -n "$pid" ] || return 0
  c=$(nodes_containerd_pids "$n")
  kill -"$sig" "$pid" 2>/dev/null || true
  if [ "$sig" = KILL ]; then
    # A real crash takes the engine's containerd with it; the containers' shims stay,
    # as they would on a board, and are ended at teardown.
    [ -n "$c" ] && kill -KILL "$c" 2>/dev/null
  fi
  for ((i = 0; i < 120; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  nodes_log "dockerd of node $n (pid $pid) still runs after 30 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

nodes_import_busybox() {
  local n=$1 tag=$2 tar="$NODES_WORK/busybox-rootfs.tar" r
  if [ ! -f "$tar" ]; then
    r="$NODES_WORK/busybox-rootfs"
    mkdir -p "$r/bin" "$r/tmp" "$r/proc" "$r/sys" "$r/etc" "$r/dev"
    cp /bin/busybox "$r/bin/busybox"
    for a in sh sleep cat echo ls ps top dd yes head true false wc grep sed env hostname seq; do
      ln -sf busybox "$r/bin/$a"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$r/etc/passwd"
    tar -C "$r" -cf "$tar" .
  fi
  nodes_docker "$n" import --change 'CMD ["sh"]' --change 'ENV PATH=/bin' "$tar" "$tag" >/dev/null
}

nodes_stop_pid() {
  local pid=$1 t=${2:-10} i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 4; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  kill -KILL "$pid" 2>/dev/null || true
}

nodes_log_tail() {
  local f=$1 n=${2:-40}
  echo "----- last $n lines of $f -----" >&2
  if [ -f "$f" ]; then tail -n "$n" "$f" >&2; else echo "(no such file)" >&2; fi
  echo "----- end of $f -----" >&2
}

# PIDs in a cgroup folder and everything below it.
nodes_cgroup_pids() {
  local dir=$1
  [ -d "$dir" ] || return 0
  find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null
}

nodes_teardown() {
  [ -n "$NODES_PREFIX" ] && [ -n "$NODES_WORK" ] || return 0
  local pid ns cg i alive
  # 1. what the test started, newest first: agents, manager, dockerds (TERM lets
  #    dockerd stop its containers and containerd).
  if [ -f "$NODES_WORK/pids" ]; then
    for pid in $(nodes_tracked_pids); do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 80; i++)); do
      alive=$(nodes_tracked_pids)
      [ -z "$alive" ] && break
      sleep 0.25
    done
    for pid in $(nodes_tracked_pids); do kill -KILL "$pid" 2>/dev/null || true; done
    : >"$NODES_WORK/pids"
  fi
  # 2. whatever still runs in our namespaces or cgroups (containerd, shims, containers
  #    of a dockerd that was SIGKILLed): all started by this test (or by an earlier run
  #    of it that died before its teardown).
  for ns in $(nodes_own_netns); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for cg in $(nodes_own_cgroups); do
    for pid in $(nodes_cgroup_pids "$cg"); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  sleep 0.5
  # 3. mounts dockerd and containerd left under the work folder, deepest first.
  if [ -d "$NODES_WORK" ]; then
    awk -v w="$NODES_WORK/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || nodes_log "could not unmount $m"
    done
  fi
  # 4. namespaces (their veths and taps go with them) and cgroup folders, deepest first.
  for ns in $(nodes_own_netns); do
    ip netns delete "$ns" 2>/dev/null || nodes_log "could not delete netns $ns"
  done
  for cg in $(nodes_own_cgroups); do
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ -d "$cg" ] && nodes_log "could not remove cgroup $cg"
  done
  NODES_LIST=()
  return 0
}

# Network namespaces and cgroup folders with our prefix.
nodes_own_netns() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NODES_PREFIX-(hub|node[0-9]+)\$" || true
}
nodes_own_cgroups() {
  local cg
  for cg in /sys/fs/cgroup/*/"$NODES_PREFIX"-node* /sys/fs/cgroup/"$NODES_PREFIX"-node*; do
    [ -d "$cg" ] && echo "$cg"
  done
  return 0
}
