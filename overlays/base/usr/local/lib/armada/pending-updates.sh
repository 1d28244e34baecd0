#!/bin/sh
# armada: lists the held-back packages (docker.io, containerd, runc, the kernel) that have
# an update waiting, one "package version" per line, in /var/lib/armada/pending-updates
# (armada-pending-updates.service). unattended-upgrades leaves them for a drained
# rollout; the agent exports the list. The package lists are apt-daily's: this only
# simulates (apt-get -s), it installs nothing and takes no lock.
# ARMADA_PENDING_FILE and ARMADA_APT_GET exist for tests.
set -eu
out=${ARMADA_PENDING_FILE:-/var/lib/armada/pending-updates}
apt_get=${ARMADA_APT_GET:-apt-get}
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# "Inst NAME [OLD] (NEW SUITE [ARCH])" per package upgraded or newly pulled in (a new
# kernel ABI comes as a new linux-image-* package).
LC_ALL=C "$apt_get" -s -o Debug::NoLocking=1 dist-upgrade | awk '
  $1 == "Inst" && ($2 ~ /^(docker\.io|containerd|runc)$/ || $2 ~ /^linux-image-/) {
    for (i = 3; i <= NF; i++) if (substr($i, 1, 1) == "(") { print $2, substr($i, 2); break }
  }' > "$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$out"
