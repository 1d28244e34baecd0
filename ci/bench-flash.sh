#!/usr/bin/env bash
# Benchmark: `armada flash` against `dd` and `bmaptool copy`, same image, same run,
# onto a loop device backed by tmpfs (so the figures measure the tools, not a card).
#   ci/bench-flash.sh            the real rpi3 image from out/ if there is one,
#                                else a synthetic 2 GiB sparse image
#   ci/bench-flash.sh IMAGE      IMAGE (.img, .img.xz or .img.gz; its .bmap beside it,
#                                else one made with `bmaptool create`)
# Prints, per tool: bytes the device received (from /sys/block/loopN/stat), seconds,
# and MB/s of image bytes. Needs root (tmpfs mount, loop device). Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/bench-flash.sh needs root (it mounts a tmpfs and sets up a loop device)" >&2
  exit 1
fi
for t in losetup bmaptool dd xz sfdisk mkfs.vfat mcopy; do
  command -v "$t" >/dev/null || { echo "missing $t: run ci/host-deps.sh" >&2; exit 1; }
done
export PATH="$HOME/.cargo/bin:$PATH"

work=$(mktemp -d /tmp/armada-bench-flash.XXXXXX)
loop=""
cleanup() {
  [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
  mountpoint -q "$work/tmpfs" 2>/dev/null && umount "$work/tmpfs" || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building armada (release)"
cargo build --release -p armada --locked 2>&1 | tail -1
armada=$PWD/target/release/armada

# --- the image --------------------------------------------------------------------
image=${1:-}
if [ -z "$image" ]; then
  image=$(ls -t out/rpi3-*.img.xz out/rpi3-*.img.gz out/rpi3-*.img 2>/dev/null | head -1 || true)
fi
compressed=""
if [ -n "$image" ]; then
  echo "== image: $image"
  case "$image" in
    *.xz) compressed=$image; raw=$work/image.img; xz -dc "$image" | cp --sparse=always /dev/stdin "$raw" ;;
    *.gz) compressed=$image; raw=$work/image.img; gzip -dc "$image" | cp --sparse=always /dev/stdin "$raw" ;;
    *) raw=$image ;;
  esac
  bmap=""
  for cand in "$image.bmap" "${image%.*}.bmap" "${image%.*.*}.bmap"; do
    [ -f "$cand" ] && { bmap=$cand; break; }
  done
  if [ -z "$bmap" ]; then
    bmap=$work/image.img.bmap
    bmaptool create -o "$bmap" "$raw"
    echo "   (no bmap beside it: made one with bmaptool create; holes come from the decompressed copy)"
  fi
else
  echo "== image: synthetic 2 GiB sparse (no out/rpi3-*.img* here)"
  raw=$work/synthetic.img
  truncate -s 2G "$raw"
  printf 'label: dos\nstart=8192, size=524288, type=c\nstart=532480, type=83\n' | sfdisk -q "$raw"
  mkfs.vfat -F 32 -s 1 -n BOOT --offset 8192 "$raw" 262144 >/dev/null 2>&1
  printf 'hostname = ""\n' > "$work/armada.toml"
  MTOOLS_SKIP_CHECK=1 mcopy -i "$raw@@$((8192 * 512))" "$work/armada.toml" ::armada.toml
  # ~600 MB of data in 20 extents across the root partition: half random, half text.
  { yes "armada flash benchmark: a line of compressible text" || true; } | head -c $((30 << 20)) > "$work/text.bin"
  for i in $(seq 0 19); do
    off=$(( 300 + i * 85 ))   # MiB
    if [ $((i % 2)) -eq 0 ]; then src=/dev/urandom; else src=$work/text.bin; fi
    dd if="$src" of="$raw" bs=1M count=30 seek="$off" conv=notrunc status=none iflag=fullblock
  done
  rm -f "$work/text.bin"
  bmap=$work/synthetic.img.bmap
  bmaptool create -o "$bmap" "$raw"
  compressed=$work/synthetic.img.xz
  xz -T0 -1 -c "$raw" > "$compressed"
fi

size=$(stat -c %s "$raw")
mapped=$(awk -F'[<>]' '/<MappedBlocksCount>/{m=$3} /<BlockSize>/{b=$3} END{printf "%d", m*b}' "$bmap")
echo "   image size $size bytes, mapped $mapped bytes (bmap $bmap)"
cat "$raw" ${compressed:+"$compressed"} > /dev/null   # warm the page cache: every tool reads it hot

# --- the target: a loop device over a file in tmpfs ---------------------------------
mkdir -p "$work/tmpfs"
mount -t tmpfs -o size=$(( size / 1048576 + 64 ))M tmpfs "$work/tmpfs"
truncate -s "$size" "$work/tmpfs/card"
loop=$(losetup -f --show "$work/tmpfs/card")
name=$(basename "$loop")
echo "   target $loop (tmpfs-backed, $size bytes)"

written_sectors() { awk '{print $7}' "/sys/block/$name/stat"; }

results=()
bench() {
  local label=$1; shift
  blockdev --flushbufs "$loop"
  local before t0 t1 after
  before=$(written_sectors)
  t0=$(date +%s.%N)
  if ! "$@" >"$work/out.log" 2>&1; then
    echo "!! $label failed:"; cat "$work/out.log"; exit 1
  fi
  sync
  t1=$(date +%s.%N)
  after=$(written_sectors)
  local bytes=$(( (after - before) * 512 ))
  local secs rate
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
  rate=$(awk -v s="$size" -v t="$secs" 'BEGIN{printf "%.0f", s/1e6/t}')
  results+=("$(printf '%-44s %14s %8s %10s' "$label" "$bytes" "$secs" "$rate")")
  printf '   %-44s %14s bytes written in %6ss\n' "$label" "$bytes" "$secs"
}

echo "== runs"
bench "dd bs=4M conv=fsync (raw)" dd if="$raw" of="$loop" bs=4M conv=fsync status=none
bench "bmaptool copy (raw)" bmaptool copy --bmap "$bmap" "$raw" "$loop"
bench "armada flash --no-verify (raw)" "$armada" flash "$raw" "$loop" --bmap "$bmap" --yes --force --no-ssh --no-verify
bench "armada flash (raw, read-back verify)" "$armada" flash "$raw" "$loop" --bmap "$bmap" --yes --force --no-ssh
if [ -n "$compressed" ]; then
  c=$(basename "$compressed")
  bench "xz -dc | dd bs=4M (${c##*.})" sh -c "xz -dc '$compressed' | dd of='$loop' bs=4M iflag=fullblock conv=fsync status=none"
  bench "bmaptool copy (${c##*.})" bmaptool copy --bmap "$bmap" "$compressed" "$loop"
  bench "armada flash (${c##*.}, read-back verify)" "$armada" flash "$compressed" "$loop" --bmap "$bmap" --yes --force --no-ssh
fi

echo
echo "== flash benchmark: image $size bytes, $mapped mapped; target tmpfs-backed $loop; $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg)"
printf '%-44s %14s %8s %10s\n' "tool" "bytes written" "seconds" "image MB/s"
printf '%s\n' "${results[@]}"
