#!/bin/sh
# Runs in the guest (cwd = this scenario dir) after the tracer attached and lt_guard.ko was
# loaded. What the tracer must report is in expect.
set -e
if [ ! -e /dev/lt_guard ]; then
	IFS=: read -r major minor < /sys/class/misc/lt_guard/dev
	mknod /dev/lt_guard c "$major" "$minor"
fi
./workload
