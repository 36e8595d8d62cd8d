#!/bin/sh
# Runs in the guest (cwd = this scenario dir) after the tracer attached and lt_rules.ko was
# loaded: every case of the rule table (lockdep-rules.txt, a link to
# lockgraph/tests/data/lockdep-rules.txt) run by this task through /dev/lt_rules as
# "N step; step; …" (N: the case's number in the table). Cases with `lockfail` need a second
# task holding the lock: the semantics scenario's interrupted mutex covers that rule.
set -e
if [ ! -e /dev/lt_rules ]; then
	IFS=: read -r major minor < /sys/class/misc/lt_rules/dev
	mknod /dev/lt_rules c "$major" "$minor"
fi
awk '
	function flush() { if (steps != "" && !fail) print n " " steps }
	/^case / { flush(); n++; steps = ""; fail = 0; next }
	/^[ \t]*(lock|rlock|trylock|rtrylock|iolock|lockfail|unlock) / {
		sub(/^[ \t]+/, "")
		steps = steps (steps == "" ? "" : "; ") $0
		if ($0 ~ /lockfail/) fail = 1
	}
	END { flush() }
' lockdep-rules.txt > /tmp/rule-cases
cases=0
while read -r line; do
	printf '%s' "$line" > /dev/lt_rules || { echo "rules: case failed: $line"; exit 1; }
	cases=$((cases + 1))
done < /tmp/rule-cases
echo "rules: $cases cases run"
[ "$cases" -ge 10 ]
