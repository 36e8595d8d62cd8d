#!/bin/busybox sh
# /init of the locktrace VM test bed (see xtask/src/vm/mod.rs and tests/scenarios/README.md).
# Console protocol (ttyS0): every harness line starts with "lt-init: ".
#   lt-init: uname-r <release>
#   lt-init: FAIL <reason>          the harness could not do its job (tracer did not start, ...)
#   lt-init: done                   results were written to ttyS1, powering off
# Results go to ttyS1 (a file on the host), never mixed with kernel messages:
#   LT-FILE <name>\n<base64 lines>\nLT-EOF <name>\n ... LT-RESULTS-END\n
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "lt-init: $*" > /dev/console; }

mkdir -p /proc /sys /dev /tmp /out /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
[ -d /sys/kernel/debug/tracing ] && [ ! -e /sys/kernel/tracing/trace ] && \
	mount -t tracefs tracefs /sys/kernel/debug/tracing 2>/dev/null

arg() { # value of lt.$1= on the kernel command line
	for w in $(cat /proc/cmdline); do
		case "$w" in "lt.$1="*) echo "${w#lt.$1=}"; return;; esac
	done
}
uptime_s() { read -r up _ < /proc/uptime; echo "${up%.*}"; }
# alive PID: the process exists and is not a zombie
alive() { [ -e "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z ' "/proc/$1/stat" 2>/dev/null; }

DEADLINE=$(arg deadline); DEADLINE=${DEADLINE:-240}
ATTACH_TIMEOUT=$(arg attach_timeout); ATTACH_TIMEOUT=${ATTACH_TIMEOUT:-60}
STOP_TIMEOUT=$(arg stop_timeout); STOP_TIMEOUT=${STOP_TIMEOUT:-90}

say "uname-r $(uname -r)"

send_results() {
	R=/dev/ttyS1
	stty -F $R raw -echo 2>/dev/null
	{
		for f in /out/*; do
			[ -f "$f" ] || continue
			n=${f#/out/}
			echo "LT-FILE $n"
			base64 "$f"
			echo "LT-EOF $n"
		done
		echo "LT-RESULTS-END"
	} > $R
	sleep 1
}

finish() {
	send_results
	say "done"
	sync
	poweroff -f
	sleep 5
}

fail() {
	say "FAIL $*"
	echo "$*" > /out/harness.error
	finish
}

# The scenario's and the command line's tracer arguments; exported for run.sh of a
# no-tracer scenario, which starts its own tracers.
TRACER_ARGS=""
[ -f /scenario/tracer-args ] && TRACER_ARGS=$(head -n 1 /scenario/tracer-args)
[ -f /lt/tracer-args ] && TRACER_ARGS="$TRACER_ARGS $(cat /lt/tracer-args)"
export TRACER_ARGS

# On the lockdep kernel lockdep is the observer: no tracer runs, and lockdep's state is
# collected after run.sh.
LOCKDEP_MODE=""
[ -f /lt/lockdep-mode ] && LOCKDEP_MODE=1
NO_TRACER=""
[ -f /scenario/no-tracer ] || [ -n "$LOCKDEP_MODE" ] && NO_TRACER=1

# 1. start the tracer (unless the scenario runs tracers itself: a `no-tracer` file)
if [ -n "$LOCKDEP_MODE" ]; then
	say "lockdep kernel: lockdep observes, no tracer"
	[ -e /proc/lockdep ] || fail "/proc/lockdep missing: not a lockdep kernel"
elif [ -f /scenario/no-tracer ]; then
	say "no-tracer scenario: run.sh starts what it measures"
else
	# 1. start the tracer; stderr -> /out/tracer.log, echoed to the console; stdout -> /out/tracer.stdout
	: > /out/tracer.log
	mkfifo /tmp/tracer.fifo
	tee /out/tracer.log < /tmp/tracer.fifo > /dev/console &
	say "starting: /locktrace trace --report-json /out/report.json --report-text /out/report.txt --dot /out/graph.dot $TRACER_ARGS"
	# shellcheck disable=SC2086
	/bin/lt-spawn /locktrace trace --report-json /out/report.json --report-text /out/report.txt \
		--dot /out/graph.dot $TRACER_ARGS > /out/tracer.stdout 2> /tmp/tracer.fifo &
	TPID=$!

	t=0
	while ! grep -q '^locktrace: attached' /out/tracer.log; do
		if ! alive $TPID; then
			wait $TPID; rc=$?
			echo "exited before attaching: status $rc" > /out/tracer.status
			fail "tracer exited (status $rc) before printing 'locktrace: attached'"
		fi
		if [ $t -ge $((ATTACH_TIMEOUT * 5)) ]; then
			kill -KILL $TPID 2>/dev/null
			echo "killed: no 'locktrace: attached' within ${ATTACH_TIMEOUT}s" > /out/tracer.status
			fail "tracer did not print 'locktrace: attached' within ${ATTACH_TIMEOUT}s"
		fi
		sleep 0.2; t=$((t + 1))
	done
	say "tracer attached (pid $TPID)"
fi

# lockdep's graph holds everything since boot: what it had before the scenario is set apart
[ -n "$LOCKDEP_MODE" ] && cat /proc/lockdep > /out/lockdep-before.txt

# 2. load the scenario's modules
for ko in /scenario/kmod/*.ko; do
	[ -f "$ko" ] || continue
	say "insmod $ko"
	insmod "$ko" || fail "insmod $ko failed"
done

# 3. run.sh (bounded: it may block forever, e.g. in a deadlock scenario)
say "running run.sh"
# written whole then renamed: the loop below must never see it created but empty
( cd /scenario && /bin/sh ./run.sh > /dev/console 2>&1; echo $? > /tmp/run.rc; mv /tmp/run.rc /tmp/run.status ) &
while [ ! -f /tmp/run.status ]; do
	if [ "$(uptime_s)" -ge "$DEADLINE" ]; then
		say "run.sh still running at uptime ${DEADLINE}s; continuing without it (status 124)"
		echo 124 > /tmp/run.status
		break
	fi
	sleep 0.5
done
cp /tmp/run.status /out/run.status
say "run.sh exit status $(cat /out/run.status)"

# 4. stop the tracer, or collect lockdep's state: its graph, chains and statistics, and the
#    kinds of its classes (lt_lockdep_classes.ko)
if [ -n "$LOCKDEP_MODE" ]; then
	insmod /lt/lt_lockdep_classes.ko || fail "insmod lt_lockdep_classes.ko failed"
	cat /proc/lockdep > /out/lockdep.txt
	cat /proc/lockdep_chains > /out/lockdep_chains.txt
	cat /proc/lockdep_stats > /out/lockdep_stats.txt
	cat /proc/lt_lockdep_classes > /out/lockdep_classes.txt
	dmesg > /out/dmesg.txt
	say "lockdep state collected: $(wc -l < /out/lockdep.txt) lines of /proc/lockdep, $(grep -c . /out/lockdep_classes.txt) classes, $(grep 'debug_locks:' /out/lockdep_stats.txt | tr -s ' ')"
elif [ -z "$NO_TRACER" ]; then
	if alive $TPID; then
		kill -INT $TPID
		t=0
		while alive $TPID && [ $t -lt $((STOP_TIMEOUT * 5)) ]; do sleep 0.2; t=$((t + 1)); done
		if alive $TPID; then
			say "tracer did not exit within ${STOP_TIMEOUT}s of SIGINT; sending SIGKILL"
			kill -KILL $TPID
			echo "SIGKILL after ${STOP_TIMEOUT}s" > /out/tracer.status
		else
			wait $TPID; rc=$?
			echo "$rc" > /out/tracer.status
			say "tracer exited with status $rc"
		fi
	else
		wait $TPID; rc=$?
		echo "exited before SIGINT: status $rc" > /out/tracer.status
		say "tracer exited on its own before SIGINT (status $rc)"
	fi
fi
sleep 0.2
finish
