# shellcheck shell=bash
# ci/lib/ha-image.sh: the example stack's test image, built from Debian packages (the
# test machines reach no image registry). One rootfs tarball with every part of
# examples/ha-stack/ (haproxy, nginx, python3 + psycopg2, PostgreSQL 15 +
# pg_auto_failover), made by mmdebstrap from the host's own Debian apt sources (read at
# run time, never written down here), then `docker import`ed into each test engine.
#
# The package list is examples/ha-stack/image/packages (the same list the image's
# Dockerfile installs for users). The tarball is cached in $HA_IMAGE_CACHE (default
# /var/cache/armada-examples) under a key made of that list, the suite and the
# architecture, so a second run only imports; a cold build prints its time. Builds are
# serialized by a lock in the cache folder (not the imagebuilder's cache).
#
# Functions:
#   ha_image_tar [SOURCES]  print the path of the cached tarball, building it first when
#                           missing; SOURCES defaults to the host's Debian sources
#   ha_image_import SOCK TAG  `docker import` the tarball into the engine at SOCK as TAG

HA_IMAGE_CACHE=${HA_IMAGE_CACHE:-/var/cache/armada-examples}
HA_IMAGE_SUITE=${HA_IMAGE_SUITE:-bookworm}

ha_image_log() { printf '[ha-image] %s\n' "$*" >&2; }

# The host's Debian (not third-party) apt sources, deb822 or one-line: whichever exists.
ha_image_host_sources() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$f" ] && grep -qE '^[^#]*(URIs:|deb )' "$f"; then echo "$f"; return 0; fi
  done
  return 1
}

ha_image_tar() {
  local root sources pkgs key tar t0 tmp
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  pkgs=$(grep -vE '^\s*(#|$)' "$root/examples/ha-stack/image/packages" | tr '\n' ' ' | sed 's/ $//')
  [ -n "$pkgs" ] || { ha_image_log "examples/ha-stack/image/packages lists no package"; return 1; }
  sources=${1:-$(ha_image_host_sources)} || { ha_image_log "no Debian apt sources on this host (/etc/apt/sources.list.d/debian.sources)"; return 1; }
  key=$(printf '%s\n%s\n%s\n' "$HA_IMAGE_SUITE" "$(dpkg --print-architecture)" "$pkgs" | sha256sum | cut -c1-16)
  tar="$HA_IMAGE_CACHE/ha-stack-$key.tar"
  mkdir -p "$HA_IMAGE_CACHE"
  (
    flock 9
    if [ -s "$tar" ]; then exit 0; fi
    ha_image_log "building $tar (cold: mmdebstrap of $pkgs)"
    t0=$(date +%s)
    # mmdebstrap picks the output format by the name: it must end in .tar.
    tmp="$HA_IMAGE_CACHE/building-$$.tar"
    # --variant=apt: essential packages + apt's dependencies; docs and man pages are
    # dropped (not needed in a container, ~30 MB); the package's own default cluster is
    # dropped (the stack makes its own PGDATA on a volume); apt sources and lists are
    # removed so the image names no mirror.
    if ! mmdebstrap --variant=apt --include="$(tr ' ' ',' <<<"$pkgs")" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='chroot "$1" sh -c "pg_dropcluster 15 main 2>/dev/null || true"' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*' \
      "$HA_IMAGE_SUITE" "$tmp" "$sources" >"$HA_IMAGE_CACHE/build.log" 2>&1; then
      rm -f "$tmp"
      ha_image_log "mmdebstrap failed; log: $HA_IMAGE_CACHE/build.log"
      tail -n 30 "$HA_IMAGE_CACHE/build.log" >&2
      exit 1
    fi
    mv "$tmp" "$tar"
    ha_image_log "cold build: $(($(date +%s) - t0)) s, $(du -m "$tar" | cut -f1) MB"
  ) 9>"$HA_IMAGE_CACHE/.lock" || return 1
  echo "$tar"
}

ha_image_import() {
  local sock=$1 tag=$2 tar
  tar=$(ha_image_tar) || return 1
  docker -H "$sock" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' "$tar" "$tag" >/dev/null
}
