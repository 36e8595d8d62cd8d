#!/bin/sh
# `--module` needs the module loaded before the tracer starts (its text range is read at
# load time), but the harness loads kmod/ after its own tracer attached. So this scenario
# starts a second tracer, filtered with `--module lt_mmu`, runs the mmu-notifier workload
# under it, and checks its report: the nouveau-shaped cycle is still found, and the
# dependencies made only by core kernel code (pipes, seq_file, inode locks of the shell's
# activity) are gone. (&mm->mmap_lock edges stay: mmu_notifier_register(), called by the
# module, takes fs_reclaim/the notifier pseudo-lock under it.) The second tracer runs in the
# attach mode under test ($TRACER_ARGS, from the harness) and must exit 0.
set -e
if [ ! -e /dev/lt_mmu ]; then
	IFS=: read -r major minor < /sys/class/misc/lt_mmu/dev
	mknod /dev/lt_mmu c "$major" "$minor"
fi
# shellcheck disable=SC2086 # TRACER_ARGS is a list of options
/locktrace trace --kernel $TRACER_ARGS --module lt_mmu --report-json /tmp/module.json \
	--report-text /tmp/module.txt 2>/tmp/module.log &
tracer=$!
i=0
until grep -q 'locktrace: attached' /tmp/module.log; do
	i=$((i + 1))
	if [ $i -gt 120 ] || ! kill -0 $tracer 2>/dev/null; then
		echo "module-filter: second tracer did not attach"; cat /tmp/module.log; exit 1
	fi
	sleep 1
done
./workload
sleep 2
kill -INT $tracer
status=0
wait $tracer || status=$?
if [ "$status" -ne 0 ]; then
	echo "module-filter: FAIL: the filtered tracer ($TRACER_ARGS) exited with $status"
	cat /tmp/module.log
	exit 1
fi
# shellcheck disable=SC2086 # word splitting collapses the harness's spacing
echo "module-filter: filtered tracer ran with:" $TRACER_ARGS
grep -v 'not attached' /tmp/module.log || true
edges=$(grep -o '"from"' /tmp/module.json | wc -l)
echo "module-filter: $edges edge entries with --module lt_mmu"
cat /tmp/module.txt
for core in '&pipe->mutex' '&p->lock' '&inode->i_rwsem' '&f->f_pos_lock'; do
	if grep -qF "\"$core\"" /tmp/module.json; then
		echo "module-filter: FAIL: $core (core kernel code only) passed the filter"
		exit 1
	fi
done
grep -q 'svmm->mutex' /tmp/module.txt || { echo "module-filter: FAIL: no &svmm->mutex cycle"; exit 1; }
echo "module-filter: ok"
