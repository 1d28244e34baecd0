#!/usr/bin/env bash
# Image tier: real images with mmdebstrap, checked from outside (part 1), then booted
# under qemu by ci/boot-test.sh (part 2, the same images).
#   ci/tier-image.sh
# Builds rpi3 worker, pine64 worker and rpi3 manager images (raw images kept for the
# boot tests) into ${ARMADA_IMAGE_OUT:-out/ci-images}, checks each one's partition
# table, filesystems (fsck), boot files, kernel, device trees, blobs, docker.io and the
# agent, docker CLI, Wi-Fi packages and precompiled AppArmor policy inside, prints what
# fills each image (mapped bytes, xz bytes of the rpi3 worker, the one compressed; top
# folders, largest packages), then rebuilds
# the rpi3 worker with its trees on tmpfs and requires a bit-identical image (and with
# ARMADA_TIER_COLD_BASE=1 from a second cold mmdebstrap base).
# The first run makes the shared base rootfs (mmdebstrap, ~4-20 min depending on load);
# later runs reuse ~/.cache/armada (or $ARMADA_CACHE_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[tier-image] %s\n' "$*" >&2; }
fail() { printf '[tier-image] FAIL: %s\n' "$*" >&2; exit 1; }

out=${ARMADA_IMAGE_OUT:-out/ci-images}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
# Level 1 keeps CI fast; the format and the tools that read it are the same.
xz_opts=(--xz-level 1)

# The images bundle dist/aarch64: rebuilt when missing or older than any source it is
# built from (the cross tier's fresh output is newer than the checkout, so CI reuses it).
stale_dist() {
  local b
  for b in armada-agent armada-manager; do
    [ -x "dist/aarch64/$b" ] || { echo "dist/aarch64/$b is missing"; return 0; }
  done
  b=$(find agent manager protocol Cargo.toml Cargo.lock -type f -newer dist/aarch64/armada-agent -print -quit 2>/dev/null)
  [ -z "$b" ] || { echo "$b is newer than dist/aarch64/armada-agent"; return 0; }
  b=$(find agent manager protocol Cargo.toml Cargo.lock -type f -newer dist/aarch64/armada-manager -print -quit 2>/dev/null)
  [ -z "$b" ] || { echo "$b is newer than dist/aarch64/armada-manager"; return 0; }
  return 1
}
if why=$(stale_dist); then
  log "cross-building the aarch64 binaries: $why"
  bash ci/cross-build.sh
fi
stale_dist >/dev/null && fail "dist/aarch64 is still older than its sources after ci/cross-build.sh"
# The host tools are the debug builds the cluster tier made (the same command, so here it
# finds them fresh): an x86 release build of armada and armada-manager took ~3.5 min in
# session 4's fresh-clone run and proved nothing more. What is heavy in `armada build`
# and `armada flash` is in other processes (mmdebstrap, tar, mkfs, qemu) or in crates the
# dev profile optimises (liblzma, sha2, miniz_oxide: Cargo.toml). The images carry the
# release aarch64 binaries from dist/aarch64 either way.
cargo build --locked -p armada -p armada-agent -p armada-manager
armada=target/debug/armada

