#!/usr/bin/env bash
# Static aarch64 binaries in dist/aarch64/, checked, then run under qemu-aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/cross-build.sh
(cd dist/aarch64 && sha256sum -c SHA256SUMS)
bash ci/qemu-smoke.sh
