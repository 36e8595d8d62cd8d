#!/bin/sh
# A real kernel deadlock (two tasks, ABBA on two mutexes) plus a task blocked behind it.
# The workload never returns; run.sh leaves it stuck, asks `locktrace held` for the
# picture (it reads the running trace's state) and exits. The harness then stops the
# tracer, whose report must name the deadlock too, and powers off.
if [ ! -e /dev/lt_deadlock ]; then
	IFS=: read -r major minor < /sys/class/misc/lt_deadlock/dev
	mknod /dev/lt_deadlock c "$major" "$minor"
fi
./workload &
sleep 6
# Exit code 3: a deadlock in progress.
/locktrace held --json > /out/held.json
echo "held exit status $?"
/locktrace held > /out/held.txt
cat /out/held.txt
exit 0
