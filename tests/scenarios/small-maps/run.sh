#!/bin/sh
# Runs in the guest under a tracer whose bounded maps are made small (tracer-args): more lock
# instances initialised (every new inode's rwsems), more classes named and more tasks holding
# locks at once (40 sleeping shells) than they hold. What they evict must be counted.
set -e
mkdir -p /tmp/small-maps
i=0
while [ $i -lt 300 ]; do
	echo $i > /tmp/small-maps/f$i
	i=$((i + 1))
done
pids=""
i=0
while [ $i -lt 40 ]; do
	sh -c 'cat /proc/self/stat > /dev/null; sleep 3' &
	pids="$pids $!"
	i=$((i + 1))
done
# shellcheck disable=SC2086
wait $pids
rm -r /tmp/small-maps
echo "small-maps: done"
