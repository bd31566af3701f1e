#!/bin/sh
# SPDX-License-Identifier: MIT
# cvmdma-tracegen and cvmdma-replay do what their man pages promise, on the
# MODEL backend: deterministic traces, every workload replays cleanly, exact
# mapping counts on a known trace, JSON that parses, bad traces rejected with
# the line and nothing applied, refusals reported per policy; and the
# minimal VMM example runs.
. "$top_srcdir/tests/tap.sh"
gen=$top_builddir/tools/cvmdma-tracegen
rep=$top_builddir/tools/cvmdma-replay
example=$top_builddir/examples/minimal-vmm
data=$top_srcdir/tests/data
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
workloads="tdx-boot snp-boot lazy-accept churn adversarial"


have_py=no
command -v python3 >/dev/null 2>&1 && have_py=yes

# fields FILE POLICY FIELD...: the policy's result fields, joined by '/'.
fields() {
	python3 - "$@" <<'PY'
import json, sys
f, pol, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
r = [r for r in json.load(open(f))['results'] if r['policy'] == pol][0]
print('/'.join(str(r['vs_per_page'][k[3:]] if k.startswith('vs_') else r[k]) for k in keys))
PY
}

# ---- tracegen determinism ----
same=yes differ=yes
for w in $workloads; do
	a=$("$gen" "$w" --guest-size 4G --seed 7 | sha256sum)
	b=$("$gen" "$w" --guest-size 4G --seed 7 | sha256sum)
	c=$("$gen" "$w" --guest-size 4G --seed 8 | sha256sum)
	[ "$a" = "$b" ] || same="no ($w)"
	[ "$a" != "$c" ] || differ="no ($w)"
done
check "tracegen: same workload and seed give byte-identical traces: $same" test "$same" = yes
check "tracegen: a different seed gives a different trace: $differ" test "$differ" = yes
"$gen" churn --guest-size 4G --seed 7 -o "$tmp/churn-o.trace"
check "tracegen: -o FILE writes what stdout gets" \
	sh -c '"$1" churn --guest-size 4G --seed 7 | cmp -s - "$2"' sh "$gen" "$tmp/churn-o.trace"
# Runs as another user (65534) need root, setpriv(1), and the tools and
# $tmp within that user's reach (a checkout under a closed home is not).
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
as_nobody="needs root and setpriv(1) to run as another user"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then
	chmod 755 "$tmp"
	if nobody "$gen" --version >/dev/null 2>&1 && nobody test -x "$tmp"; then
		as_nobody=
	else
		as_nobody="user 65534 cannot run $gen or reach $tmp (a directory above is closed)"
	fi
fi

# A FILE the user may not write is not replaced, though its directory
# would let the user put a new file in its place.
if [ -n "$as_nobody" ]; then
	skip "tracegen: -o FILE the user may not write is refused, FILE kept" "$as_nobody"
else
	mkdir "$tmp/open" && chmod 777 "$tmp/open" && echo old >"$tmp/open/f" &&
		chmod 644 "$tmp/open/f"
	check "tracegen: -o FILE the user may not write is refused, FILE kept" \
		sh -c 'setpriv --reuid=65534 --regid=65534 --clear-groups \
			"$1" churn -o "$2" 2>"$3.err"; test $? -eq 2 &&
			grep -q "Permission denied" "$3.err" && test "$(cat "$2")" = old' \
		sh "$gen" "$tmp/open/f" "$tmp/open"
fi
check "tracegen: an unknown workload is refused with exit 2" \
	sh -c '"$1" no-such-workload >/dev/null 2>&1; test $? -eq 2' sh "$gen"
# usage_refused WHAT MESSAGE ARG...: tracegen ARG... exits 2 with MESSAGE
# on standard error and not a byte on standard output.
usage_refused() {
	d=$1 m=$2; shift 2
	check "tracegen: $d is refused (exit 2): $m" \
		sh -c 'm=$1 e=$2; shift 2; "$@" >"$e.out" 2>"$e"; test $? -eq 2 &&
		grep -qF -- "$m" "$e" && ! test -s "$e.out" || { cat "$e"; exit 1; }' \
		sh "$m" "$tmp/usage.err" "$gen" "$@"
}
usage_refused "a guest size that is not a multiple of 2M" "a multiple of 2M" \
	tdx-boot --guest-size 1001M
usage_refused "a guest size below 256M" "at least 256M" tdx-boot --guest-size 254M
usage_refused "a guest size above 16T" "limited to 16T" tdx-boot --guest-size $(((16 << 20) + 2))M
check "tracegen: the guest sizes at the bounds, 256M and 16T, are taken" \
	sh -c '"$1" tdx-boot --guest-size 256M --ops 0 >/dev/null &&
	"$1" lazy-accept --guest-size 16T --ops 1 >/dev/null' sh "$gen"
usage_refused "lazy-accept --ops above the guest's 2 MiB units" \
	"--ops 129 is more than the 128 2 MiB units of the guest" \
	lazy-accept --guest-size 256M --ops 129
usage_refused "lazy-accept --exit-max" "not to lazy-accept" lazy-accept --exit-max 2M
usage_refused "an --exit-max that is no multiple of 4K" "a multiple of 4K" churn --exit-max 6K
usage_refused "a second WORKLOAD" "one WORKLOAD only ('churn' is extra)" tdx-boot churn
usage_refused "an --initial that is neither shared nor private" \
	"--initial must be shared or private" churn --initial Shared
check "tracegen: tdx-boot on 64G has 2 regions and a 1 GiB swiotlb" \
	sh -c '"$1" tdx-boot --ops 0 | grep -c "^region" | grep -qx 2 &&
	       "$1" tdx-boot --ops 0 | grep -q "^# swiotlb: 1.0 GiB"' sh "$gen"

# ---- every workload replays cleanly under the default comparison ----
for w in $workloads; do
	"$gen" "$w" --guest-size 3G --ops 300 -o "$tmp/$w.trace"
	check "replay: $w (3 GiB) replays under per-page, auto, unbounded with mapped == shared" \
		sh -c '"$1" --compare --entry-limit none -q "$2" >"$3" 2>&1 &&
		       test $(grep -cE "^(per-page|auto|unbounded) +[^ ]+ +ok " "$3") -eq 3 || {
		       cat "$3"; false; }' sh "$rep" "$tmp/$w.trace" "$tmp/$w.out"
