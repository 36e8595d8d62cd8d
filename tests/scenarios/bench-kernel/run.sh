#!/bin/sh
# Benchmark (run by `cargo xtask bench`): the same workload with no tracer, with locktrace
# (kernel mode: unbudgeted, `--max-overhead off`, and with its default budget), with empty
# programs on the same hooks (`locktrace bench-hooks --kernel`: the floor) and with
# klockstat, in alternating rounds. One line per measurement goes to /out/bench.txt:
# `round=R mode=M ops_per_s=N`.
ROUNDS=${ROUNDS:-3}
# Per-program run counts and times, for the profile (off by default in the kernel).
echo 1 > /proc/sys/kernel/bpf_stats_enabled
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
BUDGET_WARMUP_S=${BUDGET_WARMUP_S:-20}
: > /out/bench.txt

measure() { # mode
	ops=$(./workload 2 "$SECONDS_PER_RUN" | sed -n 's/^ops_per_s=//p')
	echo "round=$r mode=$1 ops_per_s=$ops" | tee -a /out/bench.txt
}

wait_for() { # file pattern pid
	t=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		[ -e "/proc/$3" ] || { echo "bench: tracer died:"; cat "$1"; exit 1; }
		[ $t -ge 900 ] && { echo "bench: tracer did not attach"; cat "$1"; exit 1; }
		sleep 0.2; t=$((t + 1))
	done
}

links() { # pid: BPF links (attached programs) the process holds
	grep -l '^link_type:' /proc/$1/fdinfo/* 2>/dev/null | wc -l
}

wait_for_links() { # pid: until its attached programs stop growing (klockstat buffers its
	# "Tracing..." line when stdout is not a terminal, so its output cannot tell)
	last=-1; t=0
	while :; do
		[ -e "/proc/$1" ] || { echo "bench: klockstat died:"; cat /tmp/klockstat.out; exit 1; }
		n=$(links $1)
		[ "$n" -gt 0 ] && [ "$n" -eq "$last" ] && return 0
		[ $t -ge 300 ] && { echo "bench: klockstat did not attach"; exit 1; }
		last=$n; sleep 1; t=$((t + 1))
	done
}

traced() { # mode [trace options]: one measurement under `locktrace trace`
	mode=$1; shift
	# Gone before the spawn: the redirection below truncates it only once the child runs,
	# and wait_for must not find the previous run's "attached" line.
	rm -f /tmp/lt.log
	/bin/lt-spawn /locktrace trace "$@" --report-json /out/$mode-round$r.json > /dev/null 2> /tmp/lt.log &
	pid=$!
	wait_for /tmp/lt.log '^locktrace: attached' $pid
	# A budget acts on sustained load, a step per 2 s over it: measured once it has settled.
	[ "$mode" = locktrace-budget ] && ./workload 2 "$BUDGET_WARMUP_S" > /dev/null
	measure $mode
	./workload progs > /out/profile-$mode-round$r.txt
	kill -INT $pid; wait $pid
	grep -E 'detached|overhead budget' /tmp/lt.log | sed "s/^/$mode: /" | tee -a /out/bench.txt
}

r=1
while [ $r -le "$ROUNDS" ]; do
	measure none

	traced locktrace --max-overhead off
	traced locktrace-budget
	# Gone before each spawn, as in `traced`.
	rm -f /tmp/lt.log
	/bin/lt-spawn /locktrace bench-hooks --kernel > /dev/null 2> /tmp/lt.log &
	pid=$!
	wait_for /tmp/lt.log '^locktrace: attached' $pid
	measure empty-hooks
	kill -INT $pid; wait $pid

	/bin/lt-spawn /usr/sbin/klockstat > /tmp/klockstat.out 2>&1 &
	pid=$!
	wait_for_links $pid
	measure klockstat
	./workload progs > /out/profile-klockstat-round$r.txt
	kill -INT $pid; wait $pid
	r=$((r + 1))
done
