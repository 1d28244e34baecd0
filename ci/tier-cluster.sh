#!/usr/bin/env bash
# Cluster tier: x86 debug builds of armada, armada-agent and armada-manager, then a real
# three-node Docker Swarm in network namespaces (ci/cluster-test.sh), then the checks
# on the same kind of set-up: ci/cluster-metrics-test.sh (per-container metrics against
# 20 real containers), ci/manager-swarm-test.sh (the manager against its own engine:
# swarm init, join tokens, labels), ci/readoption-test.sh (role escalation, label
# hijack, promote/demote, rotate-admin, re-adoption after the manager's state dir and
# then its swarm were lost) and ci/dashboard-test.sh (the dashboard in headless
# Chromium), then ci/alerts-test.sh (alerts delivered to a webhook: node down, manager
# restart, fixture under-voltage/temperature, restart loop), then ci/schemathesis-test.sh
# (schemathesis over the whole OpenAPI document against a manager with a real engine),
# then ci/resilience-test.sh (examples/ha-stack deployed from its stack file under
# steady load while a worker's engine, a worker's link and the database primary's board
# are lost), then ci/bench-stress.sh (the seed's stress: STRESS_N=100 containers
# through the swarm, up to STRESS_WINDOW=4 waiting to run at once; the manager's count
# against the engines', the agents' footprint, nothing left behind). Run as root.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/tier-cluster.sh must run as root (network namespaces, dockerd)" >&2
  exit 1
fi
cargo build --locked -p armada -p armada-agent -p armada-manager || { echo "cluster tier: build failed" >&2; exit 1; }

# The stress bench's size in this tier (by hand it defaults to the seed's 1,000, one
# at a time); 4 in flight keeps it within its ~150 s share of the tier.
export STRESS_N=${STRESS_N:-100} STRESS_WINDOW=${STRESS_WINDOW:-4}
rc=0
summary=()
for script in ci/cluster-test.sh ci/cluster-metrics-test.sh ci/manager-swarm-test.sh ci/readoption-test.sh ci/dashboard-test.sh ci/alerts-test.sh ci/schemathesis-test.sh ci/resilience-test.sh ci/bench-stress.sh; do
  echo "== $script"
  t0=$(date +%s)
  if bash "$script"; then
    status=passed
  else
    status=FAILED; rc=1
    echo "cluster tier: $script FAILED" >&2
  fi
  summary+=("$(printf '  %-30s %-7s %4ds' "$script" "$status" "$(( $(date +%s) - t0 ))")")
done
echo "== cluster tier, script by script:"
printf '%s\n' "${summary[@]}"
exit "$rc"