done

# ---- exact counts ----
if [ $have_py = yes ]; then
	"$rep" --compare=unbounded,granule=2M,per-page --json -q "$data/share-64m.trace" \
		>"$tmp/share.json"
	check "replay: --json output is valid JSON" python3 -m json.tool "$tmp/share.json"
	check "replay: a 64 MiB share under unbounded is 1 mapping, 1 map call" \
		test "$(fields "$tmp/share.json" unbounded live_mappings map_calls)" = 1/1
	check "replay: a 64 MiB share under granule=2M is 32 mappings" \
		test "$(fields "$tmp/share.json" granule=2M live_mappings)" = 32
	check "replay: a 64 MiB share under per-page is 16384 mappings" \
		test "$(fields "$tmp/share.json" per-page live_mappings)" = 16384
	check "replay: ratios against per-page: unbounded has 16384x fewer mappings" \
		test "$(fields "$tmp/share.json" unbounded vs_peak)" = 16384.0

	"$rep" --rules cut --compare=unbounded -q --json "$data/holes.trace" >"$tmp/cut.json"
	"$rep" --rules cut --no-cut --compare=unbounded -q --json "$data/holes.trace" \
		>"$tmp/nocut.json"
	"$rep" --rules type1 --compare=unbounded,granule=2M -q --json "$data/holes.trace" \
		>"$tmp/t1.json"
	check "replay: a hole under cut rules: 2 mappings, 1 cut, nothing disrupted" \
		test "$(fields "$tmp/cut.json" unbounded live_mappings cut_calls disrupted_bytes)" \
		= 2/1/0
	# The bisected mapping is unmapped and its two still-shared remainders
	# mapped again: 2 MiB - 4 KiB (or 64 MiB - 4 KiB) disrupted for a moment.
	# --no-cut: the cut the rules offer is not used, the hole bisects.
	check "replay: --no-cut under cut rules: no cut call, 64 MiB - 4 KiB disrupted" \
		test "$(fields "$tmp/nocut.json" unbounded can_cut cut_calls disruptive_splits \
		disrupted_bytes)" = False/0/1/$((64 * 1048576 - 4096))
	check "replay: a hole under type1 rules, 2M granule: 33 mappings, 2 MiB - 4 KiB disrupted" \
		test "$(fields "$tmp/t1.json" granule=2M live_mappings disrupted_bytes)" \
		= 33/$((2 * 1048576 - 4096))
	check "replay: a hole under type1 rules, unbounded: 2 mappings, 64 MiB - 4 KiB disrupted" \
		test "$(fields "$tmp/t1.json" unbounded live_mappings disrupted_bytes)" \
		= 2/$((64 * 1048576 - 4096))
else
	for n in 1 2 3 4 5 6 7 8 9; do skip "replay: exact counts ($n)" "python3 not installed"; done
fi

# ---- bad traces: the line, an error, nothing applied ----
"$rep" --compare "$data/bad-range.trace" >"$tmp/bad.out" 2>"$tmp/bad.err"
rc=$?
check "replay: a bad line exits 2" test $rc -eq 2
check "replay: the error names the file and line 5" grep -q 'bad-range.trace:5: ' "$tmp/bad.err"
check "replay: nothing is replayed when a line is bad (no table)" \
	sh -c '! test -s "$1" && grep -q "nothing was replayed" "$2"' sh "$tmp/bad.out" "$tmp/bad.err"
printf 'cvmdma-trace 1\nregion 0 1M private\nshared 0x1000+1000\n' >"$tmp/unaligned.trace"
check "replay: an unaligned range is refused at parse time with its line" \
	sh -c '"$1" "$2" 2>&1 | grep -q "unaligned.trace:3: .*aligned"' sh "$rep" "$tmp/unaligned.trace"
# Each rule of doc/trace-format.md: a trace that breaks it is refused at
# parse time, exit 2, with the file, the line and what is wrong.
# refused WHAT NAME TRACE 'LINE: message': TRACE (printf %b) as NAME.trace.
refused() {
	printf '%b' "$3" >"$tmp/$2.trace"
	check "replay: $1 is refused (exit 2): $2.trace:$4" \
		sh -c '"$1" -q "$2" >"$3.out" 2>"$3.err"; test $? -eq 2 &&
		grep -qF "$4" "$3.err" && grep -q "nothing was replayed" "$3.err" &&
		! test -s "$3.out" || { cat "$3.err"; exit 1; }' \
		sh "$rep" "$tmp/$2.trace" "$tmp/$2" "$2.trace:$4"
}
refused "an unknown version" v2 'cvmdma-trace 2\nregion 0 1M private\n' \
	'1: trace version 2 is not supported (this tool reads 1)'
refused "a first line that is not the header" nohdr 'region 0 1M private\n' \
	"1: a trace starts with 'cvmdma-trace 1' (got 'region')"
refused "a second header" hdr2 'cvmdma-trace 1\nregion 0 1M private\ncvmdma-trace 1\n' \
	"3: second 'cvmdma-trace' header"
refused "a region overlapping another" overlap \
	'cvmdma-trace 1\nregion 0 2M private\nregion 4M 2M shared\nregion 1M 2M private\n' \
	'4: region overlaps the region declared on line 2'
refused "a region after the first conversion" late \
	'cvmdma-trace 1\nregion 0 2M private\nshared 0+4K\nregion 4M 2M private\n' \
	'4: regions must be declared before the first conversion'
many='cvmdma-trace 1\n' i=0
while [ $i -lt 65 ]; do many="${many}region $((i * 2))M 2M private\n"; i=$((i + 1)); done
refused "a 65th region" many "$many" '66: more than 64 regions'
refused "a region of 2^32 + 1 pages" pages 'cvmdma-trace 1\nregion 0 0x100000001000 private\n' \
	'2: region holds more than 2^32 pages'
refused "a region that ends at 2^64" end 'cvmdma-trace 1\nregion 0xffffffffffe00000 2M private\n' \
	'2: region does not end below 2^64'
refused "page=2K" page2k 'cvmdma-trace 1\nregion 0 2M private page=2K\n' \
	'2: page size 2048 is not a power of two >= 4096'
refused "page=4G" page4g 'cvmdma-trace 1\nregion 0x100000000 8G private page=4G\n' \
	"2: page size '4G' is too large"
