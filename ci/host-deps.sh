#!/usr/bin/env bash
# Installs, idempotently, everything armada's build and test suite need on a Debian 12
# x86_64 host, as root. On a machine that already has it all this takes seconds.
#   ci/host-deps.sh            everything (build + tests)
#   ci/host-deps.sh --build    only what `armada build` needs
set -euo pipefail

want_tests=1
[ "${1:-}" = "--build" ] && want_tests=0

log() { printf '[host-deps] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "ci/host-deps.sh must run as root (it installs Debian packages)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

build_pkgs=(
  # cross toolchain: Debian's Rust with an arm64 std, and a C cross compiler
  rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  # arm64 rootfs under emulation
  mmdebstrap qemu-user-static binfmt-support arch-test debian-archive-keyring
  # image assembly without mounts
  e2fsprogs dosfstools mtools xz-utils zstd fdisk
  ca-certificates
  # `armada flash --batch` ejects each card it wrote (util-linux's eject, its own package)
  eject
)
test_pkgs=(
  qemu-user qemu-system-arm ipxe-qemu qemu-utils u-boot-qemu
  docker.io iproute2 util-linux
  # the flash tests' loop "cards" (losetup) and mounts
  mount
  prometheus prometheus-node-exporter bmap-tools
  chromium dnsmasq-base
  # the dashboard's browser tests drive chromium with playwright-core (ci/cockpit-npm.sh)
  nodejs
  jq curl file busybox-static sqlite3 openssh-client
  # the lint tier's actionlint venv (ci/actionlint.sh)
  python3-venv
  # the fast tier parses armada's generated Wi-Fi config with the supplicant itself
  wpasupplicant
)

pkgs=("${build_pkgs[@]}")
[ "$want_tests" = 1 ] && pkgs+=("${test_pkgs[@]}")
# Debian ships npm as its own package; a nodejs that brings its own npm needs none (and
# Debian's npm would not install beside it).
[ "$want_tests" = 1 ] && ! command -v npm >/dev/null && pkgs+=(npm)

# arm64 as a foreign architecture, for libstd-rust-web-dev:arm64
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "adding the arm64 foreign architecture"
  dpkg --add-architecture arm64
  rm -f /var/lib/apt/lists/.armada-updated
fi

# qemu: one consistent version for every qemu package. A fresh machine of this kind ships
# qemu-utils from bookworm-backports; installing bookworm's qemu-system-arm (7.2) beside it
# would REMOVE qemu-utils. So the backports suite is added with the host's own mirror and
# every qemu package is pinned to it, whichever qemu-utils the machine came with.
add_backports() {
  local src=/etc/apt/sources.list.d/armada-bookworm-backports.sources mirror
  [ -f "$src" ] && return 0
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 0
  fi
  mirror=$(sed -n 's#^URIs: *\([^ ]*\).*#\1#p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 ~ /^bookworm/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
  if [ -z "$mirror" ]; then
    echo "ci/host-deps.sh: no Debian mirror found in /etc/apt/sources.list{,.d}: add one for bookworm" >&2
    exit 1
  fi
  log "adding bookworm-backports from the host's mirror (for one consistent qemu 10)"
  cat > "$src" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  rm -f /var/lib/apt/lists/.armada-updated
}
pin_qemu() {
  local pin=/etc/apt/preferences.d/armada-qemu
  [ -f "$pin" ] && return 0
  cat > "$pin" <<'PIN'
# armada (ci/host-deps.sh): every qemu package from one release, so none removes another
Package: qemu-* src:qemu
Pin: release n=bookworm-backports
Pin-Priority: 990
PIN
}
add_backports
pin_qemu

missing=()
for p in "${pkgs[@]}"; do
  name=${p%%:*}; arch=${p#*:}; [ "$arch" = "$p" ] && arch=""
  q=$name; [ -n "$arch" ] && q="$name:$arch"
  if ! dpkg-query -W -f='${Status}' "$q" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  apt-get update -qq
  # One transaction; a removal of anything installed is refused, never done silently.
  apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}" >/dev/null
else
  log "all packages present"
fi

# binfmt_misc: needed to run arm64 programs inside the rootfs under mmdebstrap
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  log "mounting binfmt_misc"
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  log "registering qemu-aarch64 with binfmt"
  if command -v update-binfmts >/dev/null; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # fall back to the format line Debian ships for qemu-user-static
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:PF' > /proc/sys/fs/binfmt_misc/register 2>/dev/null || \
    printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' > /proc/sys/fs/binfmt_misc/register
  fi
fi
if ! arch-test arm64 >/dev/null 2>&1; then
  echo "arm64 binaries do not run under binfmt here (arch-test arm64 failed)" >&2
  exit 1
fi

# rustfmt and clippy for the lint tier (the rustup toolchain ships them as components)
if [ "$want_tests" = 1 ] && command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi
# Every tool promised above must now be callable: a package that apt reported installed
# but whose program is gone (a removal by a later transaction) fails here, not in a tier.
build_tools=(/usr/bin/rustc /usr/bin/cargo aarch64-linux-gnu-gcc mmdebstrap arch-test
  mkfs.ext4 debugfs mkfs.vfat mcopy xz zstd sfdisk eject)
test_tools=(qemu-aarch64 qemu-system-aarch64 qemu-img dockerd docker ip nsenter unshare
  promtool prometheus-node-exporter bmaptool chromium dnsmasq node npm jq curl file busybox sqlite3 ssh ssh-keygen wpa_supplicant
  losetup partx setpriv mount umount fsck.vfat mtype)
tools=("${build_tools[@]}")
[ "$want_tests" = 1 ] && tools+=("${test_tools[@]}")
absent=()
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$t" >/dev/null 2>&1 || absent+=("$t")
done
[ "$want_tests" = 1 ] && [ ! -e /usr/share/qemu/u-boot-qemu_arm64/u-boot.bin ] && [ ! -e /usr/lib/u-boot/qemu_arm64/u-boot.bin ] && absent+=("u-boot.bin for qemu_arm64 (u-boot-qemu)")
if [ "${#absent[@]}" -gt 0 ]; then
  echo "ci/host-deps.sh: installed, but these tools are missing: ${absent[*]}" >&2
  exit 1
fi
log "done: ${#tools[@]} tools checked"
