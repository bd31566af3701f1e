#!/bin/sh
# SPDX-License-Identifier: MIT
# The exported ABI is exactly the map, the map is exactly the header, every
# symbol is versioned, and the SONAME is right (libnvme's symbol test, in sh).
. "$top_srcdir/tests/tap.sh"
so=$top_builddir/lib/.libs/libcvmdma.so
map=$top_srcdir/lib/libcvmdma.map
hdr=$top_srcdir/include/cvmdma.h
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
plan 5

# Public functions declared in the header: an identifier cvm_* followed by '('.
sed -e 's@/\*.*\*/@@g' "$hdr" | tr '\n' ' ' | tr ';' '\n' |
	grep -oE '\bcvm_[a-z0-9_]+[[:space:]]*\(' | grep -v '(\*' |
	sed 's/[[:space:]]*(//' | sort -u >"$tmp/header"
# Symbols in the map's global sections.
awk '/global:/{g=1; next} /local:/{g=0} g && /;/ {gsub(/[ \t;]/, ""); print}' "$map" |
	sort -u >"$tmp/map"
# Exported (defined, dynamic) function symbols, without version suffix.
nm -D --defined-only "$so" | awk '$2 ~ /[TWi]/ {print $3}' | sed 's/@.*//' |
	sort -u >"$tmp/so"

check "every header function is in the map and nothing else is" diff -u "$tmp/header" "$tmp/map"
check "the .so exports exactly the map" diff -u "$tmp/map" "$tmp/so"
check "only cvm_* symbols are exported" sh -c "! grep -v '^cvm_' '$tmp/so'"
# Every exported function carries a version from the map.
unversioned=$(objdump -T "$so" | awk '$2 ~ /g/ && $4 == ".text" && $(NF-1) !~ /LIBCVMDMA_/ {print $NF}')
check "every exported symbol is versioned (LIBCVMDMA_*)" test -z "$unversioned"
soname=$(objdump -p "$so" | awk '$1 == "SONAME" {print $2}')
check "SONAME is libcvmdma.so.0 (got '$soname')" test "$soname" = libcvmdma.so.0
tap_done
