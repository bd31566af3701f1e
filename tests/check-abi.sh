#!/bin/sh
# SPDX-License-Identifier: MIT
# abidiff against the committed baseline.  A difference fails: regenerate the
# baseline deliberately with `make abi-baseline` and say why in NEWS.
# abidiff runs with --no-added-syms (a later release adds functions), so a
# second check holds each version node the baseline knows closed: a function
# added to a released node, not to a new one, fails too.
. "$top_srcdir/tests/tap.sh"
plan 2
so=$top_builddir/lib/.libs/libcvmdma.so
base=$top_srcdir/abi/libcvmdma.abi
if [ -z "$ABIDIFF" ]; then
	skip "ABI matches abi/libcvmdma.abi" "abidiff not installed (abigail-tools)"
elif [ -n "$SANITIZED" ]; then
	skip "ABI matches abi/libcvmdma.abi" "sanitizer build: instrumented binary"
elif [ ! -f "$base" ]; then
	not_ok "ABI matches abi/libcvmdma.abi (baseline missing: make abi-baseline)"
else
	check "ABI matches abi/libcvmdma.abi (abidiff)" \
		"$ABIDIFF" --no-added-syms --headers-dir2 "$top_srcdir/include" "$base" "$so"
fi

# closed_nodes BASE SO: each exported function of a version node that BASE
# has is in BASE with that version; prints the ones that are not.
closed_nodes() {
	sed -n "s/.*<elf-symbol name='\([^']*\)' version='\([^']*\)'.*type='func-type'.*/\1@\2/p" \
		"$1" | sort -u >"$tmp/base"
	sed 's/.*@//' "$tmp/base" | sort -u >"$tmp/nodes"
	nm -D --defined-only "$2" | awk '$2 ~ /[TWi]/ { print $3 }' | sed 's/@@*/@/' |
		sort -u >"$tmp/so"
	bad=0
	while IFS= read -r sv; do
		grep -qxF "${sv#*@}" "$tmp/nodes" || continue   # a new node
		grep -qxF "$sv" "$tmp/base" && continue
		echo "$sv: added to a version node the baseline already has"
		bad=1
	done <"$tmp/so"
	return $bad
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ ! -f "$base" ]; then
	not_ok "released version nodes gain no function (baseline missing: make abi-baseline)"
else
	check "released version nodes gain no function (new ones go in a new node)" \
		closed_nodes "$base" "$so"
fi
tap_done
