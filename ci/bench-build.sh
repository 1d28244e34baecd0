#!/usr/bin/env bash
# Image build benchmark: prints figures, asserts nothing.
#   ci/bench-build.sh            cold build (empty cache: packages downloaded, base made)
#                                + warm rebuild + second board + sizes + xz throughput
#   ci/bench-build.sh --warm     skip the cold build (reuse the bench cache)
# Cache: ${ARMADA_BENCH_CACHE:-/var/tmp/armada-bench/cache}; outputs under /var/tmp/armada-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
root=/var/tmp/armada-bench
cache=${ARMADA_BENCH_CACHE:-$root/cache}
level=${ARMADA_BENCH_XZ_LEVEL:-1}
warm_only=0; [ "${1:-}" = "--warm" ] && warm_only=1

[ -x dist/aarch64/armada-agent ] && [ -x dist/aarch64/armada-manager ] || bash ci/cross-build.sh
cargo build --release --locked -p armada >/dev/null 2>&1
armada=target/release/armada
v=$("$armada" --version | awk '{print $2}')
mkdir -p "$root"
[ -d "$root/cluster" ] || "$armada" cluster init "$root/cluster" -q

run() { # name board out
  local s e
  s=$(date +%s.%N)
  "$armada" build --board "$2" --cluster "$root/cluster" --cache-dir "$cache" --out "$3" --keep-raw \
    --xz-level "$level" > "$root/$1.log" 2>&1
  e=$(date +%s.%N)
  printf '%-34s %7.1f s\n' "$1" "$(echo "$e - $s" | bc)"
}

echo "== armada build benchmark ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), xz level $level)"
if [ "$warm_only" = 0 ]; then
  rm -rf "$cache" "$root/out-cold"
  run "cold build rpi3 (no cache)" rpi3 "$root/out-cold"
  grep -h 'mmdebstrap.*done in' "$root/cold build rpi3 (no cache).log" | sed 's/^\[armada\] /  /'
fi
rm -rf "$root/out-warm" "$root/out-pine"
run "warm rebuild rpi3" rpi3 "$root/out-warm"
grep -h 'done in\|bytes in' "$root/warm rebuild rpi3.log" | sed 's/^\[armada\] /  /'
run "second board pine64 (shared base)" pine64 "$root/out-pine"

echo "== sizes"
for m in "$root"/out-warm/*.manifest.json "$root"/out-pine/*.manifest.json; do
  jq -r '"\(.board)-\(.role): raw \(.image.raw_size/1048576|floor) MiB, mapped \(.image.mapped_bytes/1048576|floor) MiB, \(.image.file) \(.image.compressed_size/1048576*10|floor/10) MiB, \(.packages|length) packages"' "$m"
done

echo "== xz throughput"
grep -h 'compress (Xz' "$root/warm rebuild rpi3.log" | tail -1 | sed 's/^\[armada\] /  armada (liblzma multi-threaded, whole image incl. holes): /'
img="$root/out-warm/rpi3-worker-$v.img"
root_start=$(sfdisk --json "$img" | jq '.partitiontable.partitions[1].start * 512')
slice="$root/slice.bin"
dd if="$img" of="$slice" bs=1M iflag=skip_bytes skip="$root_start" count=256 status=none
for t in 1 "$(nproc)"; do
  s=$(date +%s.%N); xz -T"$t" -"$level" -c "$slice" > /dev/null; e=$(date +%s.%N)
  printf '  xz -T%s -%s on 256 MiB of the root filesystem: %.1f MB/s\n' "$t" "$level" "$(echo "268.435456 / ($e - $s)" | bc -l)"
done
rm -f "$slice"
