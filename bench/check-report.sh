#!/bin/sh
# SPDX-License-Identifier: MIT
# scripts/bench-report on fixed results (bench/testdata/): every verdict in
# doc/performance.md is computed, so check that the computation says met
# where the fixture meets a target and missed where it does not, and that
# nothing of the run (machine, commands, tables) goes missing.  No timing
# is measured here: the fixture's numbers are made up.  Prints TAP.
set -u

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
data=$top_srcdir/bench/testdata
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cvm-check-report.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

cp "$data"/*.out "$tmp/"
mkdir "$tmp/doc"
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
# has PATTERN: a line of the document matches the extended regexp.
has() { grep -Eq -- "$1" "$tmp/doc/performance.md"; }
# row VERDICT PATTERN: the targets row matching PATTERN ends with VERDICT.
row() { grep -E -- "$2" "$tmp/doc/performance.md" | grep -Eq -- "\| $1 \|\$"; }

GNUPLOT=/nonexistent/gnuplot "$top_srcdir/scripts/bench-report" "$tmp" "$tmp/doc" \
	>"$tmp/log" 2>&1
ok $? "the report is generated from a complete set of results"
[ -s "$tmp/doc/performance.md" ] || { echo "1..$n"; exit 1; }

row met 'real kernel A, type1: >= 100x'
ok $? "swiotlb target met at 508x fewer ioctls and 150x less wall time"
has 'real kernel A, type1: .*the whole cycle, share then unshare \(the verdict is on the share alone; the next row judges it\): 65,537 vs 130 ioctls \(504x fewer\), 3.60 s vs 60.0 ms \(60.0x less\);.* \| met'
ok $? "the swiotlb verdict shows the whole cycle beside the share"
has 'real kernel A, type1: .*the share run by run \(each policy.s run i back to back\): 138x-163x less \| met \|$'
ok $? "the swiotlb verdict shows the ratio of each pair of runs, and every pair meets it"
row '\*\*missed\*\* \(the median meets it, not every run\)' 'real kernel A, type1 v1: >= 100x'
ok $? "a swiotlb ratio of medians at 75x with a pair of runs at 43x misses the target"
row '\*\*missed\*\*' 'real kernel A, iommufd: >= 100x'
ok $? "swiotlb target missed at 30x less wall time, however few the ioctls"
has 'without the cut \(huge IOPTEs\): 1 ioctls, 10\.0 ms \(300x less\)'
ok $? "the cost of the cut is shown next to the iommufd verdict"
row met 'steady config: <= 100 ns median \| 90 ns median \(median of 5 runs: 85-99 ns\)'
ok $? "a 90 ns median with every run under 100 ns meets the 100 ns target"
row '\*\*missed\*\* \(the median meets it, not every run\)' 'fast config: <= 100 ns median \| 90 ns median'
ok $? "a 90 ns median with a run at 120 ns misses it, and says the median meets it"
row '\*\*missed\*\*' 'median \| 2,500 ns median'
ok $? "a 2,500 ns median misses the 100 ns target"
row '\*\*missed\*\*' 'median \| 2,500 ns median, .*the model backend alone \(type1 rules\), which stands for the kernel: 480 ns median per call'
ok $? "the model backend's own median is shown beside a verdict with a DMA context"
row '\*\*missed\*\*' "median \\| 2,500 ns median, .*; the library alone, its kernel doing nothing \\(type1 rules, auto\\): 2,000 ns median\\)"
ok $? "the library alone (the null kernel's median) is shown beside that verdict"
row 'for reference: \*\*missed\*\*' 'conversion, the library alone: a DMA context whose kernel does nothing, type1 rules, auto \(every map.*\| 2,000 ns median \(median of 5 runs: 1,950-2,150 ns\)'
ok $? "the null kernel row is for reference, not the model's target"
! grep -Eq 'model backend, model backend alone' "$tmp/doc/performance.md"
ok $? "the model backend alone is not a target row of its own"
row met 'sparse, model cut rules: <= 1 s \| 950 ms wall, 900 ms CPU.*, slowest run 995 ms wall'
ok $? "the replay verdict is on wall time, the slowest run's too, and shows the CPU time"
row 'for reference: met' 'conversion, no DMA context \(no backend takes part.*\| 60 ns median'
ok $? "the conversion without a DMA context (no backend) is for reference, not the model's target"
row '\*\*missed\*\*' 'dense, model cut rules: <= 1 s'
ok $? "a 9 s replay misses the 1 s target"
row 'n/a: the type1 limit, as it must' 'dense, model type1 rules'
ok $? "a replay stopped by the type1 limit gets no time verdict"
row '\*\*missed\*\*' 'live mappings = maximal shared runs'
ok $? "live mappings above the hitless floor miss the target"
has 'all but wl-bad'
ok $? "the workload that misses the floor is named"
has 'live = shared runs on 0 of 2 workloads \(not on wl-good wl-bad\); live = the fewest'
ok $? "live mappings are judged against the shared runs, as the target says, not the floor"
has '^100 trace lines, 50 of them change page state\.' &&
	has '^\| cut \| auto \| ok \|.*\| 1\.0 ms \| 10 ns \| 20,000 ns \|$'
ok $? "the conversion CPU time is also shown per line that changes page state"
has '^100 trace lines\.  At the end' && has '^\| cut \| auto \| ok \*\*MAPPED != SHARED\*\* \| .* \| 10 ns \| - \|$'
ok $? "an older result without the count of changing lines shows none"
has '^\| type1 at 11 \| compact \| ok \| 8 \| 11 \| 11 \| - \| 15 \| 4 \| 0 \| 4 \| 8\.0 MiB \|' &&
	has '^\| type1 \| per-page \| \*\*ENOSPC at line 7\*\* \|'
ok $? "a run at a lowered entry limit names the limit; one without the column does not"
has 'MAPPED != SHARED'
ok $? "a run whose mapped set differs from the shared set is flagged"
has '\| iommufd \| per-page \| ok \| 8 \| 70,000 \| 70,000 \| \*\*yes\*\* \|'
ok $? "a peak above 65,535 is flagged where type1 could not hold it"
has '\*\*ENOSPC at line 7\*\*'
ok $? "a run refused by the limit says where"
has '^\| CPU \| Test CPU, 2 online CPUs, 4\.0 GiB RAM \|$' && has '^\| kernel \| Linux 6\.12 \|$' &&
	has '^\| date \| 2026-01-01 00:00 UTC \|$'
ok $? "the machine, kernel and date of the run are in the document"
has '^bench/bench-core --stress > bench/core\.out$'
ok $? "the exact commands are in the document"
has '^\| share \| auto \| 1 \| 129 \| 129 \|.*\| 20\.0 ms \(19\.0 ms-21\.0 ms\) \| 508x \| 150x \| ok \|$'
ok $? "guest rows carry the median, the range and the ratios to per-page"
has '90 ns median \(median of 5 runs: 85-120 ns\)'
ok $? "a repeated conversion shows the range of its runs' medians"
row met '950 ms wall, 900 ms CPU \(median of 5 runs: 850 ms-990 ms\)'
ok $? "a repeated replay shows the range of its runs' CPU times"
has '^\| slow config \|.*\| one run \|$'
ok $? "a result from one run (an older bench-core) says so"
has 'memory never touched, in 4 KiB pages \(swiotlb-256M-cold; the verdict is on memory already faulted in\): 6\.00 s vs 2\.00 s \(3\.00x less\)'
ok $? "the swiotlb verdict shows the same share onto memory never touched beside it"
row met 'real kernel A, type1: .*3\.00x less'
ok $? "the cold share informs the verdict but does not decide it"
has 'real kernel A, type1: .*; never split \(unbounded\): 1 ioctls, 19\.0 ms \(157x less\);'
ok $? "the swiotlb verdict shows the share never split beside auto"
row met 'share then unshare \(the whole cycle\), real kernel A, type1: .*504x fewer.*60\.0x less.*56\.2x-63\.9x less'
ok $? "the whole cycle has a verdict of its own, on every pair of runs (ratios rounded down)"

# variant NAME AWK-PROGRAM FILE: the report of the fixture with FILE passed
# through AWK-PROGRAM (tab-separated), in $tmp/NAME/doc/performance.md.
variant() {
	mkdir "$tmp/$1" "$tmp/$1/doc"
	cp "$data"/*.out "$tmp/$1/"
	awk -F'\t' -v OFS='\t' "$2" "$data/$3" >"$tmp/$1/$3"
	GNUPLOT=/nonexistent/gnuplot "$top_srcdir/scripts/bench-report" "$tmp/$1" \
		"$tmp/$1/doc" >"$tmp/$1/log" 2>&1
}
# vrow NAME VERDICT PATTERN: row, in variant NAME's report.
vrow() { grep -E -- "$3" "$tmp/$1/doc/performance.md" | grep -Eq -- "\| $2 \|\$"; }

variant pp-failed '$1 == "guest" && $3 == "type1" && $4 == "swiotlb-256M" &&
	$6 == "per-page" { $16 = "ENOSPC" } 1' guest-A.out &&
	vrow pp-failed '\*\*missed\*\*' \
		'real kernel A, type1: .* \| no result \(per-page: ENOSPC, auto: ok\)'
ok $? "a per-page baseline that failed gives no result, not a ratio"
variant runs-missing '$1 == "guest" && $3 == "type1" && $4 == "swiotlb-256M" &&
	$5 == "share" && $6 == "auto" { $22 = "19,21" } 1' guest-A.out &&
	vrow runs-missing '\*\*missed\*\* \(no time for each run: 3 per-page, 2 auto\)' \
		'real kernel A, type1: >= 100x'
ok $? "a swiotlb verdict without a time for every run of both policies is missed"
variant replay-failed '$1 == "replay" && $2 == "sparse" && $3 == "cut" { $13 = "ENOMEM" } 1' \
	core.out && vrow replay-failed '\*\*missed\*\*' 'sparse, model cut rules: .*\(stopped: ENOMEM\)'
ok $? "a replay that fails other than at the type1 limit misses the target"
variant many-ioctls '$1 == "guest" && $3 == "type1" && $4 == "swiotlb-256M" &&
	$5 == "share" && $6 == "auto" { $8 = "1000" } 1' guest-A.out &&
	vrow many-ioctls '\*\*missed\*\*' 'real kernel A, type1: >= 100x.*65,536 vs 1,000 ioctls \(65\.5x fewer\)'
ok $? "auto at 65x fewer ioctls misses the target, however much less wall time"
variant replay-wall '$1 == "replay" && $2 == "sparse" { $9 = "1500.0"; $17 = "1600.0" } 1' \
	core.out && vrow replay-wall '\*\*missed\*\*' 'sparse, model cut rules: <= 1 s \| 1\.50 s wall, 900 ms CPU'
ok $? "a replay that took 1.5 s of wall time in 900 ms of CPU misses the 1 s target"
variant replay-slow-run '$1 == "replay" && $2 == "sparse" { $17 = "1200.0" } 1' core.out &&
	vrow replay-slow-run '\*\*missed\*\* \(the median meets it, not every run\)' \
		'sparse, model cut rules: <= 1 s'
ok $? "a replay whose slowest run took 1.2 s of wall time misses the target"
variant replay-old-wall '$1 == "replay" && $2 == "sparse" { $9 = "1500.0"; NF = 16 } 1' \
	core.out && vrow replay-old-wall '\*\*missed\*\*' 'sparse, model cut rules: <= 1 s \| 1\.50 s wall'
ok $? "an older result (no slowest wall time) whose shown run took 1.5 s misses the target"
variant replay-16g-failed '/^# region 1024 GiB;/ { sub(/1024 GiB/, "16 GiB") }
	$1 == "replay" && $2 == "sparse" { $13 = "ENOMEM" } 1' core.out &&
	vrow replay-16g-failed 'n/a: the target is on 1 TiB' 'of 16 GiB, .*sparse, .*\(stopped: ENOMEM\)'
ok $? "a 16 GiB replay that failed says so beside its n/a"
variant replay-16g '/^# region 1024 GiB;/ { sub(/1024 GiB/, "16 GiB") } 1' core.out &&
	vrow replay-16g 'n/a: the target is on 1 TiB' 'replay \(cvm_dma_add_region\) of 16 GiB, 50% shared, sparse'
ok $? "a replay of 16 GiB (run.sh --quick) says so and gets no verdict on the 1 TiB target"

# Each threshold, just met and just missed.
sw='$1 == "guest" && $3 == "type1" && $4 == "swiotlb-256M" && $5 == "share" && $6 == "auto"'
variant ioctl-100 "$sw { \$8 = 655 } 1" guest-A.out &&
	vrow ioctl-100 met 'real kernel A, type1: >= 100x.*65,536 vs 655 ioctls \(100x fewer\)'
ok $? "auto at 100.05x fewer ioctls meets the target"
vrow ioctl-100 '\*\*missed\*\*' 'share then unshare \(the whole cycle\), real kernel A, type1: .*65,537 vs 656 ioctls \(99\.9x fewer\)'
ok $? "the same run's whole cycle, at 99.9x fewer ioctls, misses its target"
variant cycle-ioctl-100 "$sw { \$8 = 654 } 1" guest-A.out &&
	vrow cycle-ioctl-100 met 'share then unshare \(the whole cycle\), real kernel A, type1: .*65,537 vs 655 ioctls \(100x fewer\)'
ok $? "a whole cycle at 100.05x fewer ioctls meets it"
variant ioctl-99 "$sw { \$8 = 656 } 1" guest-A.out &&
	vrow ioctl-99 '\*\*missed\*\*' 'real kernel A, type1: >= 100x.*65,536 vs 656 ioctls \(99\.9x fewer\)'
ok $? "auto at 99.9x fewer ioctls misses it"
variant wall-50 "$sw { \$14 = \"60.00\"; \$22 = \"62,58,60\" } 1" guest-A.out &&
	vrow wall-50 met 'real kernel A, type1: >= 100x.*3\.00 s vs 60\.0 ms \(50\.0x less\).*50\.0x-50\.0x less'
ok $? "every pair of runs at 50x less wall time meets the target"
variant wall-49 "$sw { \$14 = \"60.00\"; \$22 = \"62,58,60.1\" } 1" guest-A.out &&
	vrow wall-49 '\*\*missed\*\* \(the median meets it, not every run\)' \
		'real kernel A, type1: >= 100x.*49\.9x-50\.0x less'
ok $? "one pair at 49.9x misses it, though the median meets it (and 49.9 is not shown as 50)"
variant wall-med-49 "$sw { \$14 = \"60.10\"; \$22 = \"62,58,60\" } 1" guest-A.out &&
	vrow wall-med-49 '\*\*missed\*\*' 'real kernel A, type1: >= 100x.*60\.1 ms \(49\.9x less\)'
ok $? "a ratio of medians at 49.9x misses it"
variant cycle-49 '$1 == "guest" && $3 == "type1" && $4 == "swiotlb-256M" && $5 == "unshare" &&
	$6 == "auto" { $14 = "61.00"; $22 = "60,61,62" } 1' guest-A.out &&
	vrow cycle-49 '\*\*missed\*\*' 'share then unshare \(the whole cycle\), real kernel A, type1: '
ok $? "a whole cycle whose pair of runs falls below 50x misses its target"
variant cycle-failed '$1 == "guest" && $3 == "type1" && $5 == "unshare" && $6 == "auto" {
	$16 = "EIO" } 1' guest-A.out &&
	vrow cycle-failed '\*\*missed\*\*' 'share then unshare \(the whole cycle\), real kernel A, type1: .* \| no result'
ok $? "a whole cycle whose auto unshare failed gives no result"
variant auto-failed "$sw { \$16 = \"EIO\" } 1" guest-A.out &&
	vrow auto-failed '\*\*missed\*\*' 'real kernel A, type1: .* \| no result \(per-page: ok, auto: EIO\)'
ok $? "an auto run that failed gives no result, not a ratio"
variant conv-100 '$1 == "conv" && $2 == "steady config" { $4 = 100; $13 = 100 } 1' core.out &&
	vrow conv-100 met 'steady config: <= 100 ns median \| 100 ns median'
ok $? "a 100 ns median with no run above 100 ns meets the 100 ns target"
variant conv-101 '$1 == "conv" && $2 == "steady config" { $4 = 100; $13 = 101 } 1' core.out &&
	vrow conv-101 '\*\*missed\*\* \(the median meets it, not every run\)' 'steady config: <= 100 ns median'
ok $? "a run at 101 ns misses it"
variant replay-1s '$1 == "replay" && $2 == "sparse" { $9 = "1000.0"; $17 = "1000.0" } 1' core.out &&
	vrow replay-1s met 'sparse, model cut rules: <= 1 s \| 1\.00 s wall'
ok $? "a replay whose slowest run took 1.000 s meets the 1 s target"
variant replay-1s-over '$1 == "replay" && $2 == "sparse" { $9 = "1000.0"; $17 = "1000.5" } 1' \
	core.out && vrow replay-1s-over '\*\*missed\*\* \(the median meets it, not every run\)' \
		'sparse, model cut rules: <= 1 s'
ok $? "one that took 1.0005 s misses it"
variant live-met '$1 == "policy" && $3 == "cut" && $4 == "auto" { $8 = $7 } 1' policy.out &&
	vrow live-met met 'live mappings = maximal shared runs'
ok $? "live mappings equal to the shared runs everywhere meet the live-mappings target"
variant live-replay '$1 == "replay" && $2 == "sparse" && $3 == "cut" { $7 = 501 } 1' core.out &&
	cp "$tmp/live-met/policy.out" "$tmp/live-replay/" &&
	GNUPLOT=/nonexistent/gnuplot "$top_srcdir/scripts/bench-report" "$tmp/live-replay" \
		"$tmp/live-replay/doc" >/dev/null 2>&1 &&
	vrow live-replay '\*\*missed\*\*' 'live mappings = maximal shared runs'
ok $? "a replay with a mapping more than its shared runs misses it"
echo "1..$n"
exit $failed
