#!/bin/sh
# Clean exit in the guest: every BPF program locktrace loaded is gone after SIGINT and
# SIGTERM (with its final report written) and after SIGKILL (nothing is pinned).
set -e
before=$(./workload progs | wc -l)
echo "clean-exit: $before BPF programs loaded before tracing"
for sig in INT TERM KILL; do
	# shellcheck disable=SC2086
	/bin/lt-spawn /locktrace trace --kernel $TRACER_ARGS --report-json /tmp/report-$sig.json > /dev/null 2> /tmp/lt-$sig.log &
	pid=$!
	t=0
	until grep -q '^locktrace: attached' /tmp/lt-$sig.log; do
		[ -e /proc/$pid ] || { echo "clean-exit: tracer died"; cat /tmp/lt-$sig.log; exit 1; }
		[ $t -lt 600 ] || { echo "clean-exit: tracer did not attach"; exit 1; }
		sleep 0.2; t=$((t + 1))
	done
	during=$(./workload progs | wc -l)
	kill -$sig $pid
	status=0
	wait $pid || status=$?
	after=$(./workload progs | wc -l)
	echo "clean-exit: SIG$sig: $during programs while tracing, $after after (tracer exit status $status)"
	[ "$during" -gt "$before" ] || { echo "clean-exit: FAIL: no program loaded while tracing"; exit 1; }
	[ "$after" -eq "$before" ] || { echo "clean-exit: FAIL: programs left after SIG$sig:"; ./workload progs; exit 1; }
	if [ $sig != KILL ]; then
		[ $status -eq 0 ] || { echo "clean-exit: FAIL: exit status $status after SIG$sig"; exit 1; }
		grep -q 'locktrace: detached' /tmp/lt-$sig.log || { echo "clean-exit: FAIL: no detach line"; exit 1; }
		[ -s /tmp/report-$sig.json ] || { echo "clean-exit: FAIL: no final report after SIG$sig"; exit 1; }
	fi
done
echo "clean-exit: ok"