refused "a range of length 0" len0 'cvmdma-trace 1\nregion 0 2M private\nshared 0x1000+0\n' \
	"3: range '0x1000+0' has length 0"
refused "a batch whose ranges are in two regions" straddle \
	'cvmdma-trace 1\nregion 0 2M private\nregion 4M 2M private\nshared 0+4K 4M+4K\n' \
	"4: a batch must stay inside one region: '4M+4K' is in the region of line 3"
# No region, no header: refused as a whole, no line to name.
for c in "a header alone:no region declared" "an empty file:empty trace (no 'cvmdma-trace 1' header)"; do
	[ "${c%%:*}" = "an empty file" ] && : >"$tmp/none.trace" ||
		printf 'cvmdma-trace 1\n' >"$tmp/none.trace"
	check "replay: a trace that is ${c%%:*} is refused (exit 2): ${c#*:}" \
		sh -c '"$1" -q "$2" >/dev/null 2>"$3"; test $? -eq 2 &&
		grep -qF "none.trace: $4" "$3" || { cat "$3"; exit 1; }' \
		sh "$rep" "$tmp/none.trace" "$tmp/none.err" "${c#*:}"
done
# ...and what it allows is read as it says.
printf 'cvmdma-trace 1\t# tabs\nregion\t0\t2M\tprivate\tpage=4K\nshared\t0+4K \t0x2000+4K\n' \
	>"$tmp/tabs.trace"
check "replay: tabs separate words as spaces do (a batch of 2 ranges, 8 KiB shared)" \
	sh -c '"$1" -q --json "$2" >"$3" &&
	grep -qF "\"lines\": 1, \"ranges\": 2, \"bytes_to_shared\": 8192," "$3" ||
	{ cat "$3"; exit 1; }' sh "$rep" "$tmp/tabs.trace" "$tmp/tabs.json"
printf 'cvmdma-trace 1\nregion 0x10K 0x1f0k private page=4k\nshared 0x10K+4k\n' >"$tmp/lower.trace"
check "replay: lower-case suffixes and 0x10K read as 2^10 multiples (0x10K = 16384)" \
	sh -c '"$1" -q --json "$2" >"$3" &&
	grep -qF "{\"line\": 2, \"gpa\": 16384, \"size\": 507904, \"page_size\": 4096," "$3" &&
	grep -qF "\"bytes_to_shared\": 4096," "$3" || { cat "$3"; exit 1; }' \
	sh "$rep" "$tmp/lower.trace" "$tmp/lower.json"
printf 'cvmdma-trace 1\nregion 0x100000000 4G private page=2G\nshared 0x100000000+2G\n' \
	>"$tmp/page2g.trace"
check "replay: page=2G, the largest page size, is accepted" "$rep" -q "$tmp/page2g.trace"
printf 'cvmdma-trace 1\nregion 0 2M private\nshared 0x2000+8K 0+12K\n' >"$tmp/unordered.trace"
pat='"per-page", "ok": true,.*"live_mappings": 4,.*"unbounded", "ok": true,.*"live_mappings": 1,'
check "replay: a batch of out-of-order, overlapping ranges is accepted (per-page: 4 mappings)" \
	sh -c '"$1" -q -cper-page,unbounded --json "$2" >"$3" && tr -d "\n" <"$3" | grep -q "$4" ||
	{ cat "$3"; exit 1; }' sh "$rep" "$tmp/unordered.trace" "$tmp/unordered.json" "$pat"
# A region in the MSI window: read, but every policy fails at its line.
printf 'cvmdma-trace 1\nregion 0xfec00000 4M private\nshared 0xfec00000+4K\n' >"$tmp/msi.trace"
check "replay: a region over the MSI window fails every policy at its line with ERANGE (exit 1)" \
	sh -c '"$1" --compare "$2" >"$3" 2>&1; test $? -eq 1 &&
	test "$(grep -c "^cvmdma-replay: [a-z-]*: .*msi.trace:2: .*ERANGE" "$3")" -eq 3 &&
	test "$(grep -cE "^(per-page|auto|unbounded) +[^ ]+ +FAILED line 2 " "$3")" -eq 3 ||
	{ cat "$3"; exit 1; }' sh "$rep" "$tmp/msi.trace" "$tmp/msi.out"
if [ $have_py = yes ]; then
	"$rep" -q --compare --json "$tmp/msi.trace" >"$tmp/msi.json" 2>/dev/null
	check "replay: --json says failed_at region, line 2, ERANGE for the MSI window region" \
		test "$(fields "$tmp/msi.json" per-page failed_at failed_line error)/$(fields \
		"$tmp/msi.json" unbounded failed_at failed_line error)" = region/2/ERANGE/region/2/ERANGE
	# The worked example of trace-format.md, taken from the page itself.
	sed -n '/^### Example/,/^The first conversion/p' "$top_srcdir/doc/trace-format.md" |
		sed -n '/^```$/,/^```$/p' | sed '1d;$d' >"$tmp/example.trace"
	ex() { # LINES: the example's first LINES lines as JSON, three policies
		head -n "$1" "$tmp/example.trace" >"$tmp/ex$1.trace" &&
		"$rep" -q --compare=unbounded,granule=2M,per-page --json "$tmp/ex$1.trace" \
			>"$tmp/ex$1.json"
	}
	ex 4 && ex 5 && ex 6 && ex 7
	check "trace-format.md example: the 64 MiB share is 1, 32 and 16384 mappings" \
		test "$(fields "$tmp/ex4.json" unbounded live_mappings)/$(fields "$tmp/ex4.json" \
		granule=2M live_mappings)/$(fields "$tmp/ex4.json" per-page live_mappings)" = 1/32/16384
	check "trace-format.md example: the batch adds two mappings under unbounded" \
		test "$(fields "$tmp/ex5.json" unbounded live_mappings map_calls)" = 3/3
	last=
	for p in unbounded granule=2M per-page; do
		k="ok lines_applied live_mappings peak_mappings map_calls unmap_calls"
		# shellcheck disable=SC2086
		a=$(fields "$tmp/ex6.json" $p $k) b=$(fields "$tmp/ex7.json" $p $k)
		[ "${a#True/3/}" != "$a" ] && [ "True/4/${a#True/3/}" = "$b" ] || last="$last $p: $a, $b"
	done
	check "trace-format.md example: the whole example replays, its last line costs nothing" \
		test -z "$last"
