#!/bin/sh
# SPDX-License-Identifier: MIT
# Fuzz smoke: build the libFuzzer targets with clang's libFuzzer, ASan and
# UBSan, and run each for FUZZ_SECONDS (10):
#  - tests/fuzz-pagemap.c: the page-state map against the naive oracle;
#  - tests/fuzz-trace.c: the trace parser of cvmdma-replay on any bytes, and
#    what parses replayed on the MODEL backend (tools/replay.c).
# A crashing input is kept as tests/fuzz-pagemap-crash-* or
# tests/fuzz-trace-crash-* in the build tree; replay it with:
# <fuzzer binary> <file>.
. "$top_srcdir/tests/tap.sh"
plan 4
skip_all() {
	skip "build fuzz-pagemap" "$1"
	skip "fuzz the page-state map" "$1"
	skip "build fuzz-trace" "$1"
	skip "fuzz the trace parser and replay" "$1"
	tap_done
}
if [ -n "$SANITIZED" ]; then
	skip_all "sanitizer build: the fuzzer brings its own sanitizers"
fi
if [ -z "$CLANG" ] || ! command -v "$CLANG" >/dev/null 2>&1; then
	skip_all "clang not found (configure looks for CLANG)"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' >"$tmp/probe.c"
if ! "$CLANG" -fsanitize=fuzzer "$tmp/probe.c" -o "$tmp/probe" >/dev/null 2>&1; then
	skip_all "$CLANG cannot link libFuzzer (install libclang-rt-dev)"
fi
san="-g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all"
# make check passes libcap-ng's flags (the library links it); run by hand,
# ask pkg-config.
capng_cflags=${CAPNG_CFLAGS-$(pkg-config --cflags libcap-ng 2>/dev/null)}
capng_libs=${CAPNG_LIBS:-$(pkg-config --libs libcap-ng 2>/dev/null || echo -lcap-ng)}
inc="-I$top_builddir -I$top_srcdir/include -I$top_srcdir/lib"

# cc_cov DIR FILE...: compile with coverage feedback into DIR.
cc_cov() {
	d=$1
	shift
	for f in "$@"; do
		"$CLANG" $san -fsanitize=fuzzer-no-link $inc $capng_cflags -c "$f" \
			-o "$d/$(basename "$f" .c).o" || return 1
	done
}

# ---- the page-state map ----
mkdir "$tmp/pm" "$tmp/pm-corpus"
fuzzer=$tmp/fuzz-pagemap
# Coverage feedback only from the library: the oracle's loops would drown it.
build_pagemap() {
	cc_cov "$tmp/pm" "$top_srcdir"/lib/pagemap*.c "$top_srcdir/lib/util.c" &&
	"$CLANG" $san $inc -c "$top_srcdir/tests/fuzz-pagemap.c" -o "$tmp/pm/fuzz.o" &&
	"$CLANG" $san -fsanitize=fuzzer "$tmp"/pm/*.o -pthread -o "$fuzzer"
}
check "build fuzz-pagemap with $CLANG (fuzzer, address, undefined)" build_pagemap
if [ -x "$fuzzer" ]; then
	# A few long random inputs (hundreds of operations each) reach deep
	# states at once; libFuzzer's own inputs start a few bytes long.
	for i in 1 2 3 4 5 6 7 8; do
		head -c $((i * 512)) /dev/urandom >"$tmp/pm-corpus/seed$i"
	done
	check "fuzz the page-state map for ${FUZZ_SECONDS:-10} s: no mismatch, no sanitizer report" \
		"$fuzzer" -max_total_time="${FUZZ_SECONDS:-10}" -rss_limit_mb=2048 -max_len=4096 \
		-artifact_prefix="$top_builddir/tests/fuzz-pagemap-" "$tmp/pm-corpus"
else
	skip "fuzz the page-state map" "the build failed"
fi

# ---- the trace parser and the replay engine ----
mkdir "$tmp/tr" "$tmp/tr-corpus" "$tmp/tr-seeds"
fuzzer=$tmp/fuzz-trace
# The whole library and the replay's sources, as cvmdma-replay links them.
build_trace() {
	cc_cov "$tmp/tr" "$top_srcdir"/lib/*.c "$top_srcdir/tools/trace.c" \
		"$top_srcdir/tools/replay.c" "$top_srcdir/tools/tool-util.c" \
		"$top_srcdir/tools/vfio-setup.c" &&
	"$CLANG" $san $inc -I"$top_srcdir/tools" -c "$top_srcdir/tests/fuzz-trace.c" \
		-o "$tmp/tr/fuzz.o" &&
	"$CLANG" $san -fsanitize=fuzzer "$tmp"/tr/*.o -pthread $capng_libs -o "$fuzzer"
}
check "build fuzz-trace with $CLANG (fuzzer, address, undefined)" build_trace
if [ -x "$fuzzer" ]; then
	# Seeds: the test traces and a small trace of each workload.
	cp "$top_srcdir"/tests/data/*.trace "$tmp/tr-seeds/"
	gen=$top_builddir/tools/cvmdma-tracegen
	if [ -x "$gen" ]; then
		for w in tdx-boot snp-boot lazy-accept churn adversarial; do
			"$gen" "$w" --guest-size 256M --ops 20 -o "$tmp/tr-seeds/$w.trace"
		done
	fi
	check "fuzz the trace parser and replay for ${FUZZ_SECONDS:-10} s: no sanitizer report, mapped == shared" \
		"$fuzzer" -max_total_time="${FUZZ_SECONDS:-10}" -rss_limit_mb=2048 -max_len=16384 \
		-timeout=10 -dict="$top_srcdir/tests/fuzz-trace.dict" \
		-artifact_prefix="$top_builddir/tests/fuzz-trace-" "$tmp/tr-corpus" "$tmp/tr-seeds"
else
	skip "fuzz the trace parser and replay" "the build failed"
fi
tap_done
