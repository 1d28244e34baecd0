#!/usr/bin/env bash
# Cluster tier: x86 debug builds of armada, armada-agent and armada-manager, then a real
# three-node Docker Swarm in network namespaces (ci/cluster-test.sh), then the checks
# other parts add on the same kind of cluster when they are present:
# ci/cluster-metrics-test.sh (metrics) and ci/dashboard-test.sh (the dashboard in a
# headless browser). Run as root.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/tier-cluster.sh must run as root (network namespaces, dockerd)" >&2
  exit 1
fi
cargo build --locked -p armada -p armada-agent -p armada-manager || { echo "cluster tier: build failed" >&2; exit 1; }

rc=0
bash ci/cluster-test.sh || rc=1
for extra in ci/cluster-metrics-test.sh ci/dashboard-test.sh; do
  if [ -f "$extra" ]; then
    echo "== $extra"
    bash "$extra" || rc=1
  fi
done
exit "$rc"