else
	for n in 1 2 3 4; do skip "replay: MSI window JSON and trace-format.md example ($n)" \
		"python3 not installed"; done
fi

printf 'cvmdma-trace 1\nregion 0 1M private page=4K page=8K\n' >"$tmp/twopage.trace"
check "replay: a region with page= twice is refused at parse time with its line" \
	sh -c '"$1" "$2" 2>&1 | grep -q "twopage.trace:2: page= given twice"' sh "$rep" "$tmp/twopage.trace"
printf 'cvmdma-trace 1\nregion 0X0 1M private\nshared 0X1000+4K\n' >"$tmp/hexcap.trace"
check "replay: hexadecimal with 0X reads as with 0x (trace-format.md)" \
	"$rep" -q "$tmp/hexcap.trace"

printf 'cvmdma-trace 1\nregion 0x0 2M private # a \000 in a comment\n' >"$tmp/nul.trace"
check "replay: a NUL byte, even in a comment, makes the trace invalid (exit 2)" \
	sh -c '"$1" "$2" >/dev/null 2>&1; test $? -eq 2' sh "$rep" "$tmp/nul.trace"

# A trace cut short in the middle of its last line (helper-100's case: a
# batch of 253 ranges cut to 202 replayed, exit 0) is refused with that line.
"$gen" snp-boot --guest-size 1G | head -c 2994 >"$tmp/cut.trace"
"$rep" -q "$tmp/cut.trace" >"$tmp/cut.out" 2>"$tmp/cut.err"
rc=$?
check "replay: a trace whose last line has no newline is refused as cut short (exit 2)" \
	sh -c 'test "$1" -eq 2 && grep -q "cut.trace:[0-9]*: the last line has no newline" "$2" &&
	       test ! -s "$3"' sh $rc "$tmp/cut.err" "$tmp/cut.out"

sed 's/$/\r/' "$data/holes.trace" >"$tmp/crlf.trace"
check "replay: a trace with CRLF line ends replays as with LF (trace-format.md)" \
	sh -c 'rows() { "$1" -q --compare "$2" | awk "/^(per-page|auto|unbounded) / {
		print \$1, \$2, \$3, \$4, \$5, \$6, \$7, \$8, \$9, \$10 }"; }
	rows "$1" "$2" >"$4.lf" && rows "$1" "$3" >"$4.crlf" &&
	[ "$(wc -l <"$4.lf")" -eq 3 ] && cmp "$4.lf" "$4.crlf"' \
	sh "$rep" "$data/holes.trace" "$tmp/crlf.trace" "$tmp/rows"

printf 'cvmdma-trace 1\nregion 0 4M private page=2M\nshared 0+2M\n' >"$tmp/page2m.trace"
check "replay: a granule below the region's page size fails that policy, the library says why" \
	sh -c '"$1" -cgranule=64K,auto "$2" >"$3" 2>&1; test $? -eq 1 &&
	grep -q "page2m.trace:2: .*EINVAL" "$3" &&
	grep -q "split granule, 65536 bytes, is smaller than the region.s pages, 2097152" "$3" &&
	grep -qE "^auto +[^ ]+ +ok " "$3" || { cat "$3"; exit 1; }' \
	sh "$rep" "$tmp/page2m.trace" "$tmp/page2m.out"

# Auto maps a region with pages larger than 2 MiB in its page size: the
# granule column says what mappings never cross, so it reads 1G there.
printf 'cvmdma-trace 1\nregion 0x100000000 4G private page=1G\nshared 0x100000000+2G\n' \
	>"$tmp/page1g.trace"
check "replay: the granule column shows a region's larger page under auto (1G, 1 GiB mappings)" \
	sh -c '"$1" -q -pauto "$2" >"$3" && grep -qE "^auto +1G +ok +2 " "$3" || {
	cat "$3"; exit 1; }' sh "$rep" "$tmp/page1g.trace" "$tmp/page1g.out"

# ---- a refusal: the policy fails at its line, the others run ----
# In the table's output too the failure is named on standard error, so a
# script that throws the table away still learns why.
check "replay: a table run names its failed policy and why on standard error" \
	sh -c '"$1" --entry-limit 1000 --compare -q "$2" >/dev/null 2>"$3"; test $? -eq 1 &&
	grep -q "^cvmdma-replay: per-page: .*:6: .*ENOSPC" "$3" &&
	! grep -q "^cvmdma-replay: auto: " "$3" || { cat "$3"; exit 1; }' \
	sh "$rep" "$data/share-64m.trace" "$tmp/enospc-table.err"
"$rep" --entry-limit 1000 --compare -q --json "$data/share-64m.trace" >"$tmp/enospc.json" \
	2>"$tmp/enospc.err"
rc=$?
check "replay: a refused conversion makes the exit status 1" test $rc -eq 1
if [ $have_py = yes ]; then
	check "replay: per-page fails at line 6 with ENOSPC; auto and unbounded complete" \
		test "$(fields "$tmp/enospc.json" per-page failed_line error)/$(fields \
		"$tmp/enospc.json" auto ok)/$(fields "$tmp/enospc.json" unbounded ok)" \
		= 6/ENOSPC/True/True
else
	skip "replay: per-page fails at line 6 with ENOSPC" "python3 not installed"
fi
check "replay: the refusal is reported with line, errno and strerror" \
	grep -q 'share-64m.trace:6: shared 0x4000000+64M refused: ENOSPC (No space left on device)' \
	"$tmp/enospc.err"
check "replay: a model's ENOSPC names the option that sets its limit" \
	grep -q 'ENOSPC (No space left on device); --entry-limit sets the model' "$tmp/enospc.err"

# Ratios where neither per-page nor the policy needed any: '-', JSON null.
printf 'cvmdma-trace 1\nregion 0x0 256M private\nprivate 0x0+4K\n' >"$tmp/noop.trace"
"$rep" -q --compare=per-page,auto "$tmp/noop.trace" >"$tmp/noop.out"
check "replay: peak and calls of a trace that changes nothing read - against per-page" \
	sh -c 'test "$(awk "\$1 == \"per-page\" || \$1 == \"auto\" { print \$(NF-2), \$(NF-1) }" "$1" | sort -u)" = "- -"' \
	sh "$tmp/noop.out"
