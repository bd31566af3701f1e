#!/bin/sh
# SPDX-License-Identifier: MIT
# `make bench`: run every benchmark from the build directory, keep each raw
# result in bench/*.out there (with the exact commands and the machine),
# then regenerate doc/performance.md and its plots (scripts/bench-report).
#
#   top_srcdir=... top_builddir=... bench/run.sh [--quick] [--no-vm] [--no-report]
#
# --quick      small sizes: checks the whole pipeline in a minute or two
# --no-vm      skip the real-kernel stage (QEMU guest)
# --no-report  keep the raw results only
set -eu

me=bench/run.sh
die() { echo "$me: $*" >&2; exit 1; }
: "${top_srcdir:?$me: set top_srcdir}" "${top_builddir:?$me: set top_builddir}"
quick=0 vm=1 report=1
for arg; do
	case $arg in
	--quick) quick=1 ;;
	--no-vm) vm=0 ;;
	--no-report) report=0 ;;
	*) die "usage: $0 [--quick] [--no-vm] [--no-report]" ;;
	esac
done

cd "$top_builddir"
out=bench
mkdir -p "$out"
rm -f "$out"/*.out
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cvm-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
started=$(date +%s)

# Every command is logged as run from the build directory, so a reader can
# repeat any single number.
log_cmd() { printf '%s\n' "$*" >>"$out/commands.out"; }
run() {
	file=$1
	shift
	log_cmd "$* > $file"
	"$@" >"$file.tmp"
	mv "$file.tmp" "$file"
}
step() { printf '\n==> %s\n' "$*" >&2; }

machine() {
	echo "date	$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "cpu	$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
	echo "nproc	$(nproc)"
	echo "kernel	$(uname -sr)"
	echo "memory	$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "loadavg	$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "compiler	$(${CC:-cc} --version 2>/dev/null | head -n1)"
	echo "cflags	$(sed -n 's/^CFLAGS = //p' Makefile)"
	echo "source	$(git -C "$top_srcdir" describe --always --dirty 2>/dev/null || echo unknown)"
	echo "qemu	$(qemu-system-x86_64 --version 2>/dev/null | head -n1 || echo none)"
	echo "guestsrc	$(dpkg-query -W -f='linux-source-6.12 ${Version}' linux-source-6.12 2>/dev/null || echo unknown)"
	echo "quick	$quick"
}
machine >"$out/machine.out"
: >"$out/commands.out"

# 1. the page-state map (another component's benchmark; run it if built).
if [ -x bench/bench-pagemap ]; then
	step "pagemap benchmark"
	run "$out/pagemap.out" bench/bench-pagemap $([ "$quick" = 1 ] && echo --quick)
fi

# 2. the policies on the model, over cvmdma-tracegen's workloads.
step "policy benchmark (model backend)"
if [ "$quick" = 1 ]; then
	set -- tdx-boot:4G tdx-boot:16G snp-boot:4G lazy-accept:1G churn:4G adversarial:4G \
		adversarial:4G:30000
else
	# lazy-accept at 16 GiB: per-page maps every page of it at attach (4 M mappings).
	# adversarial with 100k holes: more than 65,535 mappings under every policy.
	set -- tdx-boot:64G tdx-boot:1T snp-boot:64G lazy-accept:16G churn:64G adversarial:64G \
		adversarial:64G:100000
fi
traces=
for w; do
	name=${w%%:*} size=${w#*:} ops= label=
	case $size in
	*:*) ops=${size#*:} size=${size%%:*} label=-$((ops / 1000))k ;;
	esac
	t=$tmp/$name-$size$label.trace
	log_cmd "tools/cvmdma-tracegen $name --guest-size $size --seed 1${ops:+ --ops $ops}" \
		"-o $name-$size$label.trace"
	tools/cvmdma-tracegen "$name" --guest-size "$size" --seed 1 ${ops:+--ops "$ops"} -o "$t"
	traces="$traces $t"
done
# shellcheck disable=SC2086
log_cmd "bench/bench-policy$(for t in $traces; do printf ' %s' "$(basename "$t")"; done)" \
	"> $out/policy.out"
# shellcheck disable=SC2086
bench/bench-policy $traces >"$out/policy.out.tmp"
mv "$out/policy.out.tmp" "$out/policy.out"

# 3. the library's own overhead and the 1 TiB replay.
step "core benchmark (model backend)"
if [ "$quick" = 1 ]; then
	run "$out/core.out" bench/bench-core --pairs 20000 --warmup 2000 --replay-size 16G
else
	run "$out/core.out" bench/bench-core --stress
fi

# 3b. where the instructions of one conversion go: callgrind counts them
# reproducibly (wall time on a shared machine does not), only inside the
# untimed pass of bench-core (--toggle-collect=conv_bulk).
if command -v valgrind >/dev/null 2>&1 && command -v callgrind_annotate >/dev/null 2>&1; then
	step "instruction profile (callgrind)"
	for cfg in "no DMA context:nodma" "model type1, auto:type1-auto" \
		"model cut, auto:cut-auto"; do
		name=${cfg%%:*} tag=${cfg#*:}
		cg=$out/callgrind-$tag
		log_cmd "valgrind --tool=callgrind --toggle-collect=conv_bulk" \
			"--callgrind-out-file=$cg.cg.out bench/bench-core --no-replay --unreserved-hva" \
			"--only '$name' --pairs 20000 --warmup 2000 --repeat 1 > $cg.txt.out"
		valgrind --tool=callgrind --toggle-collect=conv_bulk --callgrind-out-file="$cg.cg.out" \
			bench/bench-core --no-replay --unreserved-hva --only "$name" --pairs 20000 \
			--warmup 2000 --repeat 1 >"$cg.txt.out" 2>/dev/null
		log_cmd "callgrind_annotate --inclusive=yes --threshold=100 $cg.cg.out > $cg.incl.out"
		callgrind_annotate --inclusive=yes --threshold=100 "$cg.cg.out" >"$cg.incl.out"
		log_cmd "callgrind_annotate --threshold=100 $cg.cg.out > $cg.self.out"
		callgrind_annotate --threshold=100 "$cg.cg.out" >"$cg.self.out"
	done
	# The replay: instructions per mapping that cvm_dma_add_region() makes.
	cg=$out/callgrind-replay
	log_cmd "valgrind --tool=callgrind --toggle-collect=cvm_dma_add_region" \
		"--callgrind-out-file=$cg.cg.out bench/bench-core --no-conv --replay-size 16G" \
		"--stress --replay-rules cut --repeat 1 > $cg.txt.out"
	valgrind --tool=callgrind --toggle-collect=cvm_dma_add_region \
		--callgrind-out-file="$cg.cg.out" bench/bench-core --no-conv --replay-size 16G \
		--stress --replay-rules cut --repeat 1 >"$cg.txt.out" 2>/dev/null
	log_cmd "callgrind_annotate --inclusive=yes --threshold=100 $cg.cg.out > $cg.incl.out"
	callgrind_annotate --inclusive=yes --threshold=100 "$cg.cg.out" >"$cg.incl.out"
	log_cmd "callgrind_annotate --threshold=100 $cg.cg.out > $cg.self.out"
	callgrind_annotate --threshold=100 "$cg.cg.out" >"$cg.self.out"
else
	echo "$me: valgrind not found: no instruction profile" >&2
fi

# 4. the real kernels, in the vIOMMU guest.
if [ "$vm" = 1 ] && [ -x bench/bench-guest ]; then
	reps=5
	[ "$quick" = 0 ] || reps=1
	for k in A B; do
		step "real kernel $k (vIOMMU guest, TCG)"
		st=0
		log_cmd "SRC/tests/vm/run-in-guest --kernel $k --timeout 1800" \
			"bench/bench-guest $k $reps > $out/guest-$k.out"
		"$top_srcdir/tests/vm/run-in-guest" --kernel "$k" --timeout 1800 \
			bench/bench-guest "$k" "$reps" >"$out/guest-$k.tmp" || st=$?
		# Keep what the guest printed even if a run failed: the report says so.
		printf 'status\t%s\t%s\n' "$k" "$st" >>"$out/guest-$k.tmp"
		mv "$out/guest-$k.tmp" "$out/guest-$k.out"
		[ "$st" -eq 0 ] || echo "$me: kernel $k: run-in-guest exited $st" >&2
	done
elif [ "$vm" = 1 ]; then
	echo "$me: bench/bench-guest is not built: real-kernel stage skipped" >&2
fi

{
	echo "elapsed	$(($(date +%s) - started)) s"
	echo "loadavg_end	$(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$out/machine.out"
[ "$report" = 1 ] || exit 0
step "doc/performance.md"
GNUPLOT=${GNUPLOT:-gnuplot} "$top_srcdir/scripts/bench-report" "$out" "$top_srcdir/doc"
