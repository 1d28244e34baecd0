# Sourced by ci/cluster-metrics-test.sh and ci/bench-agent.sh: a private dockerd with
# 20 busybox containers (one burning CPU, one holding 200 MiB in a tmpfs), and its
# teardown. Set MD_NAME (folder /run/$MD_NAME, cgroup parent /$MD_NAME) before sourcing.
# Never touches the default Docker socket or data root; stops only the dockerd it started.

MD_NAME=${MD_NAME:-arm-mt}
MD_DIR=/run/$MD_NAME
MD_SOCK=unix://$MD_DIR/docker.sock
MD_PID=
MD_IMAGE=$MD_NAME/busybox:1
MD_CONTAINERS=20

md_log() { printf '[%s] %s\n' "$MD_NAME" "$*" >&2; }
md_docker() { docker -H "$MD_SOCK" "$@"; }

# Starts dockerd and waits (bounded) for it to answer.
md_start_dockerd() {
  # A dockerd left by an interrupted earlier run of ours (same pidfile) is stopped first.
  if [ -f "$MD_DIR/docker.pid" ]; then
    MD_PID=$(cat "$MD_DIR/docker.pid")
    if [ -n "$MD_PID" ] && grep -q "$MD_DIR" "/proc/$MD_PID/cmdline" 2>/dev/null; then
      md_log "stopping dockerd $MD_PID left by an earlier run"
      md_teardown
      set -e
    fi
    MD_PID=
  fi
  rm -rf "$MD_DIR"
  mkdir -p "$MD_DIR"
  printf '{"deprecated-key-path": "%s/key.json"}\n' "$MD_DIR" > "$MD_DIR/daemon.json"
  dockerd --config-file "$MD_DIR/daemon.json" \
    --data-root "$MD_DIR/data" --exec-root "$MD_DIR/exec" --pidfile "$MD_DIR/docker.pid" \
    -H "$MD_SOCK" --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
    --cgroup-parent="/$MD_NAME" --exec-opt native.cgroupdriver=cgroupfs \
    --containerd-namespace "$MD_NAME" --containerd-plugins-namespace "$MD_NAME-plugins" \
    --log-level=warn > "$MD_DIR/dockerd.log" 2>&1 &
  MD_PID=$!
  for _ in $(seq 1 60); do
    md_docker version >/dev/null 2>&1 && { md_log "dockerd $MD_PID up"; return 0; }
    kill -0 "$MD_PID" 2>/dev/null || break
    sleep 0.5
  done
  md_log "dockerd did not come up; its log:"
  tail -n 30 "$MD_DIR/dockerd.log" >&2
  return 1
}

# A one-file image: Debian's static busybox, imported from a tarball.
md_make_image() {
  local rootfs=$MD_DIR/rootfs
  mkdir -p "$rootfs/usr/bin" "$rootfs/bin" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc"
  install -m 0755 /usr/bin/busybox "$rootfs/usr/bin/busybox"
  ln -sf /usr/bin/busybox "$rootfs/bin/sh"
  tar -C "$rootfs" -c . | md_docker import - "$MD_IMAGE" >/dev/null
}

# 20 containers without network: md-burn spins, md-mem fills a 256 MiB tmpfs with
# 200 MiB (tmpfs pages are charged to the writer's memory cgroup), the rest sleep.
md_run_containers() {
  md_docker run -d --name md-burn --network none "$MD_IMAGE" busybox sh -c 'while :; do :; done' >/dev/null
  md_docker run -d --name md-mem --network none --tmpfs /big:size=256m "$MD_IMAGE" \
    busybox sh -c 'busybox dd if=/dev/zero of=/big/fill bs=1048576 count=200 2>/dev/null; exec busybox sleep 100000' >/dev/null
  local i
  for i in $(seq 3 "$MD_CONTAINERS"); do
    md_docker run -d --name "md-idle-$i" --network none "$MD_IMAGE" busybox sleep 100000 >/dev/null
  done
  local n
  n=$(md_docker ps -q | wc -l)
  [ "$n" -eq "$MD_CONTAINERS" ] || { md_log "expected $MD_CONTAINERS running containers, have $n"; return 1; }
  md_log "$n containers running"
}

# The cgroup folder of a container for one controller (v1) or its only folder (v2).
md_cgroup_dir() { # id controller
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    echo "/sys/fs/cgroup/$MD_NAME/$1"
  else
    echo "/sys/fs/cgroup/$2/$MD_NAME/$1"
  fi
}

# Removes our containers, stops our dockerd by PID, unmounts and removes what it left.
md_teardown() {
  set +e
  if [ -n "$MD_PID" ] && kill -0 "$MD_PID" 2>/dev/null; then
    md_docker ps -aq 2>/dev/null | xargs -r docker -H "$MD_SOCK" rm -f >/dev/null 2>&1
    kill "$MD_PID"
    for _ in $(seq 1 40); do kill -0 "$MD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$MD_PID" 2>/dev/null && kill -9 "$MD_PID"
    wait "$MD_PID" 2>/dev/null
  fi
  # Shims of our containerd namespace that outlived it (after a kill -9), by PID.
  local p
  for p in $(grep -la -- "-namespace.$MD_NAME.-id" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    kill "$p" 2>/dev/null
  done
  # Mounts under our folder, deepest first.
  awk -v d="$MD_DIR" '$2 ~ "^"d {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
  # Our cgroup parent in every hierarchy, children first.
  for h in /sys/fs/cgroup/*/"$MD_NAME" /sys/fs/cgroup/"$MD_NAME"; do
    [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rm -rf "$MD_DIR"
  return 0
}
