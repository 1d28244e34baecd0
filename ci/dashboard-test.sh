#!/usr/bin/env bash
# The manager's dashboard in a real headless browser (Debian's Chromium), on loopback.
# Starts its own armada-manager (x86 debug build, no Docker engine) with a temporary
# cluster from `armada cluster init`, registers three nodes and posts a report for two
# of them with curl, then loads https://127.0.0.1:PORT/ in Chromium, which trusts only
# the manager's key (--ignore-certificate-errors-spki-list pins it) and gets the admin
# token through the URL fragment (never sent to the server). Checks the rendered DOM:
# a row per node, statuses, memory and temperature figures. Saves a screenshot to
# $DASHBOARD_SHOT (default target/dashboard.png). Run from anywhere; no root needed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[dashboard] %s\n' "$*"; }
fail() { printf '[dashboard] FAIL: %s\n' "$*" >&2; exit 1; }
command -v chromium >/dev/null || fail "chromium is missing (ci/host-deps.sh installs it)"

cargo build --locked -q -p armada -p armada-manager
bin=target/debug
work=$(mktemp -d /tmp/armada-dashboard.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/armada" -q cluster init "$work/cluster"
"$bin/armada-manager" serve --no-swarm --listen 127.0.0.1:0 --cluster-dir "$work/cluster" \
  --state-dir "$work/state" >"$work/out" 2>"$work/log" &
pid=$!
url=
for _ in $(seq 1 100); do
  url=$(sed -n 's/^armada-manager listening on //p' "$work/out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/log" >&2; fail "the manager did not start"; }
log "manager at $url"

token=$(grep -m1 '^armada1\.' "$work/cluster/token")
admin=$(cat "$work/cluster/admin-token")
api() { curl -sS --fail-with-body --max-time 10 --cacert "$work/cluster/ca.pem" "$@"; }

register() { # HOSTNAME BOARD -> credential
  api -H 'Content-Type: application/json' "$url/v1/register" --data @- <<JSON | sed -n 's/.*"credential":"\([^"]*\)".*/\1/p'
{"protocol":1,"token":"$token","labels":{"zone":"shelf-1"},
 "facts":{"hostname":"$1","board":"$2","role":"worker","machine_id":"mid-$1","arch":"aarch64",
          "kernel":"6.1.0","cpus":4,"memory_bytes":2147483648,"docker_version":"20.10.24","agent_version":"test"}}
JSON
}
report() { # CREDENTIAL HOSTNAME CELSIUS
  local now; now=$(($(date +%s) * 1000))
  api -H "Authorization: Bearer $1" -H 'Content-Type: application/json' "$url/v1/report" --data @- >/dev/null <<JSON
{"protocol":1,"dropped_total":0,"snapshots":[{"instance":"dash","seq":1,"collected_at_ms":$now,"hostname":"$2",
 "host":{"cpu":[{"cpu":null,"user":300,"nice":0,"system":100,"idle":600,"iowait":0,"irq":0,"softirq":0,"steal":0}],
         "memory":{"total_bytes":2147483648,"free_bytes":1073741824,"available_bytes":1610612736,
                   "buffers_bytes":0,"cached_bytes":0,"swap_total_bytes":0,"swap_free_bytes":0}},
 "containers":[{"id":"c1","name":"web.1","image":"nginx"},{"id":"c2","name":"web.2","image":"nginx"}],
 "health":{"thermal":[{"zone":"thermal_zone0","kind":"cpu-thermal","celsius":$3}]}}]}
JSON
}
c1=$(register pine-01 pine64); c2=$(register rpi-02 rpi3); register rpi-03 rpi3 >/dev/null
[ -n "$c1" ] && [ -n "$c2" ] || fail "registration through the API failed"
report "$c1" pine-01 47.5
report "$c2" rpi-02 61.0

# Pin the manager's public key: nothing but this manager's certificate is accepted.
spki=$(openssl x509 -in "$work/cluster/manager.pem" -pubkey -noout | openssl pkey -pubin -outform der |
  openssl dgst -sha256 -binary | base64)
chrome() {
  timeout 90 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/chrome-profile" --ignore-certificate-errors-spki-list="$spki" \
    --virtual-time-budget=10000 --window-size=1400,600 "$@" 2>>"$work/chrome.log"
}
chrome --dump-dom "$url/#token=$admin" >"$work/dom.html" || { tail -20 "$work/chrome.log" >&2; fail "chromium --dump-dom"; }

checks=0
expect() { # PATTERN WHAT
  if grep -q -- "$1" "$work/dom.html"; then checks=$((checks + 1)); log "ok: $2"
  else fail "$2: '$1' not in the rendered page (saved DOM: $(wc -c <"$work/dom.html") bytes)"; fi
}
expect 'data-node="n-' "node rows rendered from GET /v1/nodes"
[ "$(grep -o 'data-node="n-' "$work/dom.html" | wc -l)" -eq 3 ] || fail "three node rows"
expect '<b>pine-01</b>' "hostname pine-01"
expect '<b>rpi-03</b>' "hostname rpi-03 (registered, no report yet)"
expect 's-up">up<' "status up"
expect 's-registered">registered<' "status registered"
expect '47.5 °C' "temperature of pine-01"
expect '61.0 °C' "temperature of rpi-02"
expect '512.0 MiB / 2.0 GiB' "memory used / total"
expect 'zone=shelf-1' "operator labels"
expect '<b>3</b> nodes' "node count in the header"
expect 'data-pct="[0-9]*" style="width: ' "usage bars sized by the script under the page's Content-Security-Policy"
csp=$(api -o /dev/null -D - "$url/" | tr -d '\r' | sed -n 's/^content-security-policy: //Ip')
case "$csp" in
  *"script-src 'self'"*"frame-ancestors 'none'"*) checks=$((checks + 1)); log "ok: Content-Security-Policy: $csp" ;;
  *) fail "no strict Content-Security-Policy on / (got '$csp')" ;;
esac
case "$csp" in *unsafe-inline*|*unsafe-eval*) fail "the policy allows inline code: $csp" ;; esac
if grep -q 'id="login" class="hidden"' "$work/dom.html"; then checks=$((checks + 1)); log "ok: the token form is hidden once the token is accepted"
else fail "the token form is still shown"; fi

# A wrong token: the page asks for one again instead of showing data.
rm -rf "$work/chrome-profile"
chrome --dump-dom "$url/#token=wrong-token" >"$work/dom-wrong.html" || fail "chromium --dump-dom (wrong token)"
grep -q 'data-node="n-' "$work/dom-wrong.html" && fail "nodes shown with a wrong token"
grep -q 'The admin token was refused' "$work/dom-wrong.html" || fail "no refusal message with a wrong token"
checks=$((checks + 1)); log "ok: a wrong token shows the refusal and no data"

shot=${DASHBOARD_SHOT:-target/dashboard.png}
rm -rf "$work/chrome-profile"
chrome --screenshot="$work/shot.png" "$url/#token=$admin" >/dev/null || fail "chromium --screenshot"
mkdir -p "$(dirname "$shot")" && cp "$work/shot.png" "$shot"
log "screenshot: $shot"
log "passed: $checks checks"
