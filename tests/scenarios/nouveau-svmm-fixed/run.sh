#!/bin/sh
# Runs in the guest (cwd = this scenario dir) after the tracer attached and nouveau_svmm_fixed.ko
# was loaded by the harness.
set -e
DEV=nouveau_svmm_fixed
grep "^$DEV " /proc/modules
if [ ! -e /dev/$DEV ]; then
	# devtmpfs normally creates the node; fall back to the sysfs dev number.
	IFS=: read -r major minor < /sys/class/misc/$DEV/dev
	mknod /dev/$DEV c "$major" "$minor"
fi
./workload /dev/$DEV 4
