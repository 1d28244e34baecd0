#!/usr/bin/env bash
# Runs the static aarch64 binaries under user-mode qemu and checks they do real work.
set -euo pipefail
cd "$(dirname "$0")/.."
dist=dist/aarch64
run() { qemu-aarch64 "$@"; }   # static binaries: no -L sysroot needed

fail() { echo "[qemu-smoke] FAIL: $*" >&2; exit 1; }

for b in armada-agent armada-manager; do
  v=$(run "$dist/$b" --version) || fail "$b --version"
  echo "[qemu-smoke] $v"
done
# armada-manager under qemu: a temporary cluster folder made by the x86 `armada cluster
# init`, /v1/health over TLS on loopback (pinned to the cluster CA, admin token), 401
# without the token, and a clean exit (code 0) on SIGTERM.
cargo build --locked -q -p armada
smoke=$(mktemp -d /tmp/armada-qemu-smoke.XXXXXX)
mgr_pid=
smoke_cleanup() {
  if [ -n "$mgr_pid" ] && kill -0 "$mgr_pid" 2>/dev/null; then kill -KILL "$mgr_pid" 2>/dev/null || true; fi
  rm -rf "$smoke"
}
trap smoke_cleanup EXIT
target/debug/armada -q cluster init "$smoke/cluster" || fail "armada cluster init"
qemu-aarch64 "$dist/armada-manager" serve --no-swarm --listen 127.0.0.1:0 \
  --cluster-dir "$smoke/cluster" --state-dir "$smoke/state" >"$smoke/out" 2>"$smoke/log" &
mgr_pid=$!
url=
for _ in $(seq 1 300); do   # at most 30 s: TLS key loading is slow under emulation
  url=$(sed -n 's/^armada-manager listening on //p' "$smoke/out")
  [ -n "$url" ] && break
  kill -0 "$mgr_pid" 2>/dev/null || { cat "$smoke/log" >&2; fail "aarch64 armada-manager exited at start"; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$smoke/log" >&2; fail "aarch64 armada-manager did not listen within 30 s"; }
health=$(curl -sS --max-time 30 --cacert "$smoke/cluster/ca.pem" \
  -H "Authorization: Bearer $(cat "$smoke/cluster/admin-token")" "$url/v1/health") || fail "GET $url/v1/health"
[ "$health" = ok ] || fail "aarch64 armada-manager /v1/health answered '$health'"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 --cacert "$smoke/cluster/ca.pem" "$url/v1/health")
[ "$code" = 401 ] || fail "/v1/health without the admin token answered $code, not 401"
kill -TERM "$mgr_pid"
rc=0; wait "$mgr_pid" || rc=$?
mgr_pid=
[ "$rc" -eq 0 ] || { cat "$smoke/log" >&2; fail "aarch64 armada-manager exited with $rc on SIGTERM"; }
echo "[qemu-smoke] aarch64 armada-manager: /v1/health ok over TLS at $url, 401 without token, exit 0 on SIGTERM"
# armada-agent under qemu: one snapshot of this machine (no Docker engine asked), as
# Prometheus text that promtool accepts, and as JSON with the host's CPUs in it.
qemu-aarch64 "$dist/armada-agent" metrics --once --no-docker >"$smoke/agent.prom" 2>"$smoke/agent.log" \
  || { cat "$smoke/agent.log" >&2; fail "aarch64 armada-agent metrics --once"; }
grep -q '^armada_cpu_seconds_total{cpu="0",mode="user"} ' "$smoke/agent.prom" \
  || fail "no armada_cpu_seconds_total in the aarch64 agent's output"
grep -q '^armada_memory_available_bytes ' "$smoke/agent.prom" || fail "no armada_memory_available_bytes"
promtool check metrics <"$smoke/agent.prom" || fail "promtool complains about the aarch64 agent's output"
qemu-aarch64 "$dist/armada-agent" metrics --once --no-docker --json \
  | jq -e --argjson n "$(nproc)" '[.host.cpu[] | select(.cpu != null)] | length == $n' >/dev/null \
  || fail "the aarch64 agent's JSON snapshot lacks this machine's $(nproc) CPUs"
echo "[qemu-smoke] aarch64 armada-agent: metrics --once, $(grep -vc '^#' "$smoke/agent.prom") samples, promtool clean"
echo "[qemu-smoke] ok"