work=$(mktemp -d /var/tmp/armada-tier-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
"$armada" cluster init "$work/cluster" --san 172.30.0.1 -q

t0=$(date +%s)
# build BOARD ROLE [xz]: only the rpi3 worker is also compressed (its .xz is read back
# by bmaptool below); xz took ~130 s of each ~150-s build at load, and the others' xz
# would prove the same compressor again. The raw image does not depend on it.
build() { # board role [xz]
  local s comp=(--compress none); s=$(date +%s)
  [ "${3:-}" = xz ] && comp=(--keep-raw "${xz_opts[@]}")
  "$armada" build --board "$1" --role "$2" --cluster "$work/cluster" --out "$out" "${comp[@]}"
  log "$1 $2 built in $(( $(date +%s) - s ))s"
}

part_start() { sfdisk --json "$1" | jq ".partitiontable.partitions[$2].start * 512"; }
part_size() { sfdisk --json "$1" | jq ".partitiontable.partitions[$2].size * 512"; }

check_common() { # img
  local img=$1 boot root r
  boot=$(part_start "$img" 0); root=$(part_start "$img" 1)
  fsck.ext4 -fn "$img?offset=$root" >/dev/null || fail "fsck.ext4 $img"
  dd if="$img" of="$work/fat.img" bs=1M iflag=skip_bytes,count_bytes skip="$boot" count="$(part_size "$img" 0)" conv=sparse status=none
  fsck.vfat -n "$work/fat.img" >/dev/null || fail "fsck.vfat $img"
  r="$img?offset=$root"
  has 'Mode:  0755' "$(dbg 'stat /usr/local/bin/armada-agent' "$r")" || fail "no agent in $img"
  has '^Package: docker.io$' "$(dbg 'cat /var/lib/dpkg/status' "$r")" || fail "no docker.io in $img"
  # trixie's docker.io has no CLI: the docker-cli package gives operators `docker`.
  has 'Mode:  0755' "$(dbg 'stat /usr/bin/docker' "$r")" || fail "no /usr/bin/docker (docker-cli) in $img"
  # Wi-Fi (armada.toml [wifi]): the supplicant, the regulatory database, the Pi radios' firmware.
  has 'Mode:  0755' "$(dbg 'stat /usr/sbin/wpa_supplicant' "$r")" || fail "no wpa_supplicant in $img"
  has 'regulatory.db' "$(dbg 'ls /usr/lib/firmware' "$r")" || fail "no regulatory.db (wireless-regdb) in $img"
  for f in brcmfmac43430-sdio.raspberrypi,3-model-b.txt brcmfmac43455-sdio.raspberrypi,3-model-b-plus.txt brcmfmac43430-sdio.bin brcmfmac43455-sdio.bin; do
    has "$f" "$(dbg 'ls /usr/lib/firmware/brcm' "$r")" || fail "no brcm/$f (firmware-brcm80211) in $img"
  done
  # AppArmor: the board's kernel finds its policy precompiled (no first-boot compile).
  local aa; aa=$(jq -r '.apparmor.cache_dir // empty' "${img%.img}.manifest.json")
  [ -n "$aa" ] || fail "$img: the manifest names no precompiled AppArmor cache"
  has '\.features' "$(dbg "ls -l $aa" "$r")" || fail "$img: no $aa/.features in the image"
  has ' runc' "$(dbg "ls -l $aa" "$r")" || fail "$img: the runc profile is not in $aa"
  has 'arm64' "$(dbg 'ls /lib/modules' "$r")" || fail "no kernel modules in $img"
  has firstboot.sh "$(dbg 'cat /etc/systemd/system/armada-firstboot.service' "$r")" || fail "no first-boot unit in $img"
  # The join path (issue 12; the boot test times it): wpa_supplicant@wlan0 comes with a
  # wlan0 (udev), never as a want of multi-user.target waiting for a radio a board may
  # not have; the root grows and the programs are read ahead beside the boot, not in it.
  has 'SYSTEMD_WANTS.*wpa_supplicant@wlan0' "$(dbg 'cat /etc/udev/rules.d/80-armada-wlan0.rules' "$r")" || fail "$img: no udev rule starting wpa_supplicant@wlan0 with wlan0"
  has 'wpa_supplicant@' "$(dbg 'ls /etc/systemd/system/multi-user.target.wants' "$r")" && fail "$img: multi-user.target wants wpa_supplicant@wlan0 (it waits 90 s for a missing radio)"
  has armada-growroot.service "$(dbg 'ls /etc/systemd/system/multi-user.target.wants' "$r")" || fail "$img: armada-growroot.service not enabled"
  has armada-readahead.service "$(dbg 'ls /etc/systemd/system/sysinit.target.wants' "$r")" || fail "$img: armada-readahead.service not enabled"
  has '^After=.*docker\.service' "$(dbg 'cat /etc/systemd/system/armada-agent.service' "$r")" && fail "$img: the agent's unit waits for docker.service (its registration waits for the engine itself)"
  # The clock: before the agent only while the engine holds no swarm certificate, before
  # Docker too once it does (armada-clock-swarm), with the same command and sandbox.
  local clk swm
  clk=$(dbg 'cat /etc/systemd/system/armada-clock.service' "$r"); swm=$(dbg 'cat /etc/systemd/system/armada-clock-swarm.service' "$r")
  has '^ConditionPathExists=!/var/lib/docker/swarm/certificates$' "$clk" || fail "$img: armada-clock.service does not stand aside once Docker holds swarm certificates"
  has '^ConditionPathExists=/var/lib/docker/swarm/certificates$' "$swm" || fail "$img: no armada-clock-swarm.service for an engine with swarm certificates"
  has '^Before=docker\.service' "$swm" || fail "$img: armada-clock-swarm.service is not ordered before Docker"
  [ "$(sed -n '/^\[Service\]/,$p' <<<"$clk")" = "$(sed -n '/^\[Service\]/,$p' <<<"$swm")" ] || fail "$img: armada-clock and armada-clock-swarm run different [Service] sections"
  has armada-clock-swarm.service "$(dbg 'ls /etc/systemd/system/multi-user.target.wants' "$r")" || fail "$img: armada-clock-swarm.service not enabled"
  has ssh_host_ "$(dbg 'ls /etc/ssh' "$r")" && fail "baked ssh host keys in $img"
  # The board gets its security fixes from the mirror it was built from.
  has '^deb .* [a-z]*-security ' "$(dbg 'cat /etc/apt/sources.list' "$r")" || fail "no security suite in $img's apt sources"
  "$armada" inspect "$img" > "$work/inspect.txt" || fail "armada inspect $img"
  grep -q 'armada.toml' "$work/inspect.txt" || fail "no armada.toml in $img"
  # The Docker and Debian versions the manifest claims are the ones installed in the
  # image (read from its own dpkg status and /etc/debian_version), whatever they are.
  local man=${img%.img}.manifest.json docker debian
  docker=$(dbg 'cat /var/lib/dpkg/status' "$r" | awk '/^Package: /{p=$2} /^Version: /{if (p=="docker.io") print $2}')
  debian=$(dbg 'cat /etc/debian_version' "$r")
  [ -n "$docker" ] || fail "no docker.io version in $img's dpkg status"
  grep -q "docker: $docker" "$work/inspect.txt" || fail "inspect does not show docker $docker for $img"
  [ "$(jq -r .docker "$man")" = "$docker" ] || fail "$man: docker $(jq -r .docker "$man") but the image has $docker"
  [ "$(jq -r .debian "$man")" = "$debian" ] || fail "$man: debian $(jq -r .debian "$man") but the image has $debian"
  log "$(basename "$img"): Debian $debian ($(jq -r .suite "$man")), docker.io $docker, kernel $(jq -r .kernel "$man")"
  # What fills it: mapped and compressed bytes, top folders, largest packages.
  local xz="not made"
  if [ "$(jq -r .image.file "$man")" != "$(jq -r .image.raw_file "$man")" ]; then
    xz="$(( $(jq .image.compressed_size "$man") >> 20 )) MiB"
  fi
  log "$(basename "$img"): raw $(( $(jq .image.raw_size "$man") >> 20 )) MiB, mapped $(( $(jq .image.mapped_bytes "$man") >> 20 )) MiB, xz $xz; AppArmor $(jq '.apparmor.kept | length' "$man") profiles kept (precompiled), $(jq '.apparmor.dropped | length' "$man") dropped"
  log "  largest folders: $(jq -r '[.sizes.top_dirs[:8][] | "\(.[0]) \(.[1] / 1048576 | floor)M"] | join(", ")' "$man")"
  log "  largest packages: $(jq -r '[.sizes.top_packages[:8][] | "\(.[0]) \(.[1] / 1048576 | floor)M"] | join(", ")' "$man")"
}

# Outputs are captured before grep: with pipefail, `grep -q` closing the pipe early
# would fail the producer with SIGPIPE.
dbg() { debugfs -R "$1" "$2" 2>/dev/null || true; }
has() { grep -q -- "$1" <<<"$2"; }
hasi() { grep -qi -- "$1" <<<"$2"; }

mtype_i() { MTOOLS_SKIP_CHECK=1 mtype -i "$1@@$(part_start "$1" 0)" "::$2"; }
mdir_i() { MTOOLS_SKIP_CHECK=1 mdir -b -i "$1@@$(part_start "$1" 0)" "::$2"; }

# --- rpi3 worker ---
build rpi3 worker xz
v=$("$armada" --version | awk '{print $2}')
img="$out/rpi3-worker-$v.img"
check_common "$img"
for f in bootcode.bin start.elf fixup.dat bcm2837-rpi-3-b.dtb bcm2837-rpi-3-b-plus.dtb config.txt cmdline.txt armada.toml; do
  hasi "/$f\$" "$(mdir_i "$img" "")" || fail "rpi3: $f missing on the boot partition"
done
hasi '/vmlinuz-.*-arm64$' "$(mdir_i "$img" "")" || fail "rpi3: no kernel on the boot partition"
hasi '/initrd.img-.*-arm64$' "$(mdir_i "$img" "")" || fail "rpi3: no initrd on the boot partition"
has '^arm_64bit=1' "$(mtype_i "$img" config.txt)" || fail "rpi3: config.txt lacks arm_64bit=1"
has 'root=LABEL=RASPIROOT.*cgroup_enable=memory' "$(mtype_i "$img" cmdline.txt)" || fail "rpi3: cmdline.txt"
sha_first=$(sha256sum "$img" | cut -d' ' -f1)
img_rpi3=$img
bmaptool copy --bmap "$out/rpi3-worker-$v.img.bmap" "$out/rpi3-worker-$v.img.xz" "$work/copy.img" >/dev/null 2>&1 || fail "bmaptool copy"
cmp "$img" "$work/copy.img" || fail "bmaptool copy differs from the raw image"
rm -f "$work/copy.img"

# --- pine64 worker ---
build pine64 worker
img="$out/pine64-worker-$v.img"
check_common "$img"
has 'at 8192 (8 KiB).*eGON' "$("$armada" inspect "$img")" || fail "pine64: no SPL at 8 KiB"
has 'at 40960 (40 KiB).*FIT' "$("$armada" inspect "$img")" || fail "pine64: no U-Boot FIT at 40 KiB"
has 'kernel /vmlinuz-' "$(mtype_i "$img" extlinux/extlinux.conf)" || fail "pine64: extlinux.conf"
has 'sun50i-a64-pine64-plus.dtb' "$(mdir_i "$img" dtbs/allwinner)" || fail "pine64: no pine64-plus dtb"

# --- rpi3 manager ---
build rpi3 manager
img="$out/rpi3-manager-$v.img"
check_common "$img"
r="$img?offset=$(part_start "$img" 1)"
# Images are the same for every cluster: the manager image holds only the CA
# certificate; its key, certificate and tokens reach the card at `armada flash`.
has 'Type: regular' "$(dbg 'stat /etc/armada/cluster/ca.pem' "$r")" || fail "manager: no /etc/armada/cluster/ca.pem"
for f in ca.key manager.pem manager.key token admin-token credential-key revoked-nodes; do
  has 'Type: regular' "$(dbg "stat /etc/armada/cluster/$f" "$r")" && fail "manager: /etc/armada/cluster/$f is in the image"
done
has 'Mode:  0755' "$(dbg 'stat /usr/local/bin/armada-manager' "$r")" || fail "manager: no armada-manager"

# --- no secret in any byte of any output (manager image included) ---
# One PCRE: a PEM private-key block (header plus a base64 line: ssh-keygen carries the
# bare header strings), every base64 line of the cluster's private keys, the bootstrap
# token's secret, the admin token and the credential key. -z lets a match span a newline.
pattern='-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40}'
for k in ca.key manager.key; do
  while read -r l; do pattern+="|\\Q$l\\E"; done < <(grep -v -- '-----' "$work/cluster/$k" | awk 'length($0) >= 40')
done
pattern+="|\\Q$(grep '^armada1\.' "$work/cluster/token" | head -1 | sed 's/.*\.//')\\E"
for k in admin-token credential-key; do
  pattern+="|\\Q$(grep -v '^#' "$work/cluster/$k" | head -1 | tr -d '[:space:]')\\E"
done
[ "$(grep -o '\\Q' <<<"$pattern" | wc -l)" -ge 5 ] || fail "secret scan: too few needles"
# The scan can fail: a planted key is found.
printf 'x\0' > "$work/planted"; cat "$work/cluster/manager.key" >> "$work/planted"
LC_ALL=C grep -a -z -q -P -e "$pattern" "$work/planted" || fail "secret scan misses a planted key"
s=$(date +%s); scanned=0
for f in "$out"/*-"$v".img "$out"/*-"$v".img.bmap "$out"/*-"$v".manifest.json "$out"/*-"$v".sha256; do
  hits=$(LC_ALL=C grep -a -z -o -b -P -e "$pattern" "$f" | tr '\0' '\n' | head -3 || true)
  [ -z "$hits" ] || fail "a secret is in $f: $hits"
  scanned=$(( scanned + $(stat -c %s "$f") ))
done
log "no secret in $(( scanned >> 20 )) MiB of outputs (every byte of 3 images, bmaps, manifests) in $(( $(date +%s) - s ))s"

# --- reproducibility: the same inputs give the same bytes, whatever the filesystem ---
# The first build staged its trees in the cache (on disk); this one stages them on
# tmpfs (/dev/shm), so directory order, inode numbers and timestamps of the build host's
# filesystem cannot leak into the image.
first_fs=$(stat -f -c %T "${ARMADA_CACHE_DIR:-$HOME/.cache/armada}")
[ "$first_fs" != tmpfs ] || fail "the build cache is on tmpfs: put ARMADA_CACHE_DIR on disk so the two builds are on different filesystems"
shm=$(mktemp -d /dev/shm/armada-tier-image.XXXXXX)
trap 'rm -rf "$work" "$shm"' EXIT
[ "$(stat -f -c %T "$shm")" = tmpfs ] || fail "/dev/shm is $(stat -f -c %T "$shm"), not tmpfs"
s=$(date +%s)
# Uncompressed: the raw image's bytes are what is compared (xz was ~130 s of it).
"$armada" build --board rpi3 --role worker --cluster "$work/cluster" --out "$work/again" --compress none --work-dir "$shm" -q >/dev/null
log "rpi3 worker rebuilt (warm base, staged on tmpfs instead of $first_fs) in $(( $(date +%s) - s ))s"
sha_again=$(sha256sum "$work/again/rpi3-worker-$v.img" | cut -d' ' -f1)
rm -rf "$shm"
if [ "$sha_first" != "$sha_again" ]; then
  # Say where: which partition's bytes differ.
  for i in 0 1; do
    st=$(part_start "$img_rpi3" "$i"); sz=$(part_size "$img_rpi3" "$i")
    cmp -s -n "$sz" -i "$st:$st" "$img_rpi3" "$work/again/rpi3-worker-$v.img" || log "partition $((i + 1)) differs"
  done
  fail "rebuild on tmpfs differs from the build on $first_fs: $sha_first vs $sha_again"
fi
log "bit-identical across filesystems ($first_fs and tmpfs): $sha_first"

# --- reproducibility: a second cold base (a second mmdebstrap) gives the same base ---
# ~5 min unloaded, ~20 min at load 15: only with ARMADA_TIER_COLD_BASE=1, so the tier
# stays in its time budget. Same package files (the apt archive
# cache is shared by hard links), same SOURCE_DATE_EPOCH; a difference is printed.
if [ "${ARMADA_TIER_COLD_BASE:-0}" = 1 ]; then
  s=$(date +%s)
  cold=$work/cold-cache
  mkdir -p "$cold"
  cp -al "${ARMADA_CACHE_DIR:-$HOME/.cache/armada}/apt-archives" "$cold/apt-archives"
  "$armada" build --board rpi3 --role worker --cluster "$work/cluster" --out "$work/cold-out" --compress none \
    --cache-dir "$cold" > "$work/cold.log" 2>&1 || { tail -n 30 "$work/cold.log" >&2; fail "cold base build"; }
  key=$(sed -n 's/.*base rootfs \([0-9a-f]*\): mmdebstrap.*/\1/p' "$work/cold.log" | head -n 1)
  [ -n "$key" ] || fail "cold base build made no new base (log: $work/cold.log)"
  warm_json=${ARMADA_CACHE_DIR:-$HOME/.cache/armada}/rootfs/$key.json
  [ -f "$warm_json" ] || fail "no cached base $key to compare the cold one with"
  a=$(jq -r .tar_sha256 "$warm_json"); b=$(jq -r .tar_sha256 "$cold/rootfs/$key.json")
  log "second cold base made in $(( $(date +%s) - s ))s"
  if [ "$a" = "$b" ]; then
    log "two cold bases bit-identical: $a"
    # The root filesystem must be the same bytes. The boot partition's manifest records
    # when the base's package set was taken (base_package_set.taken_at, the builder's
    # clock), so the FAT may differ there and nowhere else.
    cold_img=$work/cold-out/rpi3-worker-$v.img
    st=$(part_start "$img_rpi3" 1); sz=$(part_size "$img_rpi3" 1)
    cmp -s -n "$sz" -i "$st:$st" "$img_rpi3" "$cold_img" || fail "same base, but the root filesystem from the cold base differs"
    strip() { mtype_i "$1" armada-manifest.json | jq -S 'del(.base_package_set.taken_at)'; }
    [ "$(strip "$img_rpi3")" = "$(strip "$cold_img")" ] || fail "the manifests differ beyond base_package_set.taken_at"
    if cmp -s "$img_rpi3" "$cold_img"; then
      log "image from the cold base bit-identical: $sha_first"
    else
      log "image from the cold base: root filesystem bit-identical; the FAT differs only by the manifest's base_package_set.taken_at"
    fi
  else
    log "cold bases DIFFER ($a vs $b): package versions that differ, then files:"
    pkgs() { tar -xOf "$1" ./var/lib/dpkg/status | awk '/^Package: /{p=$2} /^Version: /{print p, $2}' | sort; }
    diff <(pkgs "${warm_json%.json}.tar") <(pkgs "$cold/rootfs/$key.tar") >&2 || true
    diff <(tar -tvf "${warm_json%.json}.tar" | sort -k6) <(tar -tvf "$cold/rootfs/$key.tar" | sort -k6) | head -n 40 >&2 || true
    fail "two cold bases from the same package files differ"
  fi
else
  log "cold-base reproducibility not checked (ARMADA_TIER_COLD_BASE=1 runs a second mmdebstrap, ~5-20 min)"
fi

ls -la "$out" >&2
log "passed in $(( $(date +%s) - t0 ))s; raw images for the boot tests are in $out"

# ---------------------------------------------------------------------------------------
# Image tier, part 2 (boot, issue 6; ci/boot-test.sh): these same images boot under
# qemu-system-aarch64 (rpi3 worker under raspi3b, pine64 worker under virt, rpi3 manager
# under raspi3b), register with a real manager and join a real swarm by themselves,
# report per-container data, and come back after a power cycle as the same node. Images
# are the same for every cluster: the boot test's own cluster (token, CA, manager
# address; a manager's certificate and keys) reaches each card at `armada flash`, so it
# boots the images checked above instead of building its own (its cargo build finds the
# binaries built above). It prints seconds from power-on to each milestone per board.
ARMADA_E2E_IMAGES=$(realpath "$out") ARMADA_E2E_NO_BUILD=1 ARMADA=$PWD/$armada \
  ARMADA_MANAGER=$PWD/target/debug/armada-manager bash ci/boot-test.sh