# ---- command-line edges ----
# A failed run leaves no trace behind, and the file that was there as it was.
"$gen" churn --guest-size 1G --seed 3 -o "$tmp/kept.trace"
cp "$tmp/kept.trace" "$tmp/kept.orig"
"$gen" tdx-boot --guest-size 256M --ops 5000 -o "$tmp/kept.trace" 2>"$tmp/full.err"
rc=$?
check "tracegen: a run that fails exits 2 and leaves -o FILE as it was" \
	sh -c 'test "$1" -eq 2 && cmp -s "$2" "$3" && grep -q "RAM is full" "$4"' \
	sh $rc "$tmp/kept.trace" "$tmp/kept.orig" "$tmp/full.err"
"$gen" tdx-boot --guest-size 256M --ops 5000 -o "$tmp/new.trace" 2>/dev/null
check "tracegen: a run that fails writes no file, not even a temporary one" \
	sh -c '! ls "$1"/new.trace* "$1"/.cvmdma-tracegen.* >/dev/null 2>&1' sh "$tmp"
# A symbolic link is written in place: refused options must not open it.
ln -s kept.trace "$tmp/link.trace"
for w in "tdx-boot --guest-size 256M --ops 5000" "adversarial --guest-size 256M --ops 99999"; do
	# shellcheck disable=SC2086
	"$gen" $w -o "$tmp/link.trace" 2>/dev/null
	rc=$?
	check "tracegen $w through a symbolic link: exit 2, the file it points to as it was" \
		sh -c 'test "$1" -eq 2 && cmp -s "$2" "$3"' sh $rc "$tmp/kept.trace" "$tmp/kept.orig"
done
# Past a file size limit: a write error (exit 2), not SIGXFSZ, and no
# temporary file left beside FILE.
mkdir "$tmp/fsz"
sh -c 'ulimit -f 8 && exec "$1" churn --guest-size 1G -o "$2"' sh "$gen" "$tmp/fsz/t.trace" \
	2>"$tmp/fsz.err"
rc=$?
check "tracegen: a run past the file size limit exits 2 and leaves no temporary file" \
	sh -c 'test "$1" -eq 2 && grep -q "write error" "$2" && test -z "$(ls -A "$3")"' \
	sh $rc "$tmp/fsz.err" "$tmp/fsz"
# Killed part way (Ctrl-C, SIGTERM): no temporary file either.
mkdir "$tmp/sig"
"$gen" churn --guest-size 1T --ops 10000000 -o "$tmp/sig/t.trace" 2>/dev/null &
pid=$!
i=0
while [ $i -lt 200 ] && ! ls "$tmp/sig"/.cvmdma-tracegen.* >/dev/null 2>&1; do
	sleep 0.01; i=$((i + 1))
done
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
# Only a run that finished first is not a test of the signal: any other
# end than by the signal itself (a handler that exits 1, say) fails.
if [ $rc -ne 0 ]; then
	check "tracegen: a run killed by SIGTERM ends by it and leaves no temporary file" \
		sh -c 'test "$2" -eq 143 && test -z "$(ls -A "$1")"' sh "$tmp/sig" $rc
else
	skip "tracegen: a run killed by SIGTERM ends by it and leaves no temporary file" \
		"the run ended before the signal (exit $rc)"
fi
# Ctrl-C likewise.  A background job of a script ignores SIGINT: run the
# tool with SIGINT at its default (env --default-signal, coreutils 8.31).
mkdir "$tmp/int"
if env --default-signal=INT true 2>/dev/null; then
	env --default-signal=INT "$gen" churn --guest-size 1T --ops 10000000 \
		-o "$tmp/int/t.trace" 2>/dev/null &
	pid=$!
	i=0
	while [ $i -lt 200 ] && ! ls "$tmp/int"/.cvmdma-tracegen.* >/dev/null 2>&1; do
		sleep 0.01; i=$((i + 1))
	done
	kill -INT $pid 2>/dev/null
	wait $pid
	rc=$?
else
	rc="no env --default-signal"
fi
if [ "$rc" != 0 ] && [ "$rc" != "no env --default-signal" ]; then
	check "tracegen: a run ended by SIGINT ends by it and leaves no temporary file" \
		sh -c 'test "$2" -eq 130 && test -z "$(ls -A "$1")"' sh "$tmp/int" "$rc"
else
	skip "tracegen: a run ended by SIGINT ends by it and leaves no temporary file" \
		"the run did not get the signal (exit $rc)"
fi
chmod 600 "$tmp/kept.trace"
"$gen" churn --guest-size 1G --seed 4 -o "$tmp/kept.trace"
check "tracegen: a replaced -o FILE keeps its permissions" \
	test "$(stat -c %a "$tmp/kept.trace")" = 600
if [ -z "$as_nobody" ]; then
	mkdir "$tmp/ro" && : >"$tmp/ro/t.trace" && chmod 666 "$tmp/ro/t.trace" &&
		chmod 555 "$tmp/ro"
	check "tracegen: -o FILE in a directory that takes no new file is written in place" \
		sh -c 'setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$1" churn --guest-size 1G -o "$2" && grep -q "^cvmdma-trace 1" "$2"' \
		sh "$(cd "$(dirname "$gen")" && pwd)/${gen##*/}" "$tmp/ro/t.trace"
	chmod 755 "$tmp/ro"
else
	skip "tracegen: -o FILE in a directory that takes no new file is written in place" \
		"$as_nobody"
fi
check "tracegen: -o - writes standard output" \
	sh -c 'cd "$1" && "$2" churn --guest-size 4G --seed 7 -o - | cmp -s - churn-o.trace &&
	! test -e ./-' sh "$tmp" "$(cd "$(dirname "$gen")" && pwd)/${gen##*/}"
check "tracegen: no WORKLOAD is a usage error that says so" \
	sh -c '"$1" 2>&1 >/dev/null | grep -q "which WORKLOAD"; test $? -eq 0' sh "$gen"
check "replay: -cPOLICY,... takes the list like --compare=" \
	sh -c '"$1" -cper-page,auto -q "$2" | grep -c "^\(per-page\|auto\) " | grep -qx 2' \
	sh "$rep" "$data/share-64m.trace"
