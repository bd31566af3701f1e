#!/bin/sh
# SPDX-License-Identifier: MIT
# abidiff against the committed baseline.  A difference fails: regenerate the
# baseline deliberately with `make abi-baseline` and say why in NEWS.
# abidiff runs with --no-added-syms (a later release adds functions), so a
# second check holds each version node the baseline knows closed: a function
# added to a released node, not to a new one, fails too.
. "$top_srcdir/tests/tap.sh"
plan 3
so=$top_builddir/lib/.libs/libcvmdma.so
base=$top_srcdir/abi/libcvmdma.abi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# abidiff_base SO: 0 the same ABI as the baseline, 1 not (abidiff's report on
# stdout), 77 cannot tell (the reason on stdout).  abidiff sees types only
# through DWARF: on a library built without -g it compares symbol names
# alone, and a struct whose layout changed would pass.
abidiff_base() {
	if ! ${OBJDUMP:-objdump} -h "$1" | grep -q '[[:space:]]\.debug_info[[:space:]]'; then
		echo "no debug info in $(basename "$1") (build with -g): abidiff would compare only symbols"
		return 77
	fi
	"$ABIDIFF" --no-architecture --no-added-syms --headers-dir2 "$top_srcdir/include" "$base" "$1" 2>&1 || return 1
}

if [ ! -f "$so" ]; then
	for t in "ABI matches abi/libcvmdma.abi" \
		 "a library without debug info is not called ABI-equal" \
		 "released version nodes gain no function"; do
		skip "$t" "no shared library (--disable-shared)"
	done
	tap_done
fi
if [ -z "$ABIDIFF" ]; then
	skip "ABI matches abi/libcvmdma.abi" "abidiff not installed (abigail-tools)"
	skip "a library without debug info is not called ABI-equal" "abidiff not installed (abigail-tools)"
elif [ -n "$SANITIZED" ]; then
	skip "ABI matches abi/libcvmdma.abi" "sanitizer build: instrumented binary"
	skip "a library without debug info is not called ABI-equal" "sanitizer build: instrumented binary"
elif [ ! -f "$base" ]; then
	not_ok "ABI matches abi/libcvmdma.abi (baseline missing: make abi-baseline)"
	not_ok "a library without debug info is not called ABI-equal (baseline missing)"
else
	st=0; out=$(abidiff_base "$so") || st=$?
	case $st in
	0) ok "ABI matches abi/libcvmdma.abi (abidiff)" ;;
	77) skip "ABI matches abi/libcvmdma.abi" "$out" ;;
	*) not_ok "ABI matches abi/libcvmdma.abi (abidiff)"; printf '%s\n' "$out" | sed 's/^/# /' ;;
	esac
	# The same library with its debug info stripped: the check cannot tell.
	st=0
	${OBJCOPY:-objcopy} --strip-debug "$so" "$tmp/nodebug.so" &&
		out=$(abidiff_base "$tmp/nodebug.so") || st=$?
	check "a library without debug info is not called ABI-equal (got $st, want 77)" test "$st" = 77
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
if [ ! -f "$base" ]; then
	not_ok "released version nodes gain no function (baseline missing: make abi-baseline)"
else
	check "released version nodes gain no function (new ones go in a new node)" \
		closed_nodes "$base" "$so"
fi
tap_done
