#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/bench-ab on bench-core against itself, at a size that takes a second:
# the table it prints is complete and parses, and bad usage is refused with
# exit status 2.  No timing is asserted: a ratio is only checked to be a
# positive number.  Prints TAP.
set -u

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-.}
ab=$top_srcdir/bench/bench-ab
core=$top_builddir/bench/bench-core
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cvm-check-ab.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

n=0 failed=0
ok() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		failed=1
	fi
}
small="--pairs 2000 --warmup 200 --conv-size 1G"

sh "$ab" --rounds 3 --only "no DMA" "$core" "$core" -- $small >"$tmp/out" 2>"$tmp/err"
ok $? "bench-ab compares a build with itself and exits 0"
test "$(grep -c '^round	[123]	no DMA context	[0-9][0-9]*	[0-9][0-9]*	[0-9.]*$' "$tmp/out")" = 3
ok $? "one round line per round, with both medians and their ratio"
grep -Eq '^ratio	no DMA context	[0-9]+\.[0-9]{3}	new faster in [0-3] of 3 rounds \(run (together, CPUs swapped|in turn)\)$' "$tmp/out"
ok $? "one ratio line: the geometric mean, the wins and how the builds ran"
awk -F'\t' '$1 == "ratio" { exit !($3 > 0) }' "$tmp/out"
ok $? "the ratio is a positive number"
test "$(grep -c 'bench-ab: round' "$tmp/err")" = 3
ok $? "progress, one line a round, goes to stderr"

sh "$ab" --rounds 2 --only "model type1" "$core" "$core" -- $small >"$tmp/out2" 2>/dev/null &&
	test "$(grep -c '^ratio	' "$tmp/out2")" = 2
ok $? "every configuration --only selects (type1 auto and per-page) gets its own ratio"

sh "$ab" --rounds 2 --replay "$core" "$core" -- --replay-size 4G --replay-rules cut >"$tmp/out4" 2>/dev/null &&
	grep -Eq '^ratio	runs 4 KiB-2 MiB \(mean 1 MiB\), cut	[0-9]+\.[0-9]{3}	new faster in [0-2] of 2 rounds' "$tmp/out4" &&
	head -n 1 "$tmp/out4" | grep -q 'old_ms new_ms'
ok $? "--replay compares the replay's CPU time, per pattern and rule set, in ms"

sh "$ab" --rounds 0 "$core" "$core" >/dev/null 2>&1
test $? = 2
ok $? "--rounds 0 is refused with status 2"
sh "$ab" "$core" "$tmp/none" >/dev/null 2>&1
test $? = 2
ok $? "a build that is not there is refused with status 2"
sh "$ab" "$core" >/dev/null 2>&1
test $? = 2
ok $? "one build alone is a usage error"
sh "$ab" --rounds 1 --only "no such configuration" "$core" "$core" -- $small >/dev/null 2>"$tmp/err3"
test $? = 1 && grep -q "printed no result" "$tmp/err3"
ok $? "a selection that matches nothing fails and says so"
echo "1..$n"
exit $failed
