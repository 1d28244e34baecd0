# shellcheck shell=bash
# ci/lib/wait.sh: the tests' one polling helper, bounded in count and in time.
#
#   wait_until SECONDS CMD...   run CMD (output dropped) every $WAIT_UNTIL_STEP seconds
#                               (default 0.5) until it succeeds (returns 0) or SECONDS
#                               have passed (returns 1). The time bound holds whatever
#                               CMD itself takes (a curl with its own 10-s timeout), so
#                               a hung step can stretch one wait by one CMD at most.
wait_until() {
  local t=$1 i end step=${WAIT_UNTIL_STEP:-0.5} tries; shift
  end=$((SECONDS + t))
  # A step of 0.25 s or more: at most 4 tries a second.
  tries=$((t * 4 + 1))
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep "$step"
  done
  return 1
}
