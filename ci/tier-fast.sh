#!/usr/bin/env bash
# Unit and in-process tests of every crate: no daemons, no network but loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked --no-fail-fast
