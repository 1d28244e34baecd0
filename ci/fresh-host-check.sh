#!/usr/bin/env bash
# ci/fresh-host-check.sh: proves the README's set-up (ci/host-deps.sh) on a clean
# Debian 12, not on this already-prepared machine. NOT part of the default tiers
# (it downloads and installs ~1 GiB of packages: 10-20 min).
#
#   ci/fresh-host-check.sh            build the chroot, run ci/host-deps.sh in it, report
#   KEEP=1 ci/fresh-host-check.sh     keep the chroot for a look afterwards
#
# What "clean" means: a bookworm amd64 chroot made by mmdebstrap from this host's own
# apt sources (bookworm, bookworm-updates, bookworm-security; no backports suite
# configured), with qemu-utils from bookworm-backports preinstalled, as a new machine
# of this kind comes. The repo (this commit's tracked files) is copied in, and
# ci/host-deps.sh runs inside with /proc, /sys and /dev bound. It passes when
# host-deps exits 0 (it checks every tool it promised), qemu-img still runs, and
# every qemu package comes from one version.
#
# Needs root, mmdebstrap and a reachable mirror in the host's apt sources. Mounts are
# undone on every exit path; the chroot is removed only once nothing is mounted in it.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WORK=${FRESH_WORK:-/var/tmp/armada-fresh}
CH=$WORK/chroot
log() { printf '[fresh-host] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap, chroot, bind mounts)"
command -v mmdebstrap >/dev/null || die "mmdebstrap missing: apt-get install mmdebstrap"
src=/etc/apt/sources.list.d/debian.sources
[ -f "$src" ] || die "no $src: this check takes the host's deb822 Debian sources"
mirror=$(sed -n 's#^URIs: *\([^ ]*/debian\)$#\1#p' "$src" | head -n 1)
[ -n "$mirror" ] || die "no .../debian URI in $src"

mounted() { findmnt -rn -o TARGET | awk -v p="$CH/" 'index($0, p) == 1' | sort -r; }
unmount_all() {
  local m
  for m in $(mounted); do umount -l "$m" 2>/dev/null || true; done
}
cleanup() {
  local rc=$?
  unmount_all
  if [ -n "$(mounted)" ]; then
    log "still mounted under $CH, not removing it:"; mounted >&2
  elif [ -z "${KEEP:-}" ] && [ -d "$CH" ]; then
    rm -rf --one-file-system "$CH"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

unmount_all
[ -z "$(mounted)" ] || die "an earlier run left mounts under $CH"
rm -rf --one-file-system "$CH"
mkdir -p "$WORK"

# The backports suite only while the chroot is made (to preinstall qemu-utils 10 as the
# machine image does); afterwards the chroot has exactly the host's Debian sources.
bpo=$WORK/backports.sources
printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$mirror" >"$bpo"

t0=$(date +%s)
log "mmdebstrap bookworm amd64 (important variant + qemu-utils from bookworm-backports)"
mmdebstrap --variant=important --architectures=amd64 --quiet \
  --include=ca-certificates,qemu-utils/bookworm-backports,python3,gcc,git \
  --customize-hook='rm -f "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*' \
  --customize-hook="cp $src \"\$1\"/etc/apt/sources.list.d/debian.sources" \
  bookworm "$CH" "$src" "$bpo" >"$WORK/mmdebstrap.log" 2>&1 || {
  tail -n 30 "$WORK/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
t_chroot=$(($(date +%s) - t0))
qemu_before=$(chroot "$CH" dpkg-query -W -f='${Version}' qemu-utils)
log "chroot made in ${t_chroot}s ($(du -sh --one-file-system "$CH" | cut -f1)); qemu-utils $qemu_before; backports configured: $(grep -rl bookworm-backports "$CH/etc/apt/" 2>/dev/null | wc -l) files"

mkdir -p "$CH/root/armada"
git -C "$ROOT" archive HEAD | tar -x -C "$CH/root/armada"
for d in proc sys dev; do
  mount --rbind "/$d" "$CH/$d" && mount --make-rslave "$CH/$d" || die "binding /$d"
done
cp /etc/resolv.conf "$CH/etc/resolv.conf" 2>/dev/null || true

t1=$(date +%s)
log "running ci/host-deps.sh inside the chroot (log: $WORK/host-deps.log)"
chroot "$CH" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  bash -c 'cd /root/armada && bash ci/host-deps.sh' >"$WORK/host-deps.log" 2>&1
rc=$?
t_deps=$(($(date +%s) - t1))
tail -n 15 "$WORK/host-deps.log" >&2
[ "$rc" -eq 0 ] || die "ci/host-deps.sh exited $rc after ${t_deps}s"

# Run again: idempotent and quick on a prepared machine.
t2=$(date +%s)
chroot "$CH" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  bash -c 'cd /root/armada && bash ci/host-deps.sh' >"$WORK/host-deps-2.log" 2>&1 || die "second ci/host-deps.sh run failed"
t_again=$(($(date +%s) - t2))

qimg=$(chroot "$CH" qemu-img --version | head -n 1) || die "qemu-img is gone after ci/host-deps.sh"
qsys=$(chroot "$CH" qemu-system-aarch64 --version | head -n 1) || die "no qemu-system-aarch64"
versions=$(chroot "$CH" dpkg-query -W -f='${binary:Package} ${Version}\n' 'qemu-*' 2>/dev/null | awk '$2 != ""')
nver=$(awk '{print $2}' <<<"$versions" | sort -u | wc -l)
[ "$nver" -eq 1 ] || { echo "$versions" >&2; die "qemu packages of $nver versions"; }
npkg=$(chroot "$CH" dpkg-query -W -f='${Status}\n' | grep -c 'install ok installed')

echo "fresh-host-check: chroot ${t_chroot}s, ci/host-deps.sh ${t_deps}s (again: ${t_again}s), $npkg packages"
echo "fresh-host-check: qemu-utils before $qemu_before; after: $qimg; $qsys"
echo "fresh-host-check: qemu packages, one version:"
sed 's/^/  /' <<<"$versions"
grep -F '[host-deps] done' "$WORK/host-deps.log"
echo "fresh-host-check: passed"
