#!/bin/sh
# SPDX-License-Identifier: MIT
# Fuzz smoke: build tests/fuzz-pagemap.c with clang's libFuzzer, ASan and
# UBSan, and run it for FUZZ_SECONDS (10) against the naive oracle.  A
# crashing input is kept as tests/fuzz-pagemap-crash-* in the build tree;
# replay it with: <fuzzer binary> <file>.
. "$top_srcdir/tests/tap.sh"
plan 2
if [ -n "$SANITIZED" ]; then
	skip "build fuzz-pagemap" "sanitizer build: the fuzzer brings its own sanitizers"
	skip "fuzz the page-state map" "sanitizer build"
	tap_done
fi
if [ -z "$CLANG" ] || ! command -v "$CLANG" >/dev/null 2>&1; then
	skip "build fuzz-pagemap" "clang not found (configure looks for CLANG)"
	skip "fuzz the page-state map" "clang not found"
	tap_done
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' >"$tmp/probe.c"
if ! "$CLANG" -fsanitize=fuzzer "$tmp/probe.c" -o "$tmp/probe" >/dev/null 2>&1; then
	skip "build fuzz-pagemap" "$CLANG cannot link libFuzzer (install libclang-rt-dev)"
	skip "fuzz the page-state map" "no libFuzzer"
	tap_done
fi
fuzzer=$tmp/fuzz-pagemap
san="-g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all"
inc="-I$top_builddir -I$top_srcdir/include -I$top_srcdir/lib"
# Coverage feedback only from the library: the oracle's loops would drown it.
build() {
	for f in "$top_srcdir"/lib/pagemap*.c "$top_srcdir/lib/util.c"; do
		"$CLANG" $san -fsanitize=fuzzer-no-link $inc -c "$f" \
			-o "$tmp/$(basename "$f" .c).o" || return 1
	done
	"$CLANG" $san $inc -c "$top_srcdir/tests/fuzz-pagemap.c" -o "$tmp/fuzz.o" &&
	"$CLANG" $san -fsanitize=fuzzer "$tmp"/*.o -pthread -o "$fuzzer"
}
check "build fuzz-pagemap with $CLANG (fuzzer, address, undefined)" build
if [ ! -x "$fuzzer" ]; then
	skip "fuzz the page-state map" "the build failed"
	tap_done
fi
mkdir "$tmp/corpus"
# A few long random inputs (hundreds of operations each) reach deep states
# at once; libFuzzer's own inputs start a few bytes long.
for i in 1 2 3 4 5 6 7 8; do
	head -c $((i * 512)) /dev/urandom >"$tmp/corpus/seed$i"
done
check "fuzz the page-state map for ${FUZZ_SECONDS:-10} s: no mismatch, no sanitizer report" \
	"$fuzzer" -max_total_time="${FUZZ_SECONDS:-10}" -rss_limit_mb=2048 -max_len=4096 \
	-artifact_prefix="$top_builddir/tests/fuzz-pagemap-" "$tmp/corpus"
tap_done
