#!/bin/sh
# armada: dpkg post-invoke hook (/etc/dpkg/dpkg.cfg.d/armada-docker-apparmor). The image
# ships Docker's docker-default AppArmor profile, rendered at build time from its dockerd
# and precompiled, so dockerd finds it loaded at boot and compiles nothing. Once the
# package it was made from changes version (or goes), this removes the profile and its
# cache entry: the board then behaves as a stock one (the loaded profile stays until the
# next boot, where the new dockerd renders and loads its own). Never fails dpkg.
# ARMADA_ROOT and ARMADA_DPKG_QUERY exist for tests.
root=${ARMADA_ROOT:-}
dpkg_query=${ARMADA_DPKG_QUERY:-dpkg-query}
f=$root/etc/apparmor.d/docker-default
[ -f "$f" ] || exit 0
set -- $(sed -n 's/^# armada-made-from: //p' "$f")
[ $# -eq 2 ] || exit 0
now=$("$dpkg_query" -W -f='${Status} ${Version}' "$1" 2>/dev/null)
case $now in
  *" installed $2") exit 0 ;;
esac
rm -f "$f" "$root"/var/cache/apparmor/*/docker-default
echo "armada: $1 is no longer $2: removed the docker-default profile made from it (dockerd makes its own at its next start)" >&2
exit 0