for c in --compare= --compare=, --compare=auto,,unbounded --compare=auto, -c,auto; do
	check "replay: $c (an empty policy in the list) is a usage error" \
		sh -c '"$1" -q "$2" "$3" >/dev/null 2>"$4"; test $? -eq 2 &&
		grep -q "empty policy name" "$4"' sh "$rep" "$c" "$data/share-64m.trace" "$tmp/c.err"
done
check "replay: the last --entry-limit counts (none, then 1000: 1000 is shown and enforced)" \
	sh -c '"$1" --entry-limit none --entry-limit 1000 -p per-page "$2" 2>&1 |
	grep -q "mapping limit 1,000" || exit 1
	"$1" --entry-limit none --entry-limit 1000 -q -p per-page "$2" >/dev/null 2>&1
	test $? -eq 1' sh "$rep" "$data/share-64m.trace"
# A trace that cannot be read: exit 2, the reason, nothing replayed.
unread() { # WHAT TRACE MESSAGE [as nobody]
	check "replay: $1 as the trace is refused with the reason (exit 2)" \
		sh -c '${4:+setpriv --reuid=65534 --regid=65534 --clear-groups} \
		"$1" -q "$2" >/dev/null 2>"$5"; test $? -eq 2 && grep -qF "$2: $3" "$5" &&
		grep -q "nothing was replayed" "$5" || { cat "$5"; exit 1; }' \
		sh "$rep" "$2" "$3" "$4" "$tmp/unread.err"
}
unread "a directory" "$tmp" "read error: Is a directory"
unread "a missing file" "$tmp/no-such.trace" "No such file or directory"
if [ -z "$as_nobody" ] && nobody "$rep" --version >/dev/null 2>&1; then
	cp "$data/share-64m.trace" "$tmp/unreadable.trace" && chmod 600 "$tmp/unreadable.trace"
	unread "a file the user may not read" "$tmp/unreadable.trace" "Permission denied" nobody
else
	skip "replay: a file the user may not read as the trace is refused with the reason (exit 2)" \
		"${as_nobody:-user 65534 cannot run $rep}"
fi
if [ -w /dev/full ]; then
	check "replay: a failed write of the results says so and exits 1" \
		sh -c '"$1" -q "$2" >/dev/full 2>"$3"; test $? -eq 1 && grep -q "write error" "$3"' \
		sh "$rep" "$data/share-64m.trace" "$tmp/full.out"
else
	skip "replay: a failed write of the results says so and exits 1" "no /dev/full"
fi
if [ $have_py = yes ]; then
	bad_name=$tmp/$(printf 'caf\351-\303\251.trace')
	cp "$data/share-64m.trace" "$bad_name"
	check "replay: --json stays valid JSON for a trace name that is not UTF-8" \
		sh -c '"$1" -q --json "$2" | python3 -c "import json, sys
