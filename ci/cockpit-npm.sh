#!/usr/bin/env bash
# Installs the browser tests' npm packages (playwright-core only: it drives Debian's
# Chromium, it downloads no browser) from ci/cockpit/package-lock.json with `npm ci`
# into target/cockpit-npm/ (outside the source tree, re-used while the lockfile is
# unchanged). Prints the folder holding node_modules. Needs node and npm
# (ci/host-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${COCKPIT_NPM_DIR:-$PWD/target/cockpit-npm}
for t in node npm; do command -v "$t" >/dev/null || { echo "cockpit-npm: $t is missing (ci/host-deps.sh installs it)" >&2; exit 1; }; done
mkdir -p "$dest"
if ! cmp -s ci/cockpit/package-lock.json "$dest/package-lock.json" || [ ! -f "$dest/node_modules/playwright-core/package.json" ]; then
  cp ci/cockpit/package.json ci/cockpit/package-lock.json "$dest/"
  # --ignore-scripts: no install hook runs (playwright-core has none; nothing is fetched
  # besides the locked tarballs).
  (cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
fi
echo "$dest"
