#!/bin/sh
# armada first boot (armada-firstboot.service). Each step is idempotent; the unit runs
# until /var/lib/armada/firstboot.done exists.
set -u
log() { echo "armada-firstboot: $*"; }

# 1. Grow the root partition to the card, then its filesystem.
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

# 2. machine-id: systemd made one at this boot (the image's is empty); keep it.
systemd-machine-id-setup --commit >/dev/null 2>&1 || true

# 3. ssh host keys of this board.
ssh-keygen -A

# 4. Docker engine key: never baked into the image, each board makes its own.
rm -f /etc/docker/key.json

# 5. armada.toml: the agent moves the secrets `armada flash` left on the FAT (the
#    bootstrap token, a manager's armada-cluster.toml) into 0600 files and deletes them
#    from the FAT, then applies the hostname and ssh authorized keys.
cfg=
for c in /boot/firmware/armada.toml /boot/armada.toml; do
  if [ -f "$c" ]; then cfg=$c; break; fi
done
if [ -n "$cfg" ]; then
  /usr/local/bin/armada-agent firstboot --config "$cfg" || log "armada-agent firstboot failed (the agent retries at start)"
else
  log "no armada.toml on the boot partition"
fi

mkdir -p /var/lib/armada
touch /var/lib/armada/firstboot.done
log "done"
