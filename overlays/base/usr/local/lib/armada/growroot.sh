#!/bin/sh
# armada-growroot.service, once per card: grows the root partition to the card, then
# its filesystem (online: ext4 grows while mounted and in use). A unit of its own, off
# the join path: nothing the node needs to register and join waits for it.
set -u
log() { echo "armada-growroot: $*"; }

root_dev=$(findmnt -no SOURCE /)
root_dev=$(readlink -f "$root_dev")
name=$(basename "$root_dev")
if [ -r "/sys/class/block/$name/partition" ]; then
  part=$(cat "/sys/class/block/$name/partition")
  disk="/dev/$(basename "$(readlink -f "/sys/class/block/$name/..")")"
  if growpart "$disk" "$part"; then
    log "grew $disk partition $part"
  else
    log "partition $part of $disk not grown (already full size?)"
  fi
  resize2fs "$root_dev" || log "resize2fs $root_dev failed"
else
  log "cannot find the partition behind $root_dev; not growing"
fi
mkdir -p /var/lib/armada
touch /var/lib/armada/growroot.done
log "done"
