#!/bin/sh
# SPDX-License-Identifier: MIT
# bench/bench-ab on bench-core against itself, at a size that takes a second:
# the table it prints is complete and parses, and bad usage is refused with
# exit status 2.  No timing is asserted: a real ratio is only checked to be a
# positive number; the arithmetic (which median, which way the ratio goes,
# the geometric mean, the replay's CPU column) is checked on stand-in builds
# that print known results.  Prints TAP.
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

# Stand-in builds with known results: the arithmetic of the table.  OLD's
# conversion median is 200 ns (p99 999); NEW's is 100 then 400 (ratios 0.5
# and 2: geometric mean 1, arithmetic 1.25; NEW wins one round).  Replays:
# OLD 50 ms of CPU, NEW 25 (both 999 ms of wall time).
cat >"$tmp/old" <<'EOF'
#!/bin/sh
d=$(dirname "$0")
case $(basename "$0") in
old) med=200 cpu=50.000 ;;
*) n=$(cat "$d/count"); echo $((n + 1)) >"$d/count"
	if [ "$n" = 0 ]; then med=100; else med=400; fi
	cpu=25.000 ;;
esac
if [ "$1" = --no-conv ]; then
	printf 'replay\tpat\tcut\tauto\t1\t1.0\t1\t1\t999.000\t%s\t1\t1.0\tok\t1\t%s\t%s\t999.000\n' \
		"$cpu" "$cpu" "$cpu"
else
	printf 'conv\tcfg\t10\t%s\t999\t999\t999\t1\t1\t1\t1\t1\t1\n' "$med"
fi
EOF
chmod +x "$tmp/old"
cp "$tmp/old" "$tmp/new"
echo 0 >"$tmp/count"
sh "$ab" --rounds 2 "$tmp/old" "$tmp/new" >"$tmp/fk" 2>/dev/null
check "each round's ratio is NEW's median over OLD's (not the p99)" \
	test "$(awk -F'\t' '$1 == "round" { printf "%s/%s/%s ", $4, $5, $6 }' "$tmp/fk")" = \
	"200/100/0.500 200/400/2.000 "
check "the verdict is the geometric mean of the rounds' ratios, with NEW's wins" \
	grep -q "^ratio${tab}cfg${tab}1.000${tab}new faster in 1 of 2 rounds" "$tmp/fk"
sh "$ab" --rounds 2 --replay "$tmp/old" "$tmp/new" >"$tmp/fk2" 2>/dev/null
check "--replay compares CPU time (not wall time): NEW at half of OLD's" \
	grep -q "^ratio${tab}pat, cut${tab}0.500${tab}new faster in 2 of 2 rounds" "$tmp/fk2"

check "--rounds 0 is refused with status 2" status 2 sh "$ab" --rounds 0 "$core" "$core"
check "a build that is not there is refused with status 2" status 2 sh "$ab" "$core" "$tmp/none"
check "one build alone is a usage error" status 2 sh "$ab" "$core"
sh "$ab" --rounds 1 --only "no such configuration" "$core" "$core" -- $small >/dev/null 2>"$tmp/err3"
rc=$?
check "a selection that matches nothing fails with status 1" test "$rc" = 1
check "... and says so" grep -q "printed no result" "$tmp/err3"
plan "$tap_n"
tap_done
