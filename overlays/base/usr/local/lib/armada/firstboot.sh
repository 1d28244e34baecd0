#!/bin/sh
# armada boot settings (armada-firstboot.service), run at every boot. Steps 2-4 run
# once per card (until /var/lib/armada/firstboot.done exists); step 5 at every boot.
# Each step is idempotent.
set -u
log() { echo "armada-firstboot: $*"; }

if [ ! -e /var/lib/armada/firstboot.done ]; then

# 1. The root partition and filesystem grow in armada-growroot.service (ordered before
#    nothing: online growth needs no one to wait).

# 2. machine-id: systemd made one at this boot (the image's is empty); keep it.
systemd-machine-id-setup --commit >/dev/null 2>&1 || true

# 3. ssh host keys of this board: armada-ssh-keys.service (ordered before ssh only, so
#    the RSA key's seconds are off Docker's and the agent's path).

# 4. Docker engine key: never baked into the image, each board makes its own.
rm -f /etc/docker/key.json
mkdir -p /var/lib/armada
touch /var/lib/armada/firstboot.done
log "first boot done"
fi

# 5. armada.toml, every boot: the agent moves the secrets `armada flash` left on the
#    FAT (the bootstrap token, a manager's armada-cluster.toml, the Wi-Fi secret) into
#    0600 files and deletes them from the FAT; then, if the file changed since the boot
#    that last applied it, applies hostname, ssh keys, Wi-Fi, time zone and static
#    address, and logs each change (also shown by `armada-agent status`).
cfg=
for c in /boot/firmware/armada.toml /boot/armada.toml; do
  if [ -f "$c" ]; then cfg=$c; break; fi
done
if [ -n "$cfg" ]; then
  /usr/local/bin/armada-agent firstboot --config "$cfg" 2>&1 | sed 's/^/armada-firstboot: /' || true
else
  log "no armada.toml on the boot partition"
fi
log "done"
