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
# Used at once: the tracer read kallsyms before the module came, and must name its frames
# all the same.
./workload /dev/$DEV 4
