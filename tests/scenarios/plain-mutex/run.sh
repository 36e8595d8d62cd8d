#!/bin/sh
# Runs in the guest (cwd = this scenario dir) after the tracer attached and
# lt_plain.ko was loaded.
set -e
if [ ! -e /dev/lt_plain ]; then
	# devtmpfs normally creates the node; fall back to the sysfs dev number.
	IFS=: read -r major minor < /sys/class/misc/lt_plain/dev
	mknod /dev/lt_plain c "$major" "$minor"
fi
./workload 3
# Steady state: 130000 more rounds are over 10^6 mutex operations, yet only the few new
# dependencies may cross the ring buffer (expect: min-events, max-records).
./workload 130000
