#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/bench-ab on bench-core against itself, at a size that takes a second:
# the table it prints is complete and parses, and bad usage is refused with
# exit status 2.  No timing is asserted: a ratio is only checked to be a
# positive number.  Prints TAP.
set -u

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-.}
. "$top_srcdir/tests/tap.sh"
ab=$top_srcdir/bench/bench-ab
core=$top_builddir/bench/bench-core
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cvm-check-ab.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
small="--pairs 2000 --warmup 200 --conv-size 1G"
tab=$(printf '\t')

# status WANT COMMAND...: COMMAND exits with status WANT.
status() {
	want=$1
	shift
	"$@" >/dev/null 2>&1
	test $? = "$want"
}
lines() { grep -c -- "$1" "$2"; }

sh "$ab" --rounds 3 --only "no DMA" "$core" "$core" -- $small >"$tmp/out" 2>"$tmp/err"
rc=$?
check "bench-ab compares a build with itself and exits 0" test "$rc" = 0
check "one round line per round, with both medians and their ratio" \
	test "$(lines "^round${tab}[123]${tab}no DMA context${tab}[0-9]*${tab}[0-9]*${tab}[0-9.]*\$" "$tmp/out")" = 3
check "one ratio line: the geometric mean, the wins and how the builds ran" \
	grep -Eq "^ratio${tab}no DMA context${tab}[0-9]+\.[0-9]{3}${tab}new faster in [0-3] of 3 rounds \(run (together, CPUs swapped|in turn)\)\$" "$tmp/out"
check "the ratio is a positive number" \
	awk -F'\t' '$1 == "ratio" { exit !($3 > 0) }' "$tmp/out"
check "progress, one line a round, goes to stderr" test "$(lines 'bench-ab: round' "$tmp/err")" = 3

sh "$ab" --rounds 2 --only "model type1" "$core" "$core" -- $small >"$tmp/out2" 2>/dev/null
check "every configuration --only selects (type1 auto and per-page) gets its own ratio" \
	test "$(lines "^ratio${tab}" "$tmp/out2")" = 2

sh "$ab" --rounds 2 --replay "$core" "$core" -- --replay-size 4G --replay-rules cut >"$tmp/out3" 2>/dev/null
check "--replay compares the replay's CPU time, per pattern and rule set" \
	grep -Eq "^ratio${tab}runs 4-2,044 KiB \(mean 1 MiB\), cut${tab}[0-9]+\.[0-9]{3}${tab}new faster in [0-2] of 2 rounds" "$tmp/out3"
check "--replay's times are in ms" grep -q '^#cols round n config old_ms new_ms new/old$' "$tmp/out3"

check "--rounds 0 is refused with status 2" status 2 sh "$ab" --rounds 0 "$core" "$core"
check "a build that is not there is refused with status 2" status 2 sh "$ab" "$core" "$tmp/none"
check "one build alone is a usage error" status 2 sh "$ab" "$core"
sh "$ab" --rounds 1 --only "no such configuration" "$core" "$core" -- $small >/dev/null 2>"$tmp/err3"
rc=$?
check "a selection that matches nothing fails with status 1" test "$rc" = 1
check "... and says so" grep -q "printed no result" "$tmp/err3"
plan "$tap_n"
tap_done
