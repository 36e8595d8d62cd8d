#!/bin/sh
# Runs in the guest (cwd = this scenario dir) after the tracer attached and lt_sem.ko was
# loaded. The dependencies the tracer must report are listed in expect.
set -e
if [ ! -e /dev/lt_sem ]; then
	IFS=: read -r major minor < /sys/class/misc/lt_sem/dev
	mknod /dev/lt_sem c "$major" "$minor"
fi
./workload
