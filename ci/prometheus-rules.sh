#!/usr/bin/env bash
# deploy/prometheus/armada-rules.yml: `promtool check rules` and its unit tests
# (`promtool test rules` on series shaped like the manager's federation output).
# About 1 s. promtool comes from the `prometheus` Debian package (ci/host-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
if ! command -v promtool >/dev/null; then
  if [ "${CI:-}" = true ]; then
    echo "prometheus-rules: promtool is missing: run ci/host-deps.sh" >&2
    exit 1
  fi
  echo "prometheus-rules: SKIPPED (promtool missing: run ci/host-deps.sh)" >&2
  exit 0
fi
promtool check rules armada-rules.yml
promtool test rules armada-rules.test.yml
