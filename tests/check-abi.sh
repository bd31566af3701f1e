#!/bin/sh
# SPDX-License-Identifier: MIT
# abidiff against the committed baseline.  A difference fails: regenerate the
# baseline deliberately with `make abi-baseline` and say why in NEWS.
. "$top_srcdir/tests/tap.sh"
plan 1
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
tap_done
