#!/usr/bin/env bash
# The whole armada test suite, set-up included. Run as root on Debian 12 x86_64.
#   ci/test.sh                 every tier, in order
#   ci/test.sh fast cluster    only these tiers
# Tiers: lint (fmt, clippy), fast (cargo test --workspace), cross (static aarch64 build +
# qemu-aarch64 smoke), cluster (real dockerd swarm in network namespaces), image (real
# mmdebstrap images + qemu-system boot-and-join). Each tier is ci/tier-NAME.sh and can be
# run alone; this script prints each tier's duration and a closing count.
# Skips: a test that lacks a tool, root or a device fails under CI=true; elsewhere it
# writes a SKIP line to $ARMADA_SKIP_LOG (imagebuilder/tests/support/skip.rs,
# ci/lib/skip.sh), and each tier's line here says how many it skipped.
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

skip_dir=$(mktemp -d /tmp/armada-skips.XXXXXX)
out_dir=$(mktemp -d /tmp/armada-tier-out.XXXXXX)
trap 'rm -rf "$skip_dir" "$out_dir"' EXIT
passed=0; failed=0; skipped_all=0; report=()
for t in "${tiers[@]}"; do
  echo
  echo "=============== tier $t ==============="
  t0=$(date +%s)
  export ARMADA_SKIP_LOG=$skip_dir/$t
  : >"$ARMADA_SKIP_LOG"
  # Each tier's output is also kept, so a failure's own lines can be printed again at the
  # very end (a CI log is often read from its tail).
  if bash "ci/tier-$t.sh" 2>&1 | tee "$out_dir/$t.out"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    status=passed; passed=$((passed + 1))
  else
    status=FAILED; failed=$((failed + 1))
  fi
  dt=$(( $(date +%s) - t0 ))
  # A test binary run twice (unit tests included by #[path]) logs the same skip twice.
  nskip=$(sort -u "$ARMADA_SKIP_LOG" | grep -c . || true)
  skipped_all=$((skipped_all + nskip))
  report+=("$(printf 'tier %-8s %-7s %4ds  %d skipped' "$t" "$status" "$dt" "$nskip")")
  [ "$nskip" -gt 0 ] && sort -u "$ARMADA_SKIP_LOG" | sed 's/^/  /'
  echo "=============== tier $t $status in ${dt}s, $nskip skipped ==============="
done

echo
echo "== armada test suite: $(( $(date +%s) - start_all ))s in all"
printf '%s\n' "${report[@]}"
if [ "$skipped_all" -gt 0 ]; then
  echo "skipped tests ($skipped_all; under CI=true a missing tool, root or device fails instead):"
  cat "$skip_dir"/* | sort -u | sed 's/^/  /'
fi
for t in "${tiers[@]}"; do
  grep -q "^tier $t .*FAILED" <(printf '%s\n' "${report[@]}") || continue
  echo
  echo "== why tier $t failed (its FAIL/error lines, then its last 25 lines):"
  grep -E 'FAIL|panicked|^error|^failures:|^    [a-z_:]+$|timed out|not ok' "$out_dir/$t.out" | grep -v 'passed\|PASS' | tail -n 40 | sed 's/^/  /'
  echo "  ..."
  tail -n 25 "$out_dir/$t.out" | sed 's/^/  /'
done
echo "tiers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
