#!/usr/bin/env bash
# Fresh machine to flashable image in one command (run as root on Debian 12 x86_64):
#   ci/build-image.sh                      # rpi3 worker image into out/
#   ci/build-image.sh --board pine64 --role worker --cluster cluster/
# Installs the host dependencies, cross-builds the static aarch64 agent and manager,
# builds the `armada` tool, then runs `armada build` with the arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/host-deps.sh --build
export PATH="$HOME/.cargo/bin:$PATH"
bash ci/cross-build.sh
cargo build --release --locked -p armada
args=("$@")
if ! printf '%s\n' "${args[@]+"${args[@]}"}" | grep -q -- '--board'; then
  args=(--board rpi3 "${args[@]+"${args[@]}"}")
fi
exec target/release/armada build "${args[@]}"