n = json.loads(sys.stdin.buffer.read())[\"trace\"]
assert n.endswith(\"caf\ufffd-\u00e9.trace\"), n"' sh "$rep" "$bad_name"
else
	skip "replay: --json stays valid JSON for a trace name that is not UTF-8" \
		"python3 not installed"
fi

check "tracegen: an --ops that cannot fit is refused before a byte reaches a pipe" \
	sh -c '"$1" tdx-boot --guest-size 256M --ops 5000 2>"$2" | wc -c | grep -qx 0 &&
	grep -q "RAM is full.*--ops 5000" "$2"' sh "$gen" "$tmp/ops.err"
check "tracegen: adversarial refuses an --ops that cannot fit before a byte reaches a pipe" \
	sh -c '"$1" adversarial --guest-size 256M --ops 99999999 2>"$2" | wc -c | grep -qx 0 &&
	grep -q "more than half the .* shared pages" "$2"' sh "$gen" "$tmp/adv.err"
check "tracegen: churn refuses an --ops above 10,000,000 before a byte reaches a pipe" \
	sh -c '"$1" churn --guest-size 256M --ops 10000001 2>"$2" | wc -c | grep -qx 0 &&
	grep -q "more than churn.s limit of 10000000" "$2"' sh "$gen" "$tmp/churn.err"
check "tracegen: the largest --ops that fits is accepted and replays" \
	sh -c '"$1" tdx-boot --guest-size 256M --ops 3071 | "$2" -q - >/dev/null' sh "$gen" "$rep"
long=$(printf '%0250d' 0 | tr 0 a)
check "tracegen: -o FILE with a name of 250 bytes (its temporary name stays short)" \
	sh -c 'cd "$1" && "$2" churn --guest-size 1G -o "$3" && test -s "$3" &&
	! ls -A | grep -q "^.cvmdma-tracegen"' \
	sh "$tmp" "$(cd "$(dirname "$gen")" && pwd)/${gen##*/}" "$long"
for w in $workloads; do
	check "tracegen: $w: the command on a trace's first line makes the same trace again" \
		sh -c 'cd "$(dirname "$1")" && "$1" "$2" --guest-size 3G --seed 5 >"$3" &&
		cmd=$(head -n 1 "$3") && test "${cmd%% *}" = "#" &&
		eval "./${cmd#\# }" | cmp -s - "$3"' \
		sh "$(cd "$(dirname "$gen")" && pwd)/${gen##*/}" "$w" "$tmp/first-line.trace"
done
check "tracegen: a number too big for 64 bits is refused as such (exit 2)" \
	sh -c '"$1" churn --seed 99999999999999999999 >/dev/null 2>"$2"; test $? -eq 2 &&
	grep -q "does not fit in 64 bits" "$2"' sh "$gen" "$tmp/big.err"
check "tracegen: --exit-max is refused by a workload without MapGPA requests" \
	sh -c '"$1" snp-boot --exit-max 4K >/dev/null 2>"$2"; test $? -eq 2 &&
	grep -q "not to snp-boot" "$2"' sh "$gen" "$tmp/exit.err"
for t in "$gen" "$rep"; do
	n=${t##*/}
	check "$n: --version prints the version on stdout and exits 0" \
		sh -c '"$1" --version | grep -q "^$2 (libcvmdma) [0-9]"' sh "$t" "$n"
	check "$n: -h prints the usage on stdout and exits 0" \
		sh -c '"$1" -h | grep -q "^usage: $2"' sh "$t" "$n"
	if [ -w /dev/full ]; then
		check "$n: -h and --version that cannot be written say so and exit 1" \
			sh -c 'for o in -h --version; do "$1" $o >/dev/full 2>"$2"; test $? -eq 1 &&
			grep -q "^$3: write error" "$2" || exit 1; done' sh "$t" "$tmp/hv.err" "$n"
	else
		skip "$n: -h and --version that cannot be written say so and exit 1" "no /dev/full"
	fi
	# Both ways: each long option of the man page's OPTIONS is in -h, and
	# -h names no other.
	sed -n '/^\.SH OPTIONS/,/^\.SH [A-Z]/p' "$top_srcdir/doc/man/$n.1" | grep '^\.B' |
		grep -o '\\-\\-[a-z\\-]*' | tr -d '\\' | sort -u >"$tmp/$n.man"
	"$t" -h | grep -o -- '--[a-z][a-z-]*' | sort -u >"$tmp/$n.help"
	check "$n: -h and the man page's OPTIONS name the same long options" \
		cmp -s "$tmp/$n.man" "$tmp/$n.help"
	check "$n: the man page names options (the comparison above is not of nothing)" \
		test "$(wc -l <"$tmp/$n.man")" -ge 7
done
check "cvmdma-replay: --version's second line names the library it runs with" \
	sh -c 'test "$("$1" --version | sed -n 2p)" = "library: libcvmdma $("$1" --version |
	sed -n "1s/.* //p")"' sh "$rep"
check "replay: a granule that is no power of two is named as such, not as an unknown policy" \
	sh -c '"$1" -p granule=3M "$2" >/dev/null 2>"$3"; test $? -eq 2 &&
		grep -q "granule must be a power of two" "$3" && ! grep -q unknown "$3"' \
	sh "$rep" "$data/holes.trace" "$tmp/g3m.err"
check "replay: --entry-limit 4294967296 (2^32) is a usage error that names the bound" \
	sh -c '"$1" -q --entry-limit 4294967296 "$2" >/dev/null 2>"$3"; test $? -eq 2 &&
	grep -q "is not a count up to 4294967295" "$3" &&
	"$1" -q --entry-limit 4294967295 "$2" >/dev/null' sh "$rep" "$data/holes.trace" "$tmp/el.err"
check "replay: -p given twice replays both, one row each, in order" \
	sh -c 'test "$("$1" -q -p granule=2M -p unbounded "$2" |
	awk "/^(granule=2M|unbounded|auto) / { print \$1, \$3 }" | tr "\n" ,)" = \
	"granule=2M ok,unbounded ok,"' sh "$rep" "$data/holes.trace"
# The library's messages (libcvmdma: ...) on standard error: its warning
# that the model's limit is reached by default, none with -q, its
# informational messages with -v, its debug messages with -vv.
for v in "" -q -v -vv; do
	# shellcheck disable=SC2086
	"$rep" --entry-limit 1000 $v -p per-page "$data/share-64m.trace" >/dev/null \
		2>"$tmp/log$v.err"
done
check "replay: by default the library's warnings are shown, not its informational messages" \
	sh -c 'grep -q "^libcvmdma: .*would exceed its mapping limit" "$1" &&
	! grep -q "^libcvmdma: dma: model-type1 backend, no hitless cut" "$1"' sh "$tmp/log.err"
check "replay: -q hides the library's messages, not the tool's own" \
	sh -c '! grep -q "^libcvmdma:" "$1" && grep -q "^cvmdma-replay: per-page: .*ENOSPC" "$1"' \
	sh "$tmp/log-q.err"
check "replay: -v shows the library's informational messages, not its debug ones" \
	sh -c 'grep -q "^libcvmdma: dma: model-type1 backend, no hitless cut" "$1" &&
	! grep -q "^libcvmdma: model backend model-type1 open" "$1"' sh "$tmp/log-v.err"
check "replay: -vv shows the library's debug messages too" \
	grep -q "^libcvmdma: model backend model-type1 open, entry limit 1000" "$tmp/log-vv.err"
check "replay: a policy name of 40 bytes or more is refused as too long, not as a bad granule" \
	sh -c '"$1" -p granule=0x000000000000000000000000200000 "$2" >/dev/null 2>"$3"
	test $? -eq 2 && grep -q "policy .granule=0x0.* is too long: .* at most 39 bytes" "$3" &&
	! grep -q "power of two" "$3" && "$1" -q -p granule=0x00000000000000000000000200000 \
	"$2" >/dev/null' sh "$rep" "$data/holes.trace" "$tmp/g40.err"
check "replay: --policy with --compare is a usage error" \
	sh -c '"$1" -p auto --compare "$2" >/dev/null 2>&1; test $? -eq 2' \
	sh "$rep" "$data/share-64m.trace"
# The usage errors cvmdma-replay.1's EXIT STATUS lists: exit 2, the reason.
pols=$(printf 'granule=%dM,' 1 2 4 8 16 32 64 128 256 512 1024 2048 4096 8192 16384 32768)
for u in "--rules and --entry-limit apply to the model backend only:-q --backend type1 \
--device 0000:00:03.0 --rules cut" "--rules and --entry-limit apply to the model backend only:\
--backend iommufd --device 0000:00:03.0 --entry-limit 9" \
	"--device needs --backend type1 or iommufd:--device 0000:00:03.0" \
	"--backend type1 needs --device BDF:--backend type1" \
	"--backend iommufd needs --device BDF:--backend iommufd" \
	"at most 16 policies:--compare=${pols}auto"; do
	# shellcheck disable=SC2086
	check "replay: ${u#*:} is a usage error (exit 2): ${u%%:*}" \
		sh -c 'm=$1 e=$2; shift 2; "$@" >/dev/null 2>"$e"; test $? -eq 2 &&
		grep -qF -- "$m" "$e" || { cat "$e"; exit 1; }' \
		sh "${u%%:*}" "$tmp/u.err" "$rep" ${u#*:} "$data/holes.trace"
done
check "replay: a TRACE of - is named <stdin> in its messages and in --json's trace field" \
	sh -c '"$1" -q --json - <"$2" | grep -q "^  \"trace\": \"<stdin>\"," &&
	"$1" - <"$3" 2>&1 | grep -q "^cvmdma-replay: <stdin>:5: "' \
	sh "$rep" "$data/holes.trace" "$data/bad-range.trace"
# A line over the limit is refused, and what follows it is never taken for
# the end of a shorter trace.
check "replay: a line longer than 64 MiB is refused with its line number, nothing replayed" \
	sh -c '{ printf "cvmdma-trace 1\nregion 0 1M private\nshared 0+4K\n"
	head -c 67108865 /dev/zero | tr "\\0" " "; } | "$1" - >/dev/null 2>"$2"
	test $? -eq 2 && grep -q "<stdin>:4: line longer than 64 MiB" "$2" &&
	grep -q "nothing was replayed" "$2"' sh "$rep" "$tmp/long.err"
