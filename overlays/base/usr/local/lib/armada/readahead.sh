#!/bin/sh
# armada-readahead.service: reads the programs the join path starts into the page cache
# from early boot, while the boot is busy with CPU (udev's coldplug, AppArmor, units)
# and the card is mostly idle. Under qemu's raspi3b the SD card reads at a few MB/s, and
# containerd (38 MB) and dockerd (69 MB) spent ~28 s each faulting their pages in
# before their first log line; on a Pi's card it is a few seconds. In the order they
# start: the agent (first boot, clock sync), containerd, dockerd, runc and the shim.
# Missing files are skipped (a manager image adds the manager).
for f in /usr/local/bin/armada-agent /usr/bin/containerd /usr/local/bin/armada-manager \
  /usr/sbin/dockerd /usr/sbin/runc /usr/bin/containerd-shim-runc-v2 /usr/sbin/docker-proxy; do
  [ -f "$f" ] && cat "$f"
done >/dev/null
exit 0
