#!/usr/bin/env bash
# The whole armada test suite, set-up included. Run as root on Debian 12 x86_64.
#   ci/test.sh                 every tier, in order
#   ci/test.sh fast cluster    only these tiers
# Tiers: lint (fmt, clippy), fast (cargo test --workspace), cross (static aarch64 build +
# qemu-aarch64 smoke), cluster (real dockerd swarm in network namespaces), image (real
# mmdebstrap images + qemu-system boot-and-join). Each tier is ci/tier-NAME.sh and can be
# run alone; this script prints each tier's duration and a closing count.
set -uo pipefail
cd "$(dirname "$0")/.."

all_tiers=(lint fast cross cluster image)
tiers=("$@")
[ "${#tiers[@]}" -eq 0 ] && tiers=("${all_tiers[@]}")

for t in "${tiers[@]}"; do
  if [ ! -f "ci/tier-$t.sh" ]; then
    echo "unknown tier '$t' (no ci/tier-$t.sh); tiers are: ${all_tiers[*]}" >&2
    exit 2
  fi
done

start_all=$(date +%s)
bash ci/host-deps.sh || { echo "host dependencies could not be installed" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

passed=0; failed=0; report=()
for t in "${tiers[@]}"; do
  echo
  echo "=============== tier $t ==============="
  t0=$(date +%s)
  if bash "ci/tier-$t.sh"; then
    status=passed; passed=$((passed + 1))
  else
    status=FAILED; failed=$((failed + 1))
  fi
  dt=$(( $(date +%s) - t0 ))
  report+=("$(printf 'tier %-8s %-7s %4ds' "$t" "$status" "$dt")")
  echo "=============== tier $t $status in ${dt}s ==============="
done

echo
echo "== armada test suite: $(( $(date +%s) - start_all ))s in all"
printf '%s\n' "${report[@]}"
echo "tiers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
