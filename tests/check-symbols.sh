#!/bin/sh
# SPDX-License-Identifier: MIT
# The exported ABI is exactly the map, the map is exactly the header, every
# symbol is versioned, the map's newest node is the header's MAJOR.MINOR
# (libbpf's check), and the SONAME is right (libnvme's symbol test, in sh);
# a static archive (--enable-static), which has no version script, defines
# only the same cvm_* globals, so a program's own names cannot clash.  And
# the library never prints, logs, exits or aborts on its own: it imports
# nothing that could (its messages go only to the cvm_set_log() callback).
. "$top_srcdir/tests/tap.sh"
so=$top_builddir/lib/.libs/libcvmdma.so
map=$top_srcdir/lib/libcvmdma.map
hdr=$top_srcdir/include/cvmdma.h
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
plan 9

# Public functions declared in the header: an identifier cvm_* followed by '('
# in what the C compiler sees (comments, which name functions too, are gone).
${CC:-cc} -E -P -I"$top_srcdir/include" -x c "$hdr" | tr '\n' ' ' | tr ';' '\n' |
	grep -oE '\bcvm_[a-z0-9_]+[[:space:]]*\(' | grep -v '(\*' |
	sed 's/[[:space:]]*(//' | sort -u >"$tmp/header"
# Symbols in the map's global sections.
# A node ends at its '}' (a node inheriting another has no local: section).
awk '/global:/{g=1; next} /local:|}/{g=0} g && /;/ {gsub(/[ \t;]/, ""); print}' "$map" |
	sort -u >"$tmp/map"
# The newest node: its symbols come with the release the header announces.
newest=$(sed -n 's/^\(LIBCVMDMA_[0-9][0-9.]*\)[[:space:]]*{.*/\1/p' "$map" | sed 's/^LIBCVMDMA_//' |
	sort -V | tail -n 1)
hv=$(sed -n 's/^#define CVMDMA_VERSION_MAJOR \([0-9]*\)$/\1/p' "$hdr").$(
	sed -n 's/^#define CVMDMA_VERSION_MINOR \([0-9]*\)$/\1/p' "$hdr")
# Exported (defined, dynamic) function symbols, without version suffix.
check "every header function is in the map and nothing else is" diff -u "$tmp/header" "$tmp/map"
check "the map's newest node LIBCVMDMA_$newest is the header's version $hv" test "$newest" = "$hv"
if [ ! -f "$so" ]; then
	for t in "the .so exports exactly the map" "only cvm_* symbols are exported" \
		 "every exported symbol is versioned (LIBCVMDMA_*)" "SONAME is libcvmdma.so.0" \
		 "it imports nothing that prints, logs, exits or aborts"; do
		skip "$t" "no shared library (--disable-shared)"
	done
else
	nm -D --defined-only "$so" | awk '$2 ~ /[TWi]/ {print $3}' | sed 's/@.*//' |
		sort -u >"$tmp/so"
	check "the .so exports exactly the map" diff -u "$tmp/map" "$tmp/so"
	check "only cvm_* symbols are exported" sh -c "! grep -v '^cvm_' '$tmp/so'"
	# Every exported function carries a version from the map.
	unversioned=$(objdump -T "$so" |
		awk '$2 ~ /g/ && $4 == ".text" && $(NF-1) !~ /LIBCVMDMA_/ {print $NF}')
	check "every exported symbol is versioned (LIBCVMDMA_*)" test -z "$unversioned"
	soname=$(objdump -p "$so" | awk '$1 == "SONAME" {print $2}')
	check "SONAME is libcvmdma.so.0 (got '$soname')" test "$soname" = libcvmdma.so.0
	# stdio to a stream, the standard streams, raw writes, syslog, err(3)
	# and error(3), exit, abort and assert; with _FORTIFY_SOURCE, printf
	# and syslog come as __printf_chk, __syslog_chk and the like.  (A
	# hardened build's __stack_chk_fail is the compiler's, not the
	# library's.)
	nm -D --undefined-only "$so" | awk '{print $2}' | sed 's/@.*//' >"$tmp/imports"
	found=$(grep -xE '(__)?((_IO_)?(f|v|vf|d|vd)?printf|(v)?syslog)(_chk)?|(f)?puts|(f)?putc(har)?|_IO_putc|fwrite|perror|std(out|err|in)|write|writev|pwrite|openlog|(v)?(err|errx|warn|warnx)|error(_at_line)?|(_|quick_)?exit|_Exit|abort|__assert_fail|__assert_perror_fail' \
		"$tmp/imports" | tr '\n' ' ' | sed 's/ $//')
	if [ -n "${COVERAGE:-}" ]; then
		skip "it imports nothing that prints, logs, exits or aborts" \
			"a coverage build: gcov's runtime writes its counts with stdio and may abort"
	else
		check "it imports nothing that prints, logs, exits or aborts${found:+ (it imports $found)}" \
			test -z "$found"
	fi
fi

a=$top_builddir/lib/.libs/libcvmdma.a
if [ ! -f "$a" ]; then
	skip "the static archive defines only the map's symbols" "no static archive (--enable-static)"
	skip "a program with its own region_get() and pagemap_create() links it" \
		"no static archive (--enable-static)"
else
	nm -g --defined-only "$a" | awk 'NF == 3 { print $3 }' | sort -u >"$tmp/a"
	check "the static archive defines only the map's symbols" diff -u "$tmp/map" "$tmp/a"
	cat >"$tmp/clash.c" <<'EOF2'
#include <cvmdma.h>
/* Names the library uses inside: a program may have its own. */
int region_get(void) { return 1; }
int pagemap_create(void) { return 2; }
int maptable_insert(void) { return 3; }
int main(void)
{
	/* Pull in the objects that define those names inside the library. */
	struct cvm_region *r;
	struct cvm_dma *d;

	if (cvm_region_create(NULL, &r) >= 0 || cvm_dma_open(NULL, &d) >= 0)
		return 1;
	return region_get() + pagemap_create() + maptable_insert() != 6;
}
EOF2
	check "a program with its own region_get() and pagemap_create() links it" \
		sh -c '${CC:-cc} $SANITIZED ${COVERAGE:-} -I"$1/include" -o "$2/clash" "$2/clash.c" "$3" -lcap-ng -pthread &&
		"$2/clash"' sh "$top_srcdir" "$tmp" "$a"
fi
tap_done
