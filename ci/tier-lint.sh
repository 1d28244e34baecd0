#!/usr/bin/env bash
# Formatting and clippy, warnings as errors; the GitHub workflows checked by actionlint;
# the Prometheus rules file checked and unit-tested by promtool.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash ci/actionlint.sh
bash ci/prometheus-rules.sh
