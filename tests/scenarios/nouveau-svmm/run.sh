#!/bin/sh
# Runs in the guest (cwd = this scenario dir) after the tracer attached and the module was
# loaded by the harness. Shared (symlinked) by nouveau-svmm-fixed: the device is named after
# the module, nouveau_svmm or nouveau_svmm_fixed.
set -e
DEV=$(basename "$(ls kmod/*.ko | head -n 1)" .ko)
grep "^$DEV " /proc/modules
if [ ! -e /dev/$DEV ]; then
	# devtmpfs normally creates the node; fall back to the sysfs dev number.
	IFS=: read -r major minor < /sys/class/misc/$DEV/dev
	mknod /dev/$DEV c "$major" "$minor"
fi
# Once, on Debian 6.1 under a loaded host, the first stacks taken ~0.2 s after insmod came back
# without the module's frames (the kernel unwinder; later stacks in the same boot were whole).
# The module has just been loaded: give it a moment, as a driver is not used that soon.
sleep 1
./workload /dev/$DEV 4
