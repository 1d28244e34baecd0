# ci/lib/skip.sh: honest skips for shell tests (sourced). Same contract as
# imagebuilder/tests/support/skip.rs: under CI=true a missing tool, root or device is a
# failure; elsewhere a loud SKIP line, also appended to $ARMADA_SKIP_LOG for ci/test.sh.
#   ci_required "dnsmasq missing" || exit 1     # fails (returns 1) under CI, else skips (0)
ci_required() {
  if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then
    echo "FAIL (CI=true): $1: CI must have every tool (ci/host-deps.sh), root and devices" >&2
    return 1
  fi
  echo "********** SKIP ${0##*/}: $1 **********" >&2
  [ -n "${ARMADA_SKIP_LOG:-}" ] && echo "SKIP ${0##*/}: $1" >>"$ARMADA_SKIP_LOG"
  return 0
}