if sh -c 'ulimit -v 60000 && "$1" --version' sh "$rep" >/dev/null 2>&1; then
	check "replay: a line it cannot allocate is a read error, not the end of the trace" \
		sh -c '{ printf "cvmdma-trace 1\nregion 0 1M private\nshared 0+4K\n"
		head -c 60000000 /dev/zero | tr "\\0" " "; printf "\nbogus\n"; } |
		(ulimit -v 60000; "$1" - >/dev/null 2>"$2"); test $? -eq 2 &&
		grep -q "read error: Cannot allocate memory" "$2"' sh "$rep" "$tmp/nomem.err"
else
	skip "replay: a line it cannot allocate is a read error, not the end of the trace" \
		"cannot run under ulimit -v (a sanitizer build)"
fi
printf 'cvmdma-trace 1\nregion 0 1M private\nshared 0+99999999999999999999\n' >"$tmp/big.trace"
check "replay: a number past 64 bits in a range is reported as such" \
	sh -c '"$1" "$2" 2>&1 | grep -q "big.trace:3: .*does not fit in 64 bits"' sh "$rep" "$tmp/big.trace"
{ printf 'cvmdma-trace 1\nregion 0 1M private page='; head -c 100000 /dev/zero | tr '\0' 1
  printf '\n'; } >"$tmp/long.trace"
check "replay: a bad word of 100,000 bytes is quoted short, and the reason still follows" \
	sh -c '"$1" "$2" 2>&1 | grep -q "long.trace:2: page size .1\{40\}\.\.\. (100000 bytes). does not fit in 64 bits"' \
	sh "$rep" "$tmp/long.trace"
printf 'cvmdma-trace 1\nregion 0 1M private\n\033[31mred\n' >"$tmp/esc.trace"
check "replay: control bytes of a bad line are not echoed to the terminal" \
	sh -c '"$1" "$2" 2>&1 | grep -q "esc.trace:3: unknown statement .?\[31mred"' \
	sh "$rep" "$tmp/esc.trace"
printf 'cvmdma-trace 1\nregion 0 1M private\nr\351\302\233d x\n' >"$tmp/high.trace"
check "replay: bytes a trace cannot hold (C1 controls, non-ASCII) are not echoed either" \
	sh -c '"$1" "$2" 2>&1 | grep -q "high.trace:3: unknown statement .r???d"' \
	sh "$rep" "$tmp/high.trace"
if [ $have_py = yes ]; then
	{ printf 'cvmdma-trace 1\nregion 0 0x4000000000000000 private page=1G\n'
	  for i in 1 2 3 4 5; do echo 'private 0+0x4000000000000000'; done; } >"$tmp/sum.trace"
	check "replay: byte totals past 2^64 saturate instead of wrapping" \
		sh -c '"$1" -q --json "$2" | python3 -c "import json, sys
assert json.load(sys.stdin)[\"bytes_to_private\"] == 2**64 - 1"' sh "$rep" "$tmp/sum.trace"
else
	skip "replay: byte totals past 2^64 saturate instead of wrapping" "python3 not installed"
fi

check "replay: a --device that is no PCI device of this machine says so (exit 1)" \
	sh -c 'out=$("$1" -q --backend type1 --device ffff:ff:1f.7 "$2" 2>&1); test $? -eq 1 &&
	printf "%s\n" "$out" | grep -q "ffff:ff:1f.7: no such PCI device"' \
	sh "$rep" "$data/share-64m.trace"
# Well-formed, so past the usage check: a wide (VMD) domain, upper case
# read as sysfs writes it.
for bdf in 10000:00:00.0 ffffffff:ff:1f.7 FFFF:FF:1F.7; do
	lc=$(printf '%s' "$bdf" | tr A-F a-f)
	check "replay: --device '$bdf' is a PCI address, absent here (exit 1, '$lc')" \
		sh -c 'out=$("$1" -q --backend type1 --device "$3" "$2" 2>&1); test $? -eq 1 &&
		printf "%s\n" "$out" | grep -q "$4: no such PCI device"' \
		sh "$rep" "$data/share-64m.trace" "$bdf" "$lc"
done
for bdf in ../x no-such-bdf '' 00:03.0 0000:00:03.8 0000:00:3.0 0000:00:03.0x \
	100000000:00:00.0 0000:00:20.0; do
	check "replay: --device '$bdf' is a usage error: not a PCI address (exit 2)" \
		sh -c 'out=$("$1" -q --backend iommufd --device "$3" "$2" 2>&1); test $? -eq 2 &&
		printf "%s\n" "$out" | grep -q "is not a PCI address"' \
		sh "$rep" "$data/share-64m.trace" "$bdf"
done
# The pin check runs before any device is opened.  Conversions to shared
# that add up past 2^64 (the parser saturates the total) and a region that
# starts shared: the bound saturates too, instead of wrapping to 2 MiB.
{ printf 'cvmdma-trace 1\nregion 0 0x4000000000000000 private page=1G\n'
  printf 'region 0x4000000000000000 2M shared\n'
  for i in 1 2 3 4 5; do echo 'shared 0+0x4000000000000000'; done; } >"$tmp/pin.trace"
if grep -q '^MemAvailable:' /proc/meminfo 2>/dev/null; then
	check "replay: on a real backend, shared bytes past 2^64 are refused by the pin check" \
		sh -c 'out=$("$1" -q --backend iommufd --device ffff:ff:1f.7 "$2" 2>&1);
		test $? -eq 1 && printf "%s\n" "$out" | grep -q "may pin up to"' \
		sh "$rep" "$tmp/pin.trace"
else
	skip "replay: on a real backend, shared bytes past 2^64 are refused by the pin check" \
		"no MemAvailable in /proc/meminfo"
fi

# ---- the example ----
check "examples/minimal-vmm runs on the MODEL backend and ends with mapped == shared" \
	"$example"

plan "$tap_n"
tap_done
