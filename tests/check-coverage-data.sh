#!/bin/sh
# SPDX-License-Identifier: MIT
# scripts/coverage-data, which adds the guest tests' counts to the host's
# for make coverage, on a made-up build directory: one library object run
# once on the "host" and twice in a "guest" (written under GCOV_PREFIX and
# kept in coverage-guest/A.tar, as tests/vm/guest-check.sh keeps them).
. "$top_srcdir/tests/tap.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
script=$(cd "$top_srcdir" && pwd)/scripts/coverage-data
cc=${CC:-cc}
command -v gcov-tool >/dev/null 2>&1 && command -v gcov >/dev/null 2>&1 || {
	echo "1..0 # SKIP gcov and gcov-tool not found (Debian: gcc)"; exit 0; }
# gcov's files are GCC's, in its version's format: CC must be that GCC.
gcc_major=$($cc -dumpversion 2>/dev/null | cut -d. -f1)
gcov_major=$(gcov --version 2>/dev/null | head -n 1 | awk '{ print $NF }' | cut -d. -f1)
$cc -v 2>&1 | grep -q '^gcc version' && [ -n "$gcc_major" ] && [ "$gcc_major" = "$gcov_major" ] || {
	echo "1..0 # SKIP $cc is not the GCC of gcov $gcov_major"; exit 0; }
plan 6

b=$tmp/build
mkdir -p "$b/lib/.libs"
cat >"$b/lib/x.c" <<'EOF'
int f(int x);
int f(int x) { if (x > 1) return 1; return 0; }
int main(int argc, char **argv) { (void)argv; return f(argc); }
EOF
# As libtool compiles the convenience library: lib/.libs/libcvmdma_internal_la-x.o.
(cd "$b" && $cc --coverage -O0 -c lib/x.c -o lib/.libs/libcvmdma_internal_la-x.o &&
	$cc --coverage lib/.libs/libcvmdma_internal_la-x.o -o x) >"$tmp/cc.log" 2>&1 || {
	sed 's/^/# /' "$tmp/cc.log"; echo "Bail out! $cc --coverage failed"; exit 1; }
# The host runs f once, the guest twice (x's status is f's result).
(cd "$b" && { ./x; GCOV_PREFIX=$tmp/guest ./x a; GCOV_PREFIX=$tmp/guest ./x a b; })
mkdir -p "$b/coverage-guest"
tar -C "$tmp/guest" -cf "$b/coverage-guest/A.tar" .

# runs OUT: gcov's count of the line of f in OUT's data ("3:" for three runs).
runs() {
	(cd "$b" && gcov -o "$1" "$1"/libcvmdma_internal_la-x.gcda >/dev/null 2>&1 &&
		grep ':    2:int f' x.c.gcov | sed 's/^ *\([0-9#]*\)\*\{0,1\}:.*/\1/')
}

said=$(cd "$b" && GCOV_TOOL=gcov-tool sh "$script" coverage/data 2>&1)
check "the host's run and the guest's two add up: f ran 3 times" \
	sh -c '[ "$1" = 3 ] || { echo "f ran $1 times; said: $2"; exit 1; }' sh "$(runs coverage/data)" "$said"
check "it says the guest's counts are in" \
	sh -c 'echo "$1" | grep -q "guest runs A (A, B: the guest kernels" || { echo "$1"; exit 1; }' sh "$said"
check "the build directory's own counts stay as they were: f ran once" \
	sh -c '[ "$1" = 1 ] || { echo "f ran $1 times"; exit 1; }' sh "$(runs lib/.libs)"

rm -f "$b/coverage-guest/A.tar"
said=$(cd "$b" && GCOV_TOOL=gcov-tool sh "$script" coverage/host 2>&1)
check "without guest counts: the host's alone, and it says so" \
	sh -c '[ "$1" = 1 ] && echo "$2" | grep -q "^host tests only" ||
		{ echo "f ran $1 times; said: $2"; exit 1; }' sh "$(runs coverage/host)" "$said"

# Counts of another build of x.c (one more line: other notes) do not fit.
mkdir -p "$tmp/other/lib/.libs" "$tmp/g2"
{ echo 'int g(void) { return 2; }'; cat "$b/lib/x.c"; } >"$tmp/other/lib/x.c"
(cd "$tmp/other" && $cc --coverage -O0 -c lib/x.c -o lib/.libs/libcvmdma_internal_la-x.o &&
	$cc --coverage lib/.libs/libcvmdma_internal_la-x.o -o x && GCOV_PREFIX=$tmp/g2 ./x) \
	>"$tmp/cc.log" 2>&1
tar -C "$tmp/g2" -cf "$b/coverage-guest/A.tar" .
st=0
said=$(cd "$b" && GCOV_TOOL=gcov-tool sh "$script" coverage/stale 2>&1) || st=$?
check "a guest's counts from another build fail with the remedy" \
	sh -c '[ "$1" = 1 ] && echo "$2" | grep -q "make coverage-reset" ||
		{ echo "status $1; said: $2"; exit 1; }' sh "$st" "$said"

# The library rebuilt since the host's run: its own counts do not fit.
rm -f "$b/coverage-guest/A.tar"
cp "$tmp/other/lib/x.c" "$b/lib/x.c"
(cd "$b" && $cc --coverage -O0 -c lib/x.c -o lib/.libs/libcvmdma_internal_la-x.o) \
	>"$tmp/cc.log" 2>&1
st=0
said=$(cd "$b" && GCOV_TOOL=gcov-tool sh "$script" coverage/rebuilt 2>&1) || st=$?
check "the host's counts from before a rebuild fail with the remedy" \
	sh -c '[ "$1" = 1 ] && echo "$2" | grep -q "earlier build.*make coverage-reset" ||
		{ echo "status $1; said: $2"; exit 1; }' sh "$st" "$said"
tap_done
